"""Record what the golden model gives, beside it: `python tests/golden/record.py` (after a deliberate change of the
model's numerics, never to make a failing test pass). The folder itself came from a 400-step debug-size run:

    tinyllm train --config configs/runs/demo.yaml --preset debug --max_steps 400 --probe_steps 0 \
        --eval_documents 50 --output_dir RUN
    (its model folder without the training records; `tinyllm refresh-code tests/golden/tinyllm-debug` keeps its
    shipped code current)
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "tinyllm-debug"
EXPECTED = HERE / "tinyllm-debug.expected.json"

if __name__ == "__main__":
    sys.modules["hf_tinyllm"] = None  # the remote code, as a Hub user runs it
    namespace: dict = {}
    exec((HERE / "measure.py").read_text(), namespace)
    EXPECTED.write_text(json.dumps(namespace["measure"](str(FOLDER)), indent=1) + "\n")
    print(f"wrote {EXPECTED}")

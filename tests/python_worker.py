"""A fresh interpreter kept for many snippets: tests that must run code in another process (to load a model where
hf_tinyllm is not importable, as a Hub user would) pay the 4-6 s import of torch and transformers once per module
instead of once per snippet.

    with PythonWorker(env, prelude=WITHOUT_HF_TINYLLM) as worker:
        worker.run("import json; result = {'answer': 42}")  # -> {"answer": 42}

Each `run` executes its code in a fresh namespace and returns what the code assigned to `result` (JSON-able). An
exception in the snippet fails the calling test with the worker's traceback. Whatever the snippets print (stdout and
stderr, the libraries' logs included) goes to one log, `worker.output()`, for the test to check.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

# The worker's main loop: requests are JSON lines on stdin; replies go to a duplicate of the original stdout, while
# fd 1 is pointed at stderr so that a snippet's prints cannot corrupt the replies.
_SERVE = """
import json, os, sys, traceback
replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
for line in sys.stdin:
    namespace = {"__name__": "__snippet__"}
    try:
        exec(json.loads(line)["code"], namespace)
        reply = {"result": namespace.get("result")}
    except BaseException:
        reply = {"error": traceback.format_exc()}
    sys.stderr.flush()
    replies.write(json.dumps(reply) + "\\n")
    replies.flush()
"""


class PythonWorker:
    def __init__(self, env: dict[str, str] | None = None, *, prelude: str = "", cwd: str | Path | None = None):
        """Start the interpreter with `env` merged over os.environ; `prelude` runs once, before any snippet."""
        fd, log = tempfile.mkstemp(prefix="python_worker_", suffix=".log")
        self._log = Path(log)
        with os.fdopen(fd, "w") as stderr:  # the worker keeps its own copy of the descriptor
            self._process = subprocess.Popen(
                [sys.executable, "-c", prelude + "\n" + _SERVE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=cwd,
                env={**os.environ, **(env or {})},
            )

    def run(self, code: str, timeout: float = 300) -> Any:
        process = self._process
        process.stdin.write(json.dumps({"code": code}) + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line:
            state = "exited" if process.poll() is not None else f"gave no answer within {timeout:.0f} s"
            pytest.fail(f"the worker {state}:\n{self.output()[-4000:]}")
        reply = json.loads(line)
        if "error" in reply:
            pytest.fail(f"the snippet failed in the worker:\n{reply['error'][-4000:]}")
        return reply["result"]

    def output(self) -> str:
        """Everything the worker and its snippets printed so far."""
        return self._log.read_text(errors="replace")

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> PythonWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

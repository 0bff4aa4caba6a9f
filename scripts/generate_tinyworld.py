"""Generate the TinyWorld corpus and write it to disk (one file per split), printing its exact entropy floor.

python scripts/generate_tinyworld.py --output_dir outputs/tinyworld --format parquet
"""

from hf_tinyllm.commands import generate_tinyworld
from hf_tinyllm.errors import entry_point

main = entry_point(generate_tinyworld)  # the job lives in the package: `tinyllm generate-tinyworld` runs it too

if __name__ == "__main__":
    main()

"""The real-corpus recipe (configs/runs/small_fineweb_edu.yaml) offline: its three commands on local parquet files
the test writes in place of FineWeb-Edu (a tokenizer on a sample of the stream, `tinyllm tokenize`, training on the
shards), then the recipe's streaming variant; sizes overridden to debug, everything else the recipe's, with the
learning probes on (their fixed batch comes from the shards or the stream)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from accelerate.state import AcceleratorState
from conftest import REPO_ROOT, script_output

from hf_tinyllm.cli import main as tinyllm
from hf_tinyllm.data import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.training import parse_train_arguments, train

RECIPE = REPO_ROOT / "configs" / "runs" / "small_fineweb_edu.yaml"
DEBUG_SIZES = ["--preset", "debug", "--block_size", "32", "--per_device_batch_size", "2",
               "--gradient_accumulation_steps", "1", "--max_steps", "3", "--warmup_steps", "1", "--mixed_precision",
               "no", "--attn_implementation", "sdpa", "--eval_steps", "0", "--save_steps", "3", "--eval_documents",
               "4", "--report_to", "none", "--probe_steps", "3", "--probe_documents", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def parquet_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fineweb-stand-in") / "data"
    folder.mkdir()
    texts = list(
        tinyworld_dataset(TinyWorldConfig(num_train_documents=400, num_validation_documents=1))["train"]["text"]
    )
    for part in range(4):
        pq.write_table(pa.table({"text": texts[part::4], "url": [f"u{i}" for i in range(len(texts[part::4]))]}),
                       folder / f"{part:03d}_00000.parquet")  # fmt: skip
    return folder


def test_the_recipe_reads_as_a_small_run_on_shards():
    model_args, data_args, optim_args, _, _ = parse_train_arguments(["--config", str(RECIPE)])
    assert model_args.preset == "small" and data_args.block_size == 1024 and optim_args.mixed_precision == "bf16"
    assert data_args.dataset == "outputs/fineweb-edu/shards" and data_args.tokenizer == "outputs/fineweb-edu/tokenizer"
    assert optim_args.per_device_batch_size * optim_args.gradient_accumulation_steps * 8 * 1024 == 524_288


def test_the_recipe_commands_run_on_local_parquet(parquet_corpus, tmp_path, capsys):
    tokenizer = tmp_path / "tokenizer"
    script_output("scripts/train_tokenizer.py", ["--dataset", str(parquet_corpus), "--streaming", "true",
                  "--max_documents", "200", "--vocab_size", "300", "--output_dir", str(tokenizer)], capsys)  # fmt: skip
    shards = tmp_path / "shards"
    tinyllm(["tokenize", str(parquet_corpus), str(shards), "--tokenizer", str(tokenizer), "--validation_fraction",
             "0.05", "--num_proc", "2"])  # fmt: skip
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["validation"]["documents"] == 400
    for name, extra in (("shards", ["--dataset", str(shards)]),
                        ("streaming", ["--dataset", str(parquet_corpus), "--streaming", "true"])):  # fmt: skip
        AcceleratorState._reset_state(reset_partial_state=True)
        out = tmp_path / name
        train(*parse_train_arguments(["--config", str(RECIPE), *DEBUG_SIZES, "--tokenizer", str(tokenizer), *extra,
                                      "--output_dir", str(out)]))  # fmt: skip
        summary = json.loads((out / "model" / "training_summary.json").read_text())
        assert summary["steps"] == 3 and (out / "model" / "model.safetensors").is_file(), name
        probes = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in probes if any(k.startswith("probe/") for k in row)] == [0, 3], name

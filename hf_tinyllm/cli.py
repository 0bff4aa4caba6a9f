"""The `tinyllm` command: `tinyllm push FOLDER REPO_ID [...]`, `tinyllm demo`, `tinyllm train ...`, and the other
jobs of scripts/ (hf_tinyllm.commands): `tinyllm train-trainer ...`, `tinyllm train-sft ...`, `tinyllm tokenizer ...`,
`tinyllm generate-tinyworld ...`, `tinyllm convert ...`; `tinyllm tokenize SOURCE OUT --tokenizer TOKENIZER`;
`tinyllm refresh-code MODEL`; `tinyllm explain TOPIC MODEL [...]`, `tinyllm studio [MODEL] [--export LESSON.html]`,
`tinyllm export FOLDER OUTPUT.gguf`, `tinyllm lm-eval-task OUT_DIR [...]`, `tinyllm --version`."""

import argparse
import sys

from .errors import USAGE_ERROR_STATUS, entry_point


def _push(argv: list[str]) -> None:
    from .hub import push, push_space

    parser = argparse.ArgumentParser(prog="tinyllm push", description="Push a saved TinyLLM folder to the Hub.")
    parser.add_argument("folder", help="A model folder (config.json, model.safetensors, tokenizer ...).")
    parser.add_argument("repo_id", help="user/name (or a bare name: your namespace).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", help="Branch to push to (created from main if needed).")
    parser.add_argument("--commit_message", help="Commit message.")
    parser.add_argument("--create_pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--llama", action="store_true", help="Push the plain LlamaForCausalLM export.")
    parser.add_argument("--license", default="apache-2.0", help="License for the model card.")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login).")
    parser.add_argument("--space", action="store_true", help="Then push the model's studio page as a Gradio Space.")
    parser.add_argument("--space_id", help="The Space's user/name (default: REPO_ID-studio).")
    args = parser.parse_args(argv)
    if args.space and (args.revision or args.create_pr):
        raise ValueError("the Space serves the model's main branch; push with --space without --revision/--create_pr.")
    url = push(args.folder, args.repo_id, private=args.private, revision=args.revision,
               commit_message=args.commit_message, create_pr=args.create_pr, llama=args.llama, token=args.token,
               license=args.license)  # fmt: skip
    print(f"Pushed {args.folder} to {url}")
    if args.space:
        space_url = push_space(args.repo_id, args.space_id, private=args.private, token=args.token,
                               license=args.license)  # fmt: skip
        print(f"Pushed its studio to the Space {space_url}")


def _refresh_code(argv: list[str]) -> None:
    from .remote_code import refresh

    parser = argparse.ArgumentParser(
        prog="tinyllm refresh-code",
        description="Rewrite the model code (configuration/modeling/generation_tinyllm.py) a saved folder or Hub "
        "repository carries with this release's, and record the release in config.json.",
    )
    parser.add_argument("model", help="A saved TinyLLM folder, or a Hub repository id (user/name).")
    parser.add_argument("--revision", help="Hub branch to refresh (default: main).")
    parser.add_argument("--create_pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--commit_message", help="Commit message on the Hub.")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login).")
    args = parser.parse_args(argv)
    print(refresh(args.model, revision=args.revision, token=args.token, create_pr=args.create_pr,
                  commit_message=args.commit_message))  # fmt: skip


def _tokenize(argv: list[str]) -> None:
    from .data.shard_writer import DEFAULT_SHARD_TOKENS, write_token_shards
    from .tokenization import load_tokenizer

    parser = argparse.ArgumentParser(
        prog="tinyllm tokenize",
        description="Tokenise a corpus into token shards (2 bytes a token, memory-mapped by training), streaming the "
        "input; a killed run started again with the same arguments resumes where it stopped.",
    )
    parser.add_argument("source", help="'tinyworld', a file or folder of txt/json/jsonl/csv/parquet, a save_to_disk "
                        "folder, or a Hub dataset name.")  # fmt: skip
    parser.add_argument("output_dir", help="The shards folder to write (new, or an interrupted one to resume).")
    parser.add_argument("--tokenizer", required=True, help="The tokenizer folder (training must pass the same one).")
    parser.add_argument("--dataset_config", help="A Hub dataset's configuration (subset), e.g. sample-10BT.")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--encoding", default="utf-8", help="Text encoding of txt/json/jsonl/csv files.")
    parser.add_argument("--validation_fraction", type=float, default=0.02,
                        help="Held out (seeded) when the source has no validation split; 0: none.")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Seed of the validation hold-out.")
    parser.add_argument("--shard_tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="Tokens a file (about).")
    parser.add_argument("--num_proc", type=int, help="Tokenising worker processes (default: 1, in this process).")
    args = parser.parse_args(argv)
    manifest = write_token_shards(
        args.source, args.output_dir, load_tokenizer(args.tokenizer), args.tokenizer, text_column=args.text_column,
        encoding=args.encoding, dataset_config=args.dataset_config, validation_fraction=args.validation_fraction,
        seed=args.seed,
        shard_tokens=args.shard_tokens, num_proc=args.num_proc,
    )  # fmt: skip
    counts = ", ".join(f"{name} {split['tokens']:,} tokens in {split['documents']:,} documents ({len(split['shards'])} "
                       "files)" for name, split in manifest["splits"].items())  # fmt: skip
    print(f"Wrote token shards to {args.output_dir}: {counts}; {manifest['dtype']} tokens.")


def _demo(argv: list[str]) -> None:
    from transformers import HfArgumentParser

    from .demo import DemoArguments, run_demo

    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
    run_demo(args)


def _train(argv: list[str]) -> None:
    from .training import parse_train_arguments, train

    train(*parse_train_arguments(argv))


def _explain(argv: list[str]) -> None:
    from .explain import main as explain_main

    explain_main(argv)


def _studio(argv: list[str]) -> None:
    from pathlib import Path

    from .studio import DEFAULT_MODEL, serve

    parser = argparse.ArgumentParser(prog="tinyllm studio", description="An interactive page on a trained model.")
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL if Path(DEFAULT_MODEL).is_dir() else None,
                        help=f"A model folder or Hub id (default: {DEFAULT_MODEL} when it exists).")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default: this machine only).")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link.")
    parser.add_argument("--fast_decode", action="store_true",
                        help="Generate through the compiled static-cache loop (compiled once at start).")  # fmt: skip
    parser.add_argument("--train_dir", default="outputs/studio",
                        help="Where the Train tab's runs go; 'none' hides the tab.")  # fmt: skip
    parser.add_argument("--export", metavar="LESSON.html",
                        help="Write the lesson (every tab at every step of the timeline) as one self-contained HTML "
                        "file that works offline, and exit without serving.")  # fmt: skip
    args = parser.parse_args(argv)
    if args.model is None:
        raise FileNotFoundError(
            f"no model given and {DEFAULT_MODEL} does not exist; run `make demo` or name a model folder."
        )
    if args.export:
        _export_lesson(args.model, args.export)
        return
    train_dir = None if args.train_dir.lower() == "none" else args.train_dir
    serve(args.model, host=args.host, port=args.port, share=args.share, fast_decode=args.fast_decode,
          train_dir=train_dir)  # fmt: skip


def _export_lesson(model: str, path: str) -> None:
    import time

    from .studio.export import export_lesson

    start = time.perf_counter()
    written = export_lesson(model, path)
    print(f"Wrote {written} ({written.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s; open "
          "it in a browser, no server or network needed.")  # fmt: skip


def _export(argv: list[str]) -> None:
    from .convert import export_gguf
    from .gguf_export import FILE_TYPES

    parser = argparse.ArgumentParser(prog="tinyllm export", description="Write a model folder as a GGUF file.")
    parser.add_argument("folder", help="A TinyLLM (or Llama) folder or Hub id; its tokenizer goes in the file too.")
    parser.add_argument("output", help="The GGUF file to write, e.g. model.gguf (replaced atomically).")
    parser.add_argument("--file_type", choices=FILE_TYPES, default="f32", help="Weight precision (default: f32).")
    parser.add_argument("--without_tokenizer", action="store_true",
                        help="The weights alone (for a tokenizer GGUF cannot hold, e.g. a prefix space).")  # fmt: skip
    args = parser.parse_args(argv)
    path = export_gguf(args.folder, args.output, file_type=args.file_type, with_tokenizer=not args.without_tokenizer)
    print(f"Wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.file_type})")


def _lm_eval_task(argv: list[str]) -> None:
    import shlex

    from .demo import RECIPE
    from .lm_eval_task import GROUP, lm_eval_command, write_lm_eval_task
    from .training import parse_train_arguments
    from .training.data import tinyworld_config

    parser = argparse.ArgumentParser(
        prog="tinyllm lm-eval-task",
        description="Write the TinyWorld lm-evaluation-harness task folder and print the lm_eval command to run.",
    )
    parser.add_argument("out_dir", help="The task folder to write (replaced atomically).")
    parser.add_argument(
        "--recipe",
        default=str(RECIPE),
        help="The training recipe whose TinyWorld and eval_documents to use (default: the demo's).",
    )
    parser.add_argument(
        "--num_problems",
        type=int,
        help="A seeded sample of held-out arithmetic problems (default: all, as evaluate_model).",
    )
    parser.add_argument(
        "--num_documents",
        type=int,
        help="Validation documents for next-word prediction (default: the recipe's eval_documents).",
    )
    parser.add_argument("--model", default="outputs/demo/model", help="The model folder or Hub id to evaluate.")
    args = parser.parse_args(argv)
    _, data_args, _, run_args, _ = parse_train_arguments(["--config", args.recipe])
    if data_args.dataset != "tinyworld":
        raise ValueError(f"{args.recipe} trains on {data_args.dataset!r}; the task needs a TinyWorld recipe.")
    num_documents = args.num_documents if args.num_documents is not None else run_args.eval_documents
    path = write_lm_eval_task(args.out_dir, tinyworld_config(data_args), args.num_problems, num_documents)
    print(f"Wrote the lm-eval task folder {path} (group {GROUP}); run it with:")
    print(shlex.join(lm_eval_command(path, args.model)))


def _script_job(name: str):
    """A job of scripts/ (hf_tinyllm.commands.<name>) as a subcommand."""

    def run(argv: list[str]) -> None:
        from . import commands

        getattr(commands, name)(argv)

    return run


COMMANDS = {
    "push": _push,
    "refresh-code": _refresh_code,
    "tokenize": _tokenize,
    "demo": _demo,
    "train": _train,
    "train-trainer": _script_job("train_trainer"),
    "train-sft": _script_job("train_sft"),
    "tokenizer": _script_job("tokenizer"),
    "generate-tinyworld": _script_job("generate_tinyworld"),
    "convert": _script_job("convert"),
    "explain": _explain,
    "studio": _studio,
    "export": _export,
    "lm-eval-task": _lm_eval_task,
}


@entry_point
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        from . import __version__

        print(f"hf_tinyllm {__version__}")
        return
    if not argv or argv[0] not in COMMANDS:
        asked = argv[:1] in (["--help"], ["-h"])
        print(f"usage: tinyllm {{{','.join(COMMANDS)}}} ...  (tinyllm COMMAND --help for its options; tinyllm "
              "--version)", file=sys.stdout if asked else sys.stderr)  # fmt: skip
        sys.exit(0 if asked else USAGE_ERROR_STATUS)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()

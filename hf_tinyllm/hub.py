"""Share a TinyLLM on the Hugging Face Hub: weights, config with `auto_map`, generation config, the two source files,
the tokenizer and chat template, the training summary and plots, and a model card (`hf_tinyllm.model_card`); and its
studio page as a Space (`push_space`, the files from `hf_tinyllm.studio.space`).

The local model folder is never modified: the repository's contents are staged in a temporary folder. The token
comes from the usual places (the `token` argument, `HF_TOKEN`, `hf auth login`) and is never printed or written.

A push whose connection drops midway raises `PushInterruptedError`. The Hub applies a commit whole or not at all, so
the repository has either all of the push or none of it, and running the same push again finishes it: LFS objects
that were fully uploaded are not sent again, and files already on the Hub make no new commit. huggingface_hub 2.4
retries a dropped LFS transfer 5 times (waiting 1, 2, 4, 8 and 8 s) before it gives up; it does not retry the commit.
"""

import logging
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, RepositoryNotFoundError
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import UserError
from .model_card import TIMELINE_DIR, TRAINING_RECORDS, WORD_MAP_TIMELINE_FILE, write_model_card
from .tokenization import write_tokenizer_files

try:  # the HTTP client of huggingface_hub 2.x; its transport errors are not OSErrors
    from httpx2 import ConnectError, ConnectTimeout, TransportError
except ImportError:  # pragma: no cover - another huggingface_hub HTTP stack
    TransportError, ConnectError, ConnectTimeout = OSError, ConnectionRefusedError, TimeoutError

logger = logging.getLogger(__name__)
NETWORK_ERRORS = (OSError, TransportError)  # connection refused, DNS failure, timeouts
# The request never reached the server, versus a connection that failed once established (reset, cut, timed out).
UNREACHABLE_ERRORS = (ConnectError, ConnectTimeout, ConnectionRefusedError, socket.gaierror)
DROPPED_ERRORS = (TransportError, ConnectionError, TimeoutError)
MODEL_FILES_SKIPPED = {"README.md"}  # regenerated for the repository


class HubError(UserError, RuntimeError):
    """A push that could not happen, with what to do about it."""


class PushInterruptedError(HubError, ConnectionError):
    """The connection dropped while a push was under way; the same push run again finishes it."""


def _logged_in(token: str | None) -> tuple[HfApi, str]:
    """A client for `token` (or the usual places) and its user name; `HubError` when no valid token is found."""
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
    except LocalTokenNotFoundError as err:
        raise HubError(
            "Not logged in to the Hugging Face Hub: set HF_TOKEN, run `hf auth login`, or pass token=... ."
        ) from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise HubError(f"The Hub rejected the token ({status}); check HF_TOKEN or log in again.") from err
    except NETWORK_ERRORS as err:
        raise HubError(f"Cannot reach the Hugging Face Hub at {api.endpoint} ({err}); check the network.") from err
    return api, user


def _explain(err: BaseException, repo_id: str, endpoint: str, context: str = "") -> HubError | None:
    """The `HubError` saying what `err`, raised while writing to `repo_id`, means and what to do; None if unknown.

    A failed LFS transfer reaches us wrapped (`RuntimeError("Error while uploading 'x' to the Hub.")` from the
    transport error), so the cause chain is followed, its messages kept as `context`."""
    if isinstance(err, HFValidationError):
        return HubError(f"{repo_id!r} is not a valid repository id: use user/name ({err}).")
    if isinstance(err, RepositoryNotFoundError):
        return HubError(f"Repository {repo_id} not found or not accessible with this token.")
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "?"
        if status == 403:
            return HubError(
                f"No permission to write to {repo_id} with this token (403); push to a repository you own, or "
                "use a token with write access."
            )
        return HubError(f"The Hub refused the push to {repo_id} ({status}): {context}{err}")
    if isinstance(err, UNREACHABLE_ERRORS):
        return HubError(f"Cannot reach the Hugging Face Hub at {endpoint} ({context}{err}); nothing was pushed.")
    if isinstance(err, DROPPED_ERRORS):
        detail = " ".join(f"{context}{type(err).__name__}: {err}".split())
        return PushInterruptedError(
            f"The push to {repo_id} was interrupted: the connection failed during the upload to {endpoint} "
            f"({detail}). The local folder is unchanged and {repo_id} has either all of this push or none of it "
            "(a commit lands whole or not at all): run the same push again to finish."
        )
    if err.__cause__ is not None:
        return _explain(err.__cause__, repo_id, endpoint, f"{context}{err} ")
    return None


@contextmanager
def _hub_errors(repo_id: str, endpoint: str) -> Iterator[None]:
    """Turn the client's errors while writing to `repo_id` into `HubError`s that say what to do."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        explained = _explain(err, repo_id, endpoint)
        if explained is None:
            raise
        raise explained from err


def stage_repository(
    source: str | Path | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    staging: Path,
    repo_id: str,
    llama: bool = False,
    max_shard_size: str | int = "5GB",
    **card_options,
) -> Path:
    """Write everything the repository will hold into `staging` (an empty folder) and return it."""
    from .convert import to_llama

    if isinstance(source, tuple):
        model, tokenizer = source
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        write_tokenizer_files(tokenizer, staging)
    else:
        folder = Path(source)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json); pass a model folder.")
        for path in folder.iterdir():
            if path.is_file() and path.name not in MODEL_FILES_SKIPPED:
                shutil.copy2(path, staging / path.name)
        if (folder / TIMELINE_DIR).is_dir():  # the snapshots of training (hf_tinyllm.insight.timeline)
            shutil.copytree(folder / TIMELINE_DIR, staging / TIMELINE_DIR)
    if llama:  # replace the TinyLLM files by the plain Llama export; keep the training records
        from . import TinyLLMForCausalLM

        model = TinyLLMForCausalLM.from_pretrained(staging)
        tokenizer = AutoTokenizer.from_pretrained(staging) if (staging / "tokenizer.json").exists() else None
        for path in staging.iterdir():
            if path.name not in (*TRAINING_RECORDS, TIMELINE_DIR):
                path.unlink()
        to_llama(model).save_pretrained(staging, max_shard_size=max_shard_size)
        if tokenizer is not None:
            write_tokenizer_files(tokenizer, staging)
    _render_word_map_timeline(staging)
    write_model_card(staging, repo_id, llama=llama, **card_options)
    return staging


def _render_word_map_timeline(staging: Path) -> None:
    """The word map through training as a GIF for the card, when the folder carries a timeline whose words the
    vocabulary spells (TinyWorld's); otherwise no GIF."""
    if not (staging / TIMELINE_DIR).is_dir() or (staging / WORD_MAP_TIMELINE_FILE).exists():
        return
    from .insight.model_parts import InsightError
    from .insight.timeline import load_timeline, plot_word_map_animation, word_map_timeline
    from .tokenization import load_tokenizer

    try:
        result = word_map_timeline(load_timeline(staging), load_tokenizer(staging))
    except InsightError as err:
        logger.info("No word map animation for the card: %s", err)
        return
    plot_word_map_animation(result, staging / WORD_MAP_TIMELINE_FILE)


def push(
    source: str | Path | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    llama: bool = False,
    token: str | None = None,
    max_shard_size: str | int = "5GB",
    **card_options,
) -> str:
    """Push a saved model folder, or a `(model, tokenizer)` pair, to `repo_id`; return the commit URL.

    `revision` pushes to a branch (created from main if needed); `create_pr` opens a pull request; `llama=True`
    pushes the plain `LlamaForCausalLM` export (loads without remote code). Re-pushing unchanged files makes no new
    commit. `card_options`: `license`, `dataset_name`, `language` for the model card.
    """
    api, _ = _logged_in(token)
    with tempfile.TemporaryDirectory(prefix="tinyllm-push-") as tmp:
        staging = stage_repository(source, Path(tmp), repo_id, llama=llama, max_shard_size=max_shard_size,
                                   **card_options)  # fmt: skip
        with _hub_errors(repo_id, api.endpoint):
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                folder_path=str(staging),
                repo_id=repo_url.repo_id,
                revision=revision,
                commit_message=commit_message or ("Upload Llama export" if llama else "Upload TinyLLM"),
                create_pr=create_pr,
            )
    url = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or str(info)
    logger.info("Pushed %s to %s", source if not isinstance(source, tuple) else "model", url)
    return url


def push_space(
    model_repo_id: str,
    space_id: str | None = None,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    license: str = "apache-2.0",
) -> str:
    """Push the studio page of the Hub model `model_repo_id` as a Gradio Space `space_id` (default
    `<model_repo_id>-studio`; bare names are in your namespace), in one commit; return the Space URL.

    The Space holds `app.py`, the bundled `hf_tinyllm` package, `requirements.txt` and a README configuring it
    (`hf_tinyllm.studio.space`). The model must be on the Hub already (`push` it first); a private model needs an
    `HF_TOKEN` secret with read access in the Space's settings.
    """
    from .studio.space import write_space

    api, user = _logged_in(token)
    model_id = model_repo_id if "/" in model_repo_id else f"{user}/{model_repo_id}"
    space_id = space_id or f"{model_id}-studio"
    space_id = space_id if "/" in space_id else f"{user}/{space_id}"
    with _hub_errors(model_id, api.endpoint):
        try:
            model_private = api.model_info(model_id).private
        except RepositoryNotFoundError as err:
            raise HubError(
                f"Model {model_id} is not on the Hub (or not visible with this token): push the model first, "
                f"`tinyllm push FOLDER {model_id} --space`."
            ) from err
    if model_private:
        logger.warning("%s is private: add an HF_TOKEN secret with read access to the Space %s.", model_id, space_id)
    with tempfile.TemporaryDirectory(prefix="tinyllm-space-") as tmp:
        staging = write_space(tmp, model_id, license=license)
        with _hub_errors(space_id, api.endpoint):
            repo_url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.upload_folder(
                folder_path=str(staging),
                repo_id=repo_url.repo_id,
                repo_type="space",
                commit_message=commit_message or f"TinyLLM studio for {model_id}",
            )
    logger.info("Pushed the studio of %s to %s", model_id, repo_url)
    return str(repo_url)


def push_folder(folder: str | Path, repo_id: str | None, **options) -> str:
    """`push` for the training scripts' `--push_to_hub --hub_model_id user/name`."""
    if not repo_id:
        raise ValueError("Pushing needs a repository id: pass --hub_model_id user/name.")
    return push(folder, repo_id, **options)


__all__ = ["HubError", "PushInterruptedError", "push", "push_folder", "push_space", "stage_repository"]

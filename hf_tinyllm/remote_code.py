"""Refresh the model code a saved folder or Hub repository carries (`tinyllm refresh-code MODEL`).

`save_pretrained` copies `configuration_tinyllm.py`, `modeling_tinyllm.py` and `generation_tinyllm.py` next to the
weights, and `from_pretrained(..., trust_remote_code=True)` runs that copy wherever hf_tinyllm is not installed. So a
model keeps the code of the release that saved it, and when transformers moves on (5.24 renamed the KV cache
argument), an old copy can break. Refreshing rewrites the three files with this release's and records the release in
`config.json` (`tinyllm_code_version`); weights, tokenizer and training records are left as they are.

Locally each file is replaced atomically, the `.py` files first and `config.json` last: an interrupted refresh
leaves the old version recorded, and running it again finishes it. On the Hub, the changed files go in one commit,
and a repository already up to date gets no commit at all.
"""

import json
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .atomic import atomic_file
from .configuration_tinyllm import TINYLLM_CODE_VERSION, TinyLLMConfig
from .errors import UserError
from .modeling_tinyllm import TinyLLMPreTrainedModel

REMOTE_CODE_FILES = ("configuration_tinyllm.py", "modeling_tinyllm.py", "generation_tinyllm.py")
VERSION_KEY = "tinyllm_code_version"


class RefreshError(UserError, ValueError):
    """A folder or repository that cannot be refreshed, with what to do instead."""


@dataclass
class Refresh:
    """What a refresh changes: the new contents of each file that differs, and the version recorded before."""

    previous_version: str | None
    changed: dict[str, bytes] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.changed)

    def describe(self, where: str) -> str:
        if not self.changed:
            return f"{where} already carries the model code of hf_tinyllm {TINYLLM_CODE_VERSION}; nothing changed."
        before = (
            f"hf_tinyllm {self.previous_version}"
            if self.previous_version
            else "an hf_tinyllm before 0.2.0 (no version recorded)"
        )
        return (
            f"Refreshed {where}: {', '.join(self.names)} (model code of {before} -> hf_tinyllm {TINYLLM_CODE_VERSION})."
        )


def current_code() -> dict[str, bytes]:
    """This release's shipped files, as `save_pretrained` copies them."""
    package = resources.files(__package__)
    return {name: package.joinpath(name).read_bytes() for name in REMOTE_CODE_FILES}


def full_auto_map() -> dict[str, str]:
    """`auto_map` naming every auto class the shipped files serve (what `save_pretrained` writes)."""
    return {
        "AutoConfig": "configuration_tinyllm.TinyLLMConfig",
        **{auto: f"modeling_tinyllm.{name}" for auto, name in TinyLLMPreTrainedModel._auto_map_classes.items()},
    }


def plan_refresh(config_text: str, shipped: dict[str, bytes | None], where: str) -> Refresh:
    """The files a refresh writes, from `config.json`'s text and the shipped files' bytes (None when absent)."""
    try:
        config = json.loads(config_text)
    except json.JSONDecodeError as err:
        raise RefreshError(f"{where}/config.json is not valid JSON ({err}); restore it before refreshing.") from err
    if config.get("model_type") != TinyLLMConfig.model_type:
        raise RefreshError(
            f"{where} holds a {config.get('model_type')!r} model, not a TinyLLM; only TinyLLM folders and "
            "repositories carry TinyLLM code (a Llama export needs no refresh)."
        )
    refresh = Refresh(previous_version=config.get(VERSION_KEY))
    refresh.changed = {name: data for name, data in current_code().items() if shipped.get(name) != data}
    config[VERSION_KEY] = TINYLLM_CODE_VERSION
    config["auto_map"] = {**config.get("auto_map", {}), **full_auto_map()}
    written = json.dumps(config, indent=2, sort_keys=True) + "\n"  # as transformers writes config.json
    if written != config_text:
        refresh.changed["config.json"] = written.encode()
    return refresh


def refresh_folder(folder: str | Path) -> Refresh:
    """Rewrite a local model folder's shipped code with this release's; return what changed."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise RefreshError(f"{folder} has no config.json: pass a saved TinyLLM folder or a Hub repository id.")
    shipped = {name: (folder / name).read_bytes() if (folder / name).is_file() else None for name in REMOTE_CODE_FILES}
    refresh = plan_refresh(config_path.read_text(), shipped, str(folder))
    for name in sorted(refresh.changed, key=lambda n: n == "config.json"):  # config.json, the version mark, last
        with atomic_file(folder / name) as tmp:
            tmp.write_bytes(refresh.changed[name])
    return refresh


def refresh_repo(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
) -> tuple[Refresh, str | None]:
    """Refresh a TinyLLM repository on the Hub in one commit (none when nothing changed); return what changed and
    the commit (or pull request) URL."""
    from huggingface_hub import CommitOperationAdd, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from .hub import _hub_errors, _logged_in

    api, _ = _logged_in(token)
    with _hub_errors(repo_id, api.endpoint), tempfile.TemporaryDirectory(prefix="tinyllm-refresh-") as tmp:

        def fetch(name: str) -> bytes | None:
            try:
                path = hf_hub_download(repo_id, name, revision=revision, token=token, cache_dir=tmp)
            except EntryNotFoundError:
                return None
            return Path(path).read_bytes()

        config = fetch("config.json")
        if config is None:
            raise RefreshError(f"{repo_id} has no config.json: is it a model repository saved by hf_tinyllm?")
        refresh = plan_refresh(config.decode(), {name: fetch(name) for name in REMOTE_CODE_FILES}, repo_id)
        if not refresh.changed:
            return refresh, None
        info = api.create_commit(
            repo_id,
            operations=[CommitOperationAdd(name, data) for name, data in sorted(refresh.changed.items())],
            commit_message=commit_message or f"Refresh the TinyLLM model code (hf_tinyllm {TINYLLM_CODE_VERSION})",
            revision=revision,
            token=token,
            create_pr=create_pr,
        )
    return refresh, getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or str(info)


def refresh(model: str, **hub_options) -> str:
    """Refresh `model`, a local folder (when it exists) or a Hub repository id; return the one-line report."""
    if Path(model).is_dir():
        if hub_options.get("revision") or hub_options.get("create_pr"):
            raise RefreshError(f"{model} is a local folder: --revision and --create_pr apply to Hub repositories.")
        return refresh_folder(model).describe(model)
    result, url = refresh_repo(model, **hub_options)
    return result.describe(model) + (f" Commit: {url}" if url else "")


__all__ = ["REMOTE_CODE_FILES", "Refresh", "RefreshError", "current_code", "refresh", "refresh_folder", "refresh_repo"]

"""Checkpoint integrity: a manifest of every file of a checkpoint (name, size, sha256) plus the model and data
configuration it was trained with, written last inside the checkpoint's temporary folder, before the rename that
publishes it. A checkpoint whose files do not match its manifest is damaged; resuming with a configuration that
differs from the manifest's is refused with the differing fields."""

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Config fields that describe how a model is run, not what it is: they may differ on resume.
RUNTIME_CONFIG_FIELDS = {
    "_name_or_path",
    "transformers_version",
    "use_cache",
    "dtype",
    "cross_entropy_chunk_size",
    "torch_dtype",
    "architectures",
    "auto_map",
    "_attn_implementation_autoset",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, run_configuration: dict) -> Path:
    """Record every file under `folder` and the run's configuration in `folder/manifest.json` (written last)."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"version": MANIFEST_VERSION, "files": files, "configuration": run_configuration}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return path


def read_manifest(folder: Path) -> dict:
    """The manifest of checkpoint `folder`; a `ValueError` naming the problem if it is missing or unreadable."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path} has no file list")
    return manifest


def checkpoint_damage(folder: Path) -> str | None:
    """Why checkpoint `folder` cannot be trusted (the first damaged file), or None when every file matches."""
    try:
        manifest = read_manifest(folder)
    except ValueError as err:
        return str(err)
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != expected.get("size"):
            return f"{path} has {size} bytes, the manifest says {expected.get('size')}"
        if _sha256(path) != expected.get("sha256"):
            return f"{path} does not match its sha256 in the manifest"
    return None


def configuration_differences(folder: Path, run_configuration: dict) -> list[str]:
    """The model and data fields whose values in this run differ from those checkpoint `folder` was trained with."""
    saved = read_manifest(folder).get("configuration", {})
    differences = []
    for group in sorted(set(saved) | set(run_configuration)):
        old, new = saved.get(group, {}), run_configuration.get(group, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                differences.append(f"{group}.{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}")
    return differences


def model_fingerprint(config_dict: dict) -> dict:
    """A model config as JSON values, without the fields that only say how it runs."""
    return json.loads(json.dumps({k: v for k, v in config_dict.items() if k not in RUNTIME_CONFIG_FIELDS}, default=str))


__all__ = [
    "MANIFEST",
    "checkpoint_damage",
    "configuration_differences",
    "model_fingerprint",
    "read_manifest",
    "write_manifest",
]

"""Checkpoints with `accelerator.save_state`, written under a temporary name with a manifest of their files and
renamed into place, keeping the last K; the training position is saved with them so that a resumed run continues
exactly where it stopped. Resuming verifies the manifest: `latest` falls back to the newest intact checkpoint."""

import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from ..atomic import replace_directory
from ..faults import crash_point
from .manifest import checkpoint_damage, configuration_differences, write_manifest

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingProgress:
    """Where training is; registered with `accelerator.register_for_checkpointing`: it travels in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves do not match the pattern)."""
    folder = output_dir / "checkpoints"
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def resolve_checkpoint(resume_from: str | None, output_dir: Path, run_configuration: dict | None = None) -> Path | None:
    """The checkpoint to resume from: `latest` is the newest intact one (a damaged newer one is skipped with a
    warning naming the damaged file); an explicit damaged checkpoint is an error naming the file. With
    `run_configuration`, a checkpoint trained with other model or data settings is an error listing them."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        found = checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(
                f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}; start without it."
            )
        damaged = []
        for path in reversed(found):
            damage = checkpoint_damage(path)
            if damage is None:
                break
            damaged.append(f"{path.name} ({damage})")
            logger.warning("Skipping the damaged checkpoint %s: %s; trying the one before.", path, damage)
        else:
            raise ValueError(f"Every checkpoint in {output_dir / 'checkpoints'} is damaged: {'; '.join(damaged)}. "
                             "Start the run again without --resume_from_checkpoint.")  # fmt: skip
    else:
        path = Path(resume_from)
        if not (path.is_dir() and CHECKPOINT_PATTERN.match(path.name)):
            raise FileNotFoundError(f"{path} is not a checkpoint folder (checkpoint-<step>); pass one, or 'latest'.")
        damage = checkpoint_damage(path)
        if damage is not None:
            raise ValueError(f"The checkpoint {path} is damaged: {damage}. Resume from an earlier checkpoint or "
                             "with 'latest' (the newest intact one).")  # fmt: skip
    if run_configuration is not None:
        differences = configuration_differences(path, run_configuration)
        if differences:
            raise ValueError(
                f"{path} was trained with other model or data settings: {'; '.join(differences)}. Resume with the "
                "checkpoint's settings, or start a new run in another --output_dir."
            )
    return path


LOADER_STATE = "loader_state_{rank}.pt"


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, step: int, keep: int, run_configuration: dict | None = None,
    loader_state: dict | None = None,
) -> Path:  # fmt: skip
    """Every process writes its part into `checkpoints/.checkpoint-<step>.tmp`; then the main process writes the
    manifest (every file's size and sha256, and `run_configuration`), renames the folder to `checkpoint-<step>` (one
    rename: a kill at any moment leaves either no new checkpoint or a complete one) and deletes all but the newest
    `keep`. `loader_state` is this process's own (a streaming loader's): every process writes its file."""
    folder = output_dir / "checkpoints"
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if loader_state is not None:
        torch.save(loader_state, tmp / LOADER_STATE.format(rank=accelerator.process_index))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(tmp, run_configuration or {})
        crash_point("checkpoint-written")
        replace_directory(tmp, final)  # replaces a same-step checkpoint too (a stop right after a periodic save)
        for old in checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_loader_state(checkpoint: Path, rank: int) -> dict:
    """The loader state process `rank` saved in `checkpoint`."""
    path = checkpoint / LOADER_STATE.format(rank=rank)
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} has no {path.name}: it was not saved by a streaming run with this "
                                "process; resume with the run's own settings.")  # fmt: skip
    return torch.load(path, weights_only=True)


__all__ = ["TrainingProgress", "checkpoints", "load_loader_state", "resolve_checkpoint", "save_checkpoint"]

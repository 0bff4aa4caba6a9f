"""Named crash points for fault-injection tests. With `TINYLLM_CRASH_AT=NAME` (or `NAME:N`), the process kills
itself with SIGKILL the first (or Nth) time it reaches `crash_point(NAME)`: an uncatchable death with nothing
flushed, like a power cut, at a moment a test can name (inside a checkpoint write, inside the final model save).
Unset, a crash point costs one environment lookup."""

import os
import signal

CRASH_ENV = "TINYLLM_CRASH_AT"
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    wanted, _, count = target.partition(":")
    if wanted != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["CRASH_ENV", "crash_point"]

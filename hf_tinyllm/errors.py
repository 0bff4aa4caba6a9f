"""The one edge between the library and its users: every script and `tinyllm` subcommand runs inside `entry_point`,
which turns a user error into `error: <what is wrong and how to fix it>` on stderr and exit status 2 (argparse's
status for bad usage), and leaves real bugs their traceback.

A user error is an exception the library raises about its input: `ValueError` (bad arguments, bad data, bad
configs: the library's messages name the input and the fix), missing or clashing files, a missing optional package,
an unreachable server, or a `UserError`. With `--debug` (a bare flag anywhere on the command line) or
`TINYLLM_DEBUG=1`, nothing is caught: every error shows its full traceback.
"""

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

DEBUG_FLAG = "--debug"
DEBUG_ENV = "TINYLLM_DEBUG"
USAGE_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130


class UserError(Exception):
    """An error caused by the user's input or environment, not by a bug; its message says how to fix it."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ConnectionError,
    ImportError,
)

F = TypeVar("F", bound=Callable)


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether `TINYLLM_DEBUG` is set (to anything but 0/false) or `--debug` appears as a bare flag in `argv`
    (default `sys.argv`). A `--debug VALUE` belongs to the script (transformers' `TrainingArguments.debug`)."""
    return _debug_env() or _bare_debug_index(sys.argv if argv is None else argv) is not None


def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def _bare_debug_index(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv):
        if arg == DEBUG_FLAG and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            return i
    return None


def format_user_error(err: BaseException) -> str:
    """`error: <message>`; a missing module names the package to install."""
    if isinstance(err, ImportError) and err.name and str(err).startswith("No module named"):
        return f"error: the optional package {err.name!r} is not installed; install it (pip install {err.name})."
    message = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        message = f"{err.filename}: {err.strerror}"
    return f"error: {message}"


def entry_point(main: F) -> F:
    """Run `main` as a command-line entry point (see the module docstring). A bare `--debug` is removed from
    `sys.argv` before `main` parses it."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        index = _bare_debug_index(sys.argv)
        if index is not None:
            del sys.argv[index]
        if index is not None or _debug_env():
            return main(*args, **kwargs)
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)
        except USER_ERRORS as err:
            print(format_user_error(err), file=sys.stderr)
            sys.exit(USAGE_ERROR_STATUS)

    return run  # type: ignore[return-value]


__all__ = ["USER_ERRORS", "UserError", "debug_requested", "entry_point", "format_user_error"]

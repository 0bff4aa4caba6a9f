"""`tinyllm studio FOLDER --port P` served from the test process, for the studio's API and browser tests.

The real command line (`hf_tinyllm.cli.main`: argument parsing, loading the model, building the page, and gradio's
blocking `launch`, exactly as the `tinyllm` command runs them) runs in a background thread on 127.0.0.1 and a free
port, so a test talks to the real gradio server over HTTP without paying for a fresh interpreter that imports torch,
transformers and gradio again. Stopping it closes the gradio app the command launched, which ends the command's
blocking `launch`; the command must then return without an error. (The Space test runs `serve` in an interpreter of
its own, as a Space does.)

    with studio(folder) as url:
        ...  # gradio_client.Client(url), or a browser on url
"""

from __future__ import annotations

import socket
import threading
import time
import traceback
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _failure(errors: list[BaseException]) -> str:
    return "".join(traceback.format_exception(errors[0]))[-3000:]


def _wait_until_serving(url: str, command: threading.Thread, errors: list[BaseException]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not command.is_alive():
            pytest.fail(f"tinyllm studio stopped before serving:\n{_failure(errors) if errors else 'no error'}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"tinyllm studio did not answer at {url} within {START_TIMEOUT_S:.0f} s")


def _close_the_app_on(port: int) -> None:
    import gradio

    for app in gradio.Blocks.get_instances():
        if app.is_running and getattr(app, "server_port", None) == port:
            app.close(verbose=False)


@contextmanager
def studio(folder: str | Path, *options: str) -> Iterator[str]:
    """Run `tinyllm studio FOLDER --port P [OPTIONS]` in a background thread; yield the page's URL once it answers
    200; at exit close the server and check that the command returned cleanly."""
    from hf_tinyllm.cli import main

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    errors: list[BaseException] = []

    def command() -> None:
        try:
            main(["studio", str(folder), "--port", str(port), *options])
        except BaseException as error:  # SystemExit included: a user error is exit status 2, not a served page
            errors.append(error)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage reports from this process's apps
        thread = threading.Thread(target=command, name=f"tinyllm studio :{port}", daemon=True)
        thread.start()
        try:
            _wait_until_serving(url, thread, errors)
            yield url
        finally:
            _close_the_app_on(port)
            thread.join(STOP_TIMEOUT_S)
    if thread.is_alive():
        pytest.fail(f"tinyllm studio on port {port} still runs {STOP_TIMEOUT_S:.0f} s after its server was closed")
    if errors:
        pytest.fail(f"tinyllm studio failed:\n{_failure(errors)}")

"""Hub faults (issue 11): a push whose connection drops midway fails with a clear error, leaves the local folder
untouched and the repository without a half commit, and the same push run again completes.

The real clients push, in this process (pointed at the server by `hub_client`), to the offline Hub of
tests/fake_hub.py, which resets the connection after N bytes of an upload body (`FakeHub.drop_uploads`).
"""

import hashlib
import io
import json
import socket
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import tiny_model
from fake_hub import DROPPED, FakeHub, hub_client, never_shows, records_of
from huggingface_hub import HfApi
from huggingface_hub.utils import _http

from hf_tinyllm.cli import main
from hf_tinyllm.hub import PushInterruptedError, push
from hf_tinyllm.tokenization import model_overrides_for, train_tokenizer, write_tokenizer_files

TOKEN = "hf_test_token"
CORPUS = ["two plus three equals five.", "the queen walked to the palace with the king."] * 30
CUT_AFTER = 4096  # bytes of an upload body the server reads before it drops the connection: midway for both bodies
COMMIT = "POST /api/models/{repo}/commit/{rev}"
LFS_PUT = "PUT cdn:/lfs-upload/{oid}"


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as server:
        yield server


def save_model_folder(folder: Path, seed: int) -> Path:
    """A saved TinyLLM with its tokenizer: one LFS file (model.safetensors, ~100 kB, its bytes set by `seed`); the
    other files go inline in the commit body (~40 kB)."""
    tokenizer = train_tokenizer(CORPUS, vocab_size=300)
    tiny_model(seed, **model_overrides_for(tokenizer)).save_pretrained(folder)
    write_tokenizer_files(tokenizer, folder)
    (folder / "training_summary.json").write_text(json.dumps({"steps": 3, "tokens_seen": 384}))
    assert min((folder / name).stat().st_size for name in ("model.safetensors", "tokenizer.json")) > CUT_AFTER
    return folder


def weights_oid(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path (names, contents and the set of files)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")}


def assert_complete(hub: FakeHub, repo: str, folder: Path, base: str) -> None:
    """`repo` holds every file of `folder` byte for byte (and its card), in ONE commit on top of `base`."""
    files = hub.files(repo)
    for path in folder.iterdir():
        assert files[path.name] == path.read_bytes(), path.name
    assert "README.md" in files
    history = hub.commits(repo)
    assert len(history) == 2 and history[1].oid == base, [c.title for c in history]


shown = never_shows(TOKEN)  # nothing a test prints or logs contains the token


@dataclass
class CutPush:
    folder: Path
    repo: str
    base: str  # the repository's head before the push
    before: dict[str, str]  # digest of the folder before the push
    status: int | str | None  # the exit status of `tinyllm push` (0: it returned)
    stderr: str
    dropped: list[str]  # the endpoints of the requests the server cut


@pytest.fixture(scope="module")
def cut_cli_push(hub, tmp_path_factory) -> CutPush:
    """`tinyllm push` with the connection cut midway through the commit body. The commit POST carries the regular
    files inline; huggingface_hub does not retry it, so the first cut fails the push.

    Runs in this process (module scope: capfd is not available, so the output is captured here: the CLI prints its
    `error: ...` line to `sys.stderr` as it is at that moment)."""
    tmp = tmp_path_factory.mktemp("cut_commit")
    folder, repo = save_model_folder(tmp / "model", seed=0), "tester/cut-commit"
    base, before = hub.create_repo(repo), digest(folder)
    hub.drop_uploads(after_bytes=CUT_AFTER, kind="commit")
    out, err = io.StringIO(), io.StringIO()
    env = hub.client_env(token=TOKEN, hf_home=tmp / "hf_home")
    with hub_client(env), records_of("", "transformers") as logged, redirect_stdout(out), redirect_stderr(err):
        try:
            main(["push", str(folder), repo])
            status = 0
        except SystemExit as stop:
            status = stop.code
    assert TOKEN not in out.getvalue() + err.getvalue() + "".join(logged.messages)  # the token is never printed
    dropped = [r.endpoint for r in hub.requests if r.status == DROPPED]
    return CutPush(folder, repo, base, before, status, err.getvalue(), dropped)


def test_a_push_cut_midway_fails_clearly_and_changes_nothing(hub, cut_cli_push):
    cut = cut_cli_push
    assert cut.status == 2, cut.stderr[-3000:]  # a user error: `error: ...`, exit status 2
    stderr = cut.stderr
    assert f"The push to {cut.repo} was interrupted: the connection failed during the upload" in stderr
    assert "run the same push again to finish." in stderr
    assert cut.dropped == [COMMIT]
    assert hub.head(cut.repo) == cut.base and set(hub.files(cut.repo)) == {".gitattributes"}  # no half commit
    assert digest(cut.folder) == cut.before
    assert hub.has_lfs_object(weights_oid(cut.folder))  # the weights reached the LFS store before the cut


class RecordedSleeps:
    """Stands in for the `time` module of huggingface_hub's HTTP helpers: its backoff waits are recorded instead of
    slept (~23 s); everything else is the real `time`."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_lfs_cut_fails_after_the_clients_retries_and_the_same_pushes_complete(hub, cut_cli_push, tmp_path, monkeypatch):
    """Runs the cut CLI push again, then pushes another folder whose LFS PUT is cut 7 times: huggingface_hub
    retries a PUT 5 times (1, 2, 4, 8, 8 s) and gives up; the 7th cut hits the second push, whose retry recovers."""
    cut = cut_cli_push
    folder, repo = save_model_folder(tmp_path / "model", seed=1), "tester/cut-lfs"
    base, before = hub.create_repo(repo), digest(folder)
    hub.clear_requests()
    hub.drop_uploads(after_bytes=CUT_AFTER, times=7, kind="lfs")
    out = {}
    with hub_client(hub.client_env(token=TOKEN, hf_home=tmp_path / "hf_home")):
        push(cut.folder, cut.repo)  # the same push as the cut CLI one

        sleeps = RecordedSleeps()
        monkeypatch.setattr(_http, "time", sleeps)  # where huggingface_hub's retries (http_backoff) sleep
        with pytest.raises(PushInterruptedError) as error:
            push(folder, repo)
        out["error"], out["connection_error"] = str(error.value), isinstance(error.value, ConnectionError)
        out["waits_failed"], sleeps.waits = sleeps.waits, []
        info = HfApi().model_info(repo)
        out["sha"], out["files"] = info.sha, sorted(s.rfilename for s in info.siblings)
        push(folder, repo)
        out["waits_second"] = sleeps.waits

    assert_complete(hub, cut.repo, cut.folder, cut.base)
    assert digest(cut.folder) == cut.before
    puts = [r for r in hub.requests if r.endpoint == LFS_PUT]
    assert {r.path for r in puts} == {f"/lfs-upload/{weights_oid(folder)}"}  # the CLI push's were not sent again

    assert out["connection_error"] and "\n" not in out["error"]
    assert out["error"].startswith(f"The push to {repo} was interrupted: the connection failed during the upload")
    assert "(Error while uploading 'model.safetensors' to the Hub. " in out["error"]
    assert out["error"].endswith("run the same push again to finish.")
    assert out["waits_failed"] == [1, 2, 4, 8, 8]
    assert out["sha"] == base and out["files"] == [".gitattributes"]  # the client's view: nothing landed
    assert out["waits_second"] == [1]
    assert [r.status for r in puts] == [DROPPED] * 7 + [200]
    assert [r.status for r in hub.requests if r.endpoint == COMMIT] == [200, 200]  # one per completed push
    assert hub.pending_faults == 0
    assert_complete(hub, repo, folder, base)
    assert digest(folder) == before


COMMIT_LINES = [
    {"key": "header", "value": {"summary": "two files"}},
    {"key": "file", "value": {"path": "a.txt", "content": "YQ==", "encoding": "base64"}},
    {"key": "file", "value": {"path": "b.txt", "content": "Yg==", "encoding": "base64"}},
]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_commit_body_cut_short_is_never_applied(framing):
    """A client that goes away after the header and the first file line (a valid NDJSON prefix) commits nothing."""
    with FakeHub() as hub:
        assert_cut_body_not_applied(hub, framing)


def assert_cut_body_not_applied(hub: FakeHub, framing: str) -> None:
    repo = f"tester/cut-{framing}"
    base = hub.create_repo(repo)
    body = b"".join(json.dumps(line).encode() + b"\n" for line in COMMIT_LINES)
    prefix = body[: body.index(b"\n", body.index(b"a.txt")) + 1]
    if framing == "chunked":
        headers, sent = "Transfer-Encoding: chunked", f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n"
    else:
        headers, sent = f"Content-Length: {len(body)}", prefix
    request = (f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {TOKEN}\r\n"
               f"Content-Type: application/x-ndjson\r\n{headers}\r\n\r\n").encode()  # fmt: skip
    address = urlsplit(hub.endpoint)
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(request + sent)
        conn.shutdown(socket.SHUT_WR)
        try:
            answer = conn.recv(1024)
        except ConnectionResetError:
            answer = b""
    assert answer == b""  # no response: the request was never handled
    assert hub.head(repo) == base and set(hub.files(repo)) == {".gitattributes"}
    assert [r.status for r in hub.requests if r.endpoint == COMMIT] == [DROPPED]

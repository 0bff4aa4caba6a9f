"""A stateful, strict, Hub-compatible HTTP server for tests, in the spirit of moto for AWS.

`FakeHub` serves the part of the Hugging Face Hub HTTP API that huggingface_hub 2.4.0 and transformers 5.23.0 really
call for pushing and loading (see /work/shared/reference/hub-http-api.md): repos, branches, commits, pull-request refs,
the preupload / LFS batch / verify / commit upload protocol, repo info, tree listings and `resolve` downloads. A second
port plays the CDN: it serves LFS blobs and accepts LFS uploads through signed URLs, and it rejects any request that
carries an `Authorization` header, so a test notices if the token leaks off the Hub.

Everything runs on 127.0.0.1, stdlib only (PyYAML for `validate-yaml`). The server is strict on purpose: writes need
a Bearer token of the repo's namespace, private repos are invisible to others, errors carry the exact `X-Error-Code`
headers the client types its exceptions from, LFS uploads are checked against their sha256 and size, a commit may only
reference LFS objects that were uploaded, and unknown routes answer a plain 404. Every request is recorded.

The client reads `HF_ENDPOINT` when `huggingface_hub` is imported, so drive it from a fresh interpreter:

    def test_roundtrip(fake_hub, tmp_path):
        env = fake_hub.client_env(hf_home=tmp_path / "hf")
        out = run_hub_client('''
            import json
            from huggingface_hub import HfApi
            url = HfApi().create_repo("demo", exist_ok=True)
            print(json.dumps({"repo_id": url.repo_id}))
        ''', env)
        assert out == {"repo_id": "tester/demo"}

Fixtures: `fake_hub` (session scope) and `hub_env` (its `client_env` with a fresh HF_HOME under tmp_path). Import
them into a conftest.py (`from fake_hub import fake_hub, hub_env  # noqa: F401`) or alias them in a test module
(`fake_hub = fake_hub_module.fake_hub`): importing a fixture into the module that uses it trips ruff's F811.
`hub.requests` records method, port ("api"/"cdn"), path, whether an Authorization header was sent and the status;
`hub.endpoints_used()` gives route templates such as "POST /api/models/{repo}/commit/{rev}" or
"GET cdn:/lfs-cdn/{oid}".

Faults: `hub.drop_uploads(after_bytes=N, times=K, kind="commit"|"lfs"|"any")` makes the server read N bytes of the
body of each of the next K uploads (a commit POST, which carries regular files base64-inline, or an LFS PUT of an
object or a part), then reset the connection without answering: the request is never handled. A body that ends
before its Content-Length (the client went away) is never handled either, so a commit lands whole or not at all.
Both are recorded with status `DROPPED`.

Not implemented: Xet (uploads need `HF_HUB_DISABLE_XET=1`, which `client_env` sets; downloads never see Xet headers),
`.gitignore` handling in preupload (`shouldIgnore` is always false), tags, discussions beyond PR refs, gated repos,
organisations beyond a name -> members map, spaces/datasets specifics (the repo type is kept in paths and state only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_TOKENS = {"hf_test_token": "tester", "hf_other": "intruder"}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files of 10 MiB and more in LFS
SAMPLE_SIZE = 512  # the client sends the first 512 bytes of each file to `preupload`
DEFAULT_BRANCH = "main"
DROPPED = 0  # the recorded status of a request whose connection was dropped before it was handled

# The `.gitattributes` of the Hub's initial commit.
LFS_PATTERNS = (
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
)
DEFAULT_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)

_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_BRANCH_RE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_PR_REF_RE = re.compile(r"refs/pr/(\d+)")
# Same regex as `huggingface_hub.repocard.REGEX_YAML_BLOCK`.
_YAML_BLOCK_RE = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
_LFS_BATCH_RE = re.compile(r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch")
_COMMIT_RE = re.compile(r"/api/(models|datasets|spaces)/[^/]+/[^/]+/commit/.+")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub uses as the ETag and tree `oid` of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _iso(dt: datetime) -> str:
    """The Hub's date format, the only one `huggingface_hub.utils.parse_datetime` accepts."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _is_binary(sample: bytes) -> bool:
    return b"\x00" in sample[:SAMPLE_SIZE]


def _gitattributes_lfs_patterns(text: str) -> list[str]:
    patterns = []
    for line in text.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _matches_gitattributes(path: str, pattern: str) -> bool:
    """Enough of gitattributes matching: a pattern without '/' matches the basename at any depth."""
    if "/" not in pattern:
        return fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    regex = ""
    for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.lstrip("/")):
        regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.fullmatch(regex, path) is not None


# ---------------------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Blob:
    """One file of a commit: regular content, or a pointer to an object of the LFS store."""

    size: int
    content: bytes | None = None
    lfs_oid: str | None = None

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None

    @property
    def pointer(self) -> bytes:
        assert self.lfs_oid is not None
        return lfs_pointer(self.lfs_oid, self.size)

    @property
    def git_oid(self) -> str:
        """git-sha1 of the blob as git stores it (the pointer file for LFS files)."""
        return git_blob_sha1(self.pointer if self.is_lfs else self.content or b"")


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: datetime
    files: dict[str, Blob]
    repo_key: tuple[str, str]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    created_at: datetime
    branches: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, str] = field(default_factory=dict)
    next_discussion: int = 1

    @property
    def key(self) -> tuple[str, str]:
        return (self.repo_type, self.repo_id)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    port: str  # "api" or "cdn"
    path: str  # as sent, without the query string
    authorized: bool  # whether an Authorization header was present (valid or not)
    status: int  # DROPPED (0): the connection was reset before the request was handled
    endpoint: str  # the route: "POST /api/models/{repo}/commit/{rev}", "PUT cdn:/lfs-upload/{oid}"
    known: bool  # False for a route the fake does not implement


class HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, body: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.body = body if body is not None else {"error": message}


class _UnknownRoute(Exception):
    pass


class _IncompleteBody(Exception):
    """The connection closed before the whole request body arrived."""


@dataclass
class UploadFault:
    """Drop the connection after `after_bytes` bytes of the body of each of the next `times` uploads of `kind`."""

    after_bytes: int
    times: int = 1
    kind: str = "any"  # "commit", "lfs" or "any"


def _upload_route(method: str, role: str, path: str) -> tuple[str, str] | None:
    """(kind, route template) of a request that carries file bytes, or None."""
    if role == "api" and method == "POST" and (match := _COMMIT_RE.fullmatch(path)):
        return "commit", f"/api/{match.group(1)}/{{repo}}/commit/{{rev}}"
    if role == "cdn" and method == "PUT" and path.startswith("/lfs-upload/"):
        return "lfs", "/lfs-upload/{oid}/part/{n}" if "/part/" in path else "/lfs-upload/{oid}"
    return None


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(status: int, obj: Any, headers: dict | None = None, content_type="application/json") -> _Response:
    return _Response(status, json.dumps(obj).encode(), {"Content-Type": content_type, **(headers or {})})


def _error_response(err: HubError) -> _Response:
    headers = {"X-Error-Message": err.message, **err.headers}
    if err.code is not None:
        headers["X-Error-Code"] = err.code
    return _json_response(err.status, err.body, headers)


@dataclass
class _Request:
    method: str
    role: str
    raw_path: str
    query: dict[str, list[str]]
    body: bytes
    headers: Any
    repo_id: str | None = None
    route: str | None = None  # the route template, set by the router once it recognises the request
    known: bool = True

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.param(name) or "").lower() in ("1", "true", "yes")

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    """Split raw path segments into a revision and the rest; `refs/pr/1` may come quoted (usual) or not."""
    first = unquote(segments[0])
    if first == "refs" and len(segments) >= 3 and segments[1] in ("pr", "heads", "tags", "convert"):
        return f"refs/{segments[1]}/{unquote(segments[2])}", segments[3:]
    return first, segments[1:]


def _clean_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or path.endswith("/"):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


# ---------------------------------------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length
    server_version = "FakeHub/1.0"
    timeout = 60  # close idle keep-alive connections eventually
    hub: FakeHub
    role: str

    def log_message(self, format, *args):  # silence the default stderr access log
        pass

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise _IncompleteBody
        return data

    def _read_body(self) -> bytes:
        """The whole request body; `_IncompleteBody` if the connection ends first (never handle half a body)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line.endswith(b"\n"):
                    raise _IncompleteBody
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.rfile.readline(65537)) not in (b"\r\n", b"\n"):
                        if not trailer:
                            raise _IncompleteBody
                    return b"".join(chunks)
                chunks.append(self._read_exactly(size))
                self._read_exactly(2)  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self._read_exactly(length) if length else b""

    def _drop(self, route: str, after_bytes: int | None) -> None:
        """Read up to `after_bytes` of the body (None or no Content-Length: nothing more), record the request, and
        reset the connection without answering."""
        length = self.headers.get("Content-Length")
        if after_bytes is not None and length:
            self.rfile.read(min(after_bytes, int(length)))
        authorized = self.headers.get("Authorization") is not None
        endpoint = f"{self.command} {'cdn:' if self.role == 'cdn' else ''}{route}"
        self.hub._append_record(RecordedRequest(self.command, self.role, urlsplit(self.path).path, authorized,
                                                DROPPED, endpoint, True))  # fmt: skip
        # SO_LINGER 0: closing sends a reset (no FIN), as a failing proxy or network does, whatever the client is
        # doing; socketserver's own shutdown of the closed socket is a no-op.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        upload = _upload_route(self.command, self.role, split.path)
        fault = self.hub._take_fault(upload[0]) if upload else None
        if fault is not None:
            self._drop(upload[1], fault.after_bytes)
            return
        try:
            body = self._read_body()  # always drain the body, or the next request on this connection breaks
        except _IncompleteBody:
            self._drop(upload[1] if upload else split.path, None)
            return
        req = _Request(
            method=self.command,
            role=self.role,
            raw_path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            body=body,
            headers=self.headers,
        )
        resp = self.hub._handle(req)
        try:
            self.send_response(resp.status)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD" and resp.body:
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch


class FakeHub:
    """An in-memory Hub on 127.0.0.1 (API port + CDN port), usable as a context manager."""

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        *,
        orgs: dict[str, set[str]] | None = None,
        multipart_chunk_size: int | None = None,
    ):
        """`tokens` maps token -> username; `orgs` maps an organisation to its members (who may write to it);
        LFS objects larger than `multipart_chunk_size` are uploaded with the multipart protocol (None: never)."""
        self._tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self._orgs = {name: set(members) for name, members in (orgs or {}).items()}
        self.multipart_chunk_size = multipart_chunk_size
        self._faults: list[UploadFault] = []
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._commits: dict[str, Commit] = {}
        self._lfs: dict[str, bytes] = {}
        self._parts: dict[str, dict[int, bytes]] = {}
        self._counter = 0
        self._secret = secrets.token_bytes(16)
        self._requests: list[RecordedRequest] = []
        self.server_errors: list[str] = []  # tracebacks of requests that crashed the fake (answered 500)
        self._servers: list[ThreadingHTTPServer] = []
        self._tmp_dirs: list[str] = []
        self.endpoint = ""
        self.cdn_endpoint = ""

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHub:
        if self._servers:
            return self
        for role in ("api", "cdn"):
            handler = type(f"FakeHub{role.title()}Handler", (_Handler,), {"hub": self, "role": role})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
            self._servers.append(server)
        self.endpoint = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_endpoint = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        for path in self._tmp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._tmp_dirs.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ test helpers

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def endpoints_used(self) -> set[str]:
        """The routes the recorded requests used, e.g. "HEAD /{repo}/resolve/{rev}/config.json"."""
        return {r.endpoint for r in self.requests}

    def drop_uploads(self, after_bytes: int, times: int = 1, kind: str = "any") -> None:
        """Reset the connection after `after_bytes` bytes of the body of each of the next `times` uploads of `kind`:
        "commit" (the commit POST, regular files inline), "lfs" (a PUT of an LFS object or part) or "any"."""
        if kind not in ("commit", "lfs", "any") or after_bytes < 0 or times < 1:
            raise ValueError(f"drop_uploads(after_bytes={after_bytes}, times={times}, kind={kind!r}): need "
                             'after_bytes >= 0, times >= 1 and kind "commit", "lfs" or "any"')  # fmt: skip
        with self._lock:
            self._faults.append(UploadFault(after_bytes, times, kind))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many upload drops are still armed."""
        with self._lock:
            return sum(fault.times for fault in self._faults)

    def add_token(self, token: str, username: str) -> None:
        with self._lock:
            self._tokens[token] = username

    def client_env(
        self, token: str | None = "hf_test_token", hf_home: str | Path | None = None, **extra: str
    ) -> dict[str, str]:
        """Environment for a client process: endpoint, token, an isolated HF_HOME, Xet and telemetry off.

        Merge it over os.environ (`{**os.environ, **hub.client_env()}`) before `huggingface_hub` is imported. With
        `token=None`, HF_TOKEN is omitted and implicit tokens are disabled, so nothing is sent even if the parent
        environment has a token. Without `hf_home`, a temporary directory removed by `stop()` is used.
        """
        if hf_home is None:
            hf_home = tempfile.mkdtemp(prefix="fake_hub_home_")
            self._tmp_dirs.append(hf_home)
        home = Path(hf_home)
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "HF_ENDPOINT": self.endpoint,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_MODULES_CACHE": str(home / "modules"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",
            "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_ETAG_TIMEOUT": "30",
            "HF_HUB_DOWNLOAD_TIMEOUT": "60",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if token is None:
            env["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
        else:
            env["HF_TOKEN"] = token
        env.update(extra)
        return env

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        repo_type: str = "model",
        files: dict[str, bytes] | None = None,
        owner: str | None = None,
    ) -> str:
        """Create a repo directly in the server state (no HTTP); `files` go in a second commit. Returns the head."""
        with self._lock:
            namespace = repo_id.split("/")[0]
            repo = self._create_repo(repo_type, repo_id, owner or namespace, private)
            head = repo.branches[DEFAULT_BRANCH]
            if files:
                tree = dict(self._commits[head].files)
                patterns = self._lfs_patterns(tree)
                for path, data in files.items():
                    if self._upload_mode(_clean_path(path), len(data), data[:SAMPLE_SIZE], patterns) == "lfs":
                        oid = hashlib.sha256(data).hexdigest()
                        self._lfs[oid] = data
                        tree[path] = Blob(len(data), lfs_oid=oid)
                    else:
                        tree[path] = Blob(len(data), content=data)
                head = self._new_commit(repo, head, tree, "Seed files", "", repo.owner).oid
                repo.branches[DEFAULT_BRANCH] = head
            return head

    def head(self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> str:
        """The commit id a revision (branch, refs/pr/N or commit id) points to."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), revision)

    def commits(self, repo_id: str, branch: str = DEFAULT_BRANCH, repo_type: str = "model") -> list[Commit]:
        """The history of a revision, newest first."""
        with self._lock:
            oid: str | None = self.head(repo_id, branch, repo_type)
            history = []
            while oid is not None:
                history.append(self._commits[oid])
                oid = self._commits[oid].parent
            return history

    def tree(self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> dict[str, Blob]:
        """The files of a revision as stored (regular content or LFS pointer)."""
        with self._lock:
            return dict(self._commits[self.head(repo_id, revision, repo_type)].files)

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> dict[str, bytes]:
        """The contents of the files of a revision, LFS objects dereferenced."""
        with self._lock:
            return {
                path: self._lfs[blob.lfs_oid] if blob.lfs_oid else blob.content or b""
                for path, blob in self.tree(repo_id, revision, repo_type).items()
            }

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return self._get_repo(repo_type, repo_id).private

    def has_lfs_object(self, oid: str) -> bool:
        with self._lock:
            return oid in self._lfs

    # ------------------------------------------------------------------------------------------ state internals

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on the fake hub")
        return repo

    def _create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool) -> _Repo:
        repo = _Repo(repo_type, repo_id, owner, private, datetime.now(timezone.utc))
        self._repos[repo.key] = repo
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        files = {".gitattributes": Blob(len(gitattributes), content=gitattributes)}
        repo.branches[DEFAULT_BRANCH] = self._new_commit(repo, None, files, "initial commit", "", owner).oid
        return repo

    def _new_commit(
        self, repo: _Repo, parent: str | None, files: dict[str, Blob], title: str, message: str, author: str
    ) -> Commit:
        self._counter += 1
        listing = "\n".join(f"{path} {blob.git_oid}" for path, blob in sorted(files.items()))
        oid = hashlib.sha1(f"{self._counter}\0{repo.repo_id}\0{parent}\0{title}\0{listing}".encode()).hexdigest()
        commit = Commit(oid, parent, title, message, author, datetime.now(timezone.utc), dict(files), repo.key)
        self._commits[oid] = commit
        return commit

    def _resolve(self, repo: _Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.branches:
            return repo.branches[revision[len("refs/heads/") :]]
        pr = _PR_REF_RE.fullmatch(revision)
        if pr and int(pr.group(1)) in repo.pulls:
            return repo.pulls[int(pr.group(1))]
        commit = self._commits.get(revision) if _SHA1_RE.fullmatch(revision) else None
        if commit is not None and commit.repo_key == repo.key:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    def _can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self._orgs.get(namespace, set()))

    def _readable_repo(self, repo_type: str, repo_id: str, user: str | None) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._can_write(user, repo.namespace)):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _writable_repo(self, repo_type: str, repo_id: str, user: str | None) -> _Repo:
        if user is None:
            raise HubError(401, "You must be authenticated (Authorization: Bearer <token>) to write to a repo")
        repo = self._readable_repo(repo_type, repo_id, user)
        if not self._can_write(user, repo.namespace):
            raise HubError(403, f"You don't have the rights to write to the {repo_type} repo {repo_id}")
        return repo

    @staticmethod
    def _lfs_patterns(files: dict[str, Blob]) -> list[str]:
        blob = files.get(".gitattributes")
        return _gitattributes_lfs_patterns((blob.content or b"").decode(errors="replace")) if blob else []

    @staticmethod
    def _upload_mode(path: str, size: int, sample: bytes, patterns: list[str]) -> str:
        if size == 0:
            return "regular"
        if size >= LFS_SIZE_THRESHOLD or _is_binary(sample):
            return "lfs"
        return "lfs" if any(_matches_gitattributes(path, p) for p in patterns) else "regular"

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{_URL_PREFIXES[repo_type]}{repo_id}"

    def _sign(self, kind: str, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{kind}:{oid}:{size}".encode(), hashlib.sha256).hexdigest()[:40]

    def _signed_url(self, path: str, kind: str, oid: str, size: int) -> str:
        return f"{self.cdn_endpoint}{path}?size={size}&sig={self._sign(kind, oid, size)}"

    # ------------------------------------------------------------------------------------------ dispatch

    def _handle(self, req: _Request) -> _Response:
        try:
            with self._lock:
                resp = self._route_cdn(req) if req.role == "cdn" else self._route_api(req)
        except HubError as err:
            resp = _error_response(err)
        except _UnknownRoute:
            req.known = False
            resp = _json_response(404, {"error": "Sorry, we can't find the page you are looking for."})
        except Exception as exc:  # a bug in the fake: answer 500 and keep the traceback for the test to show
            with self._lock:
                self.server_errors.append(f"{req.method} {req.raw_path}\n{traceback.format_exc()}")
            resp = _json_response(500, {"error": f"fake hub internal error: {exc!r}"})
        self._record(req, resp.status)
        return resp

    def _take_fault(self, kind: str) -> UploadFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in (kind, "any"):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def _append_record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _record(self, req: _Request, status: int) -> None:
        path = req.route
        if path is None:  # not routed (unknown route, or refused first): normalise the path itself
            path = unquote(req.raw_path)
            if req.repo_id:
                path = path.replace(req.repo_id, "{repo}", 1)
            path = _SHA1_RE.sub("{sha}", _SHA256_RE.sub("{oid}", path))
        endpoint = f"{req.method} {'cdn:' if req.role == 'cdn' else ''}{path}"
        record = RecordedRequest(
            req.method, req.role, req.raw_path, req.authorization is not None, status, endpoint, req.known
        )
        self._append_record(record)

    def _authenticate(self, req: _Request) -> str | None:
        header = req.authorization
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        user = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _route_api(self, req: _Request) -> _Response:
        user = self._authenticate(req)
        path, method = req.raw_path, req.method
        fixed = {
            ("GET", "/api/whoami-v2"): self._whoami,
            ("POST", "/api/repos/create"): self._create_repo_endpoint,
            ("DELETE", "/api/repos/delete"): self._delete_repo_endpoint,
            ("POST", "/api/repos/delete"): self._delete_repo_endpoint,
            ("POST", "/api/validate-yaml"): self._validate_yaml,
            ("POST", "/lfs-verify"): self._lfs_verify,
        }
        if (method, path) in fixed:
            req.route = path
            return fixed[(method, path)](req, user)

        segments = path.split("/")[1:]
        if len(segments) >= 4 and segments[0] == "api" and segments[1] in _API_TYPES:
            repo_type = _API_TYPES[segments[1]]
            req.repo_id = f"{unquote(segments[2])}/{unquote(segments[3])}"
            return self._route_repo_api(req, user, repo_type, req.repo_id, segments[1], segments[4:])

        batch = _LFS_BATCH_RE.fullmatch(path)
        if batch and method == "POST":
            repo_type = _API_TYPES[batch.group(1)] if batch.group(1) else "model"
            req.repo_id = f"{unquote(batch.group(2))}/{unquote(batch.group(3))}"
            req.route = f"/{batch.group(1) + '/' if batch.group(1) else ''}{{repo}}.git/info/lfs/objects/batch"
            return self._lfs_batch(req, user, repo_type, req.repo_id)

        repo_type, prefix = "model", ""
        if segments and segments[0] in ("datasets", "spaces"):
            repo_type, prefix, segments = _API_TYPES[segments[0]], f"{segments[0]}/", segments[1:]
        if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            req.repo_id = f"{unquote(segments[0])}/{unquote(segments[1])}"
            revision, rest = _split_revision(segments[3:])
            if rest:
                filename = "/".join(map(unquote, rest))
                req.route = f"/{prefix}{{repo}}/resolve/{{rev}}/{filename}"
                return self._resolve_file(req, user, repo_type, req.repo_id, revision, filename)
        raise _UnknownRoute

    def _route_repo_api(
        self, req: _Request, user: str | None, repo_type: str, repo_id: str, api_type: str, rest: list[str]
    ) -> _Response:
        method, base = req.method, f"/api/{api_type}/{{repo}}"
        if rest in ([], [""]) and method == "GET":
            req.route = base
            return self._repo_info(req, user, repo_type, repo_id, None)
        action, tail = rest[0], rest[1:]
        if action == "refs" and not tail and method == "GET":
            req.route = f"{base}/refs"
            return self._refs(req, user, repo_type, repo_id)
        if action == "branch" and tail and method in ("POST", "DELETE"):
            req.route = f"{base}/branch/{{branch}}"
            return self._branch(req, user, repo_type, repo_id, unquote("/".join(tail)))
        if not tail:
            raise _UnknownRoute
        revision, extra = _split_revision(tail)
        extra_path = "/".join(unquote(s) for s in extra)
        handlers = {
            ("GET", "revision"): lambda: self._repo_info(req, user, repo_type, repo_id, revision),
            ("GET", "tree"): lambda: self._tree(req, user, repo_type, repo_id, revision, extra_path),
            ("GET", "commits"): lambda: self._list_commits(req, user, repo_type, repo_id, revision),
            ("POST", "preupload"): lambda: self._preupload(req, user, repo_type, repo_id, revision),
            ("POST", "commit"): lambda: self._commit(req, user, repo_type, repo_id, revision),
            ("POST", "paths-info"): lambda: self._paths_info(req, user, repo_type, repo_id, revision),
        }
        handler = handlers.get((method, action))
        if handler is None or (extra_path and action != "tree"):
            raise _UnknownRoute
        req.route = f"{base}/{action}/{{rev}}" + (f"/{extra_path}" if extra_path else "")
        return handler()

    # ------------------------------------------------------------------------------------------ account / repos

    def _whoami(self, req: _Request, user: str | None) -> _Response:
        if user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": org} for org, members in self._orgs.items() if user in members]
        return _json_response(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
            },
        )

    def _create_repo_endpoint(self, req: _Request, user: str | None) -> _Response:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = req.json() or {}
        name, organization = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type!r}")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        namespace = organization or user
        if not self._can_write(user, namespace):
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        repo_id = f"{namespace}/{name}"
        req.repo_id = repo_id
        url = self._repo_url(repo_type, repo_id)
        if (repo_type, repo_id) in self._repos:
            raise HubError(
                409,
                f"You already created this {repo_type} repo",
                body={"error": f"You already created this {repo_type} repo", "url": url},
            )
        private = payload.get("visibility") in ("private", "protected") or payload.get("private") is True
        self._create_repo(repo_type, repo_id, user, private)
        return _json_response(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo_endpoint(self, req: _Request, user: str | None) -> _Response:
        payload = req.json() or {}
        name, organization = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        if user is None:
            raise HubError(401, "You must be authenticated to delete a repo")
        repo_id = f"{organization or user}/{name}"
        req.repo_id = repo_id
        repo = self._writable_repo(repo_type, repo_id, user)
        del self._repos[repo.key]
        for oid in [oid for oid, commit in self._commits.items() if commit.repo_key == repo.key]:
            del self._commits[oid]
        return _json_response(200, {})

    def _validate_yaml(self, req: _Request, user: str | None) -> _Response:
        import yaml

        payload = req.json() or {}
        content = payload.get("content")
        errors = []
        if not isinstance(content, str):
            errors.append({"message": '"content" must be a string'})
        elif match := _YAML_BLOCK_RE.search(content):
            try:
                metadata = yaml.safe_load(match.group(2))
            except yaml.YAMLError as e:
                errors.append({"message": f"Invalid YAML in the metadata block: {e}"})
            else:
                if metadata is not None and not isinstance(metadata, dict):
                    errors.append({"message": "The metadata block must be a YAML mapping"})
        return _json_response(400 if errors else 200, {"errors": errors, "warnings": []})

    def _repo_info(
        self, req: _Request, user: str | None, repo_type: str, repo_id: str, revision: str | None
    ) -> _Response:
        repo = self._readable_repo(repo_type, repo_id, user)
        commit = self._commits[self._resolve(repo, revision or DEFAULT_BRANCH)]
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path, "size": blob.size, "blobId": blob.git_oid}
            if blob.lfs_oid:
                sibling["lfs"] = {"sha256": blob.lfs_oid, "size": blob.size, "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(blob.size for blob in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        return _json_response(200, info)

    def _refs(self, req: _Request, user: str | None, repo_type: str, repo_id: str) -> _Response:
        repo = self._readable_repo(repo_type, repo_id, user)
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in repo.branches.items()]
        result: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        if req.flag("include_prs"):
            result["pullRequests"] = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid} for n, oid in repo.pulls.items()
            ]
        return _json_response(200, result)

    def _branch(self, req: _Request, user: str | None, repo_type: str, repo_id: str, branch: str) -> _Response:
        repo = self._writable_repo(repo_type, repo_id, user)
        if req.method == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, f"Branch {branch} not found", code="RevisionNotFound")
            if branch == DEFAULT_BRANCH:
                raise HubError(403, "Cannot delete the default branch")
            del repo.branches[branch]
            return _json_response(200, {})
        if branch.startswith("refs/") or not _BRANCH_RE.fullmatch(branch) or ".." in branch:
            raise HubError(400, f"Invalid branch name: {branch!r}")
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        payload = req.json() or {}
        if payload.get("emptyBranch"):
            raise HubError(400, "emptyBranch is not supported by the fake hub")
        repo.branches[branch] = self._resolve(repo, payload.get("startingPoint") or DEFAULT_BRANCH)
        return _json_response(200, {})

    def _list_commits(self, req: _Request, user: str | None, repo_type: str, repo_id: str, revision: str):
        repo = self._readable_repo(repo_type, repo_id, user)
        oid: str | None = self._resolve(repo, revision)
        out = []
        while oid is not None:
            c = self._commits[oid]
            out.append(
                {
                    "id": c.oid,
                    "title": c.title,
                    "message": c.message,
                    "authors": [{"user": c.author}],
                    "date": _iso(c.date),
                }
            )
            oid = c.parent
        return _json_response(200, out)

    # ------------------------------------------------------------------------------------------ listing / download

    @staticmethod
    def _file_entry(path: str, blob: Blob) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
        if blob.lfs_oid:
            entry["lfs"] = {"oid": blob.lfs_oid, "size": blob.size, "pointerSize": len(blob.pointer)}
        return entry

    @staticmethod
    def _dir_entry(path: str, files: dict[str, Blob]) -> dict[str, Any]:
        inner = "".join(f"{p}{b.git_oid}" for p, b in sorted(files.items()) if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(inner.encode()).hexdigest(), "size": 0, "path": path}

    def _tree(self, req, user, repo_type: str, repo_id: str, revision: str, base: str) -> _Response:
        repo = self._readable_repo(repo_type, repo_id, user)
        commit_oid = self._resolve(repo, revision)
        files = self._commits[commit_oid].files
        prefix = f"{base.strip('/')}/" if base.strip("/") else ""
        recursive = req.flag("recursive")
        dirs: set[str] = set()
        entries = []
        for path, blob in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            if recursive or len(parts) == 1:
                entries.append(self._file_entry(path, blob))
            dirs.update(prefix + "/".join(parts[:i]) for i in range(1, len(parts) if recursive else min(len(parts), 2)))
        if prefix and not entries and not dirs:
            raise HubError(
                404, f"{base} does not exist on {revision}", code="EntryNotFound", headers={"X-Repo-Commit": commit_oid}
            )
        entries += [self._dir_entry(d, files) for d in dirs]
        entries.sort(key=lambda e: e["path"])
        return _json_response(200, entries)

    def _paths_info(self, req, user, repo_type: str, repo_id: str, revision: str) -> _Response:
        repo = self._readable_repo(repo_type, repo_id, user)
        files = self._commits[self._resolve(repo, revision)].files
        form = parse_qs(req.body.decode(), keep_blank_values=True)
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in files:
                out.append(self._file_entry(path, files[path]))
            elif any(p.startswith(path + "/") for p in files):
                out.append(self._dir_entry(path, files))
        return _json_response(200, out)

    def _resolve_file(self, req, user, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        repo = self._readable_repo(repo_type, repo_id, user)
        commit_oid = self._resolve(repo, revision)
        blob = self._commits[commit_oid].files.get(path)
        if blob is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit_oid})
        headers = {"X-Repo-Commit": commit_oid, "ETag": f'"{blob.git_oid}"', "Accept-Ranges": "bytes"}
        if blob.lfs_oid:
            location = self._signed_url(f"/lfs-cdn/{blob.lfs_oid}", "download", blob.lfs_oid, blob.size)
            headers.update(
                {
                    "Location": location,
                    "X-Linked-Etag": f'"{blob.lfs_oid}"',
                    "X-Linked-Size": str(blob.size),
                    "Content-Type": "text/plain; charset=utf-8",
                }
            )
            return _Response(302, b"", headers)
        headers["Content-Type"] = "application/octet-stream"
        return self._ranged(req, blob.content or b"", headers)

    @staticmethod
    def _ranged(req: _Request, data: bytes, headers: dict[str, str]) -> _Response:
        spec = req.headers.get("Range")
        if not spec:
            return _Response(200, data, headers)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
        if not match or match.groups() == ("", ""):
            return _Response(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
        start_s, end_s = match.groups()
        if start_s:
            start, end = int(start_s), min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
        else:
            start, end = max(len(data) - int(end_s), 0), len(data) - 1
        if start >= len(data) or start > end:
            return _Response(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
        return _Response(206, data[start : end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})

    # ------------------------------------------------------------------------------------------ upload

    def _preupload(self, req, user, repo_type: str, repo_id: str, revision: str) -> _Response:
        repo = self._writable_repo(repo_type, repo_id, user)
        commit_oid = self._resolve(repo, revision)
        files = self._commits[commit_oid].files
        patterns = self._lfs_patterns(files)
        payload = req.json() or {}
        if not isinstance(payload.get("files"), list):
            raise HubError(400, '"files" must be a list')
        out = []
        for item in payload["files"]:
            path, size = _clean_path(item.get("path")), item.get("size")
            if not isinstance(size, int) or size < 0:
                raise HubError(400, f"Invalid size for {path}")
            try:
                sample = base64.b64decode(item.get("sample") or "", validate=True)
            except ValueError as e:
                raise HubError(400, f"Invalid sample for {path}") from e
            remote = files.get(path)
            oid = None if remote is None else remote.lfs_oid or remote.git_oid
            mode = self._upload_mode(path, size, sample, patterns)
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json_response(200, {"files": out, "commitOid": commit_oid})

    def _lfs_batch(self, req: _Request, user: str | None, repo_type: str, repo_id: str) -> _Response:
        payload = req.json() or {}
        operation = payload.get("operation")
        if operation == "upload":
            self._writable_repo(repo_type, repo_id, user)
        elif operation == "download":
            self._readable_repo(repo_type, repo_id, user)
        else:
            raise HubError(422, f"Invalid LFS operation: {operation!r}")
        if payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(422, "Only sha256 is supported")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise HubError(422, '"objects" must be a list')
        out = []
        for obj in objects:
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid) or not isinstance(size, int) or size < 0:
                out.append(
                    {
                        "oid": str(oid),
                        "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "Invalid object"},
                    }
                )
                continue
            stored = self._lfs.get(oid)
            if operation == "download":
                if stored is None or len(stored) != size:
                    out.append({"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}})
                else:
                    href = self._signed_url(f"/lfs-cdn/{oid}", "download", oid, size)
                    out.append({"oid": oid, "size": size, "actions": {"download": {"href": href}}})
            elif stored is not None and len(stored) == size:
                out.append({"oid": oid, "size": size})  # already stored: no actions, the client skips the upload
            else:
                upload: dict[str, Any] = {"href": self._signed_url(f"/lfs-upload/{oid}", "upload", oid, size)}
                chunk = self.multipart_chunk_size
                if chunk and size > chunk:
                    header = {"chunk_size": str(chunk)}
                    for n in range(1, -(-size // chunk) + 1):
                        header[f"{n:05d}"] = self._signed_url(f"/lfs-upload/{oid}/part/{n}", "part", oid, size)
                    upload["header"] = header
                verify = {"href": f"{self.endpoint}/lfs-verify", "header": {}}
                out.append({"oid": oid, "size": size, "actions": {"upload": upload, "verify": verify}})
        return _json_response(200, {"objects": out, "hash_algo": "sha256"}, content_type="application/vnd.git-lfs+json")

    def _lfs_verify(self, req: _Request, user: str | None) -> _Response:
        if user is None:
            raise HubError(401, "You must be authenticated to verify an LFS upload")
        payload = req.json() or {}
        oid, size = payload.get("oid"), payload.get("size")
        stored = self._lfs.get(oid) if isinstance(oid, str) else None
        if stored is None:
            raise HubError(404, f"LFS object {oid} was not uploaded")
        if len(stored) != size:
            raise HubError(422, f"LFS object {oid} has size {len(stored)}, not {size}")
        return _json_response(200, {"success": True})

    def _commit(self, req: _Request, user: str | None, repo_type: str, repo_id: str, revision: str) -> _Response:
        repo = self._writable_repo(repo_type, repo_id, user)
        assert user is not None
        pr = _PR_REF_RE.fullmatch(revision)
        branch = revision[len("refs/heads/") :] if revision.startswith("refs/heads/") else revision
        if pr is None and branch not in repo.branches:
            # A commit id or an unknown branch: the Hub commits to branches (and PR refs) only.
            self._resolve(repo, revision)  # 404 RevisionNotFound when unknown
            raise HubError(400, f"Cannot commit to {revision}: not a branch")
        head = self._resolve(repo, revision)
        try:
            lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        except ValueError as e:
            raise HubError(400, f"Invalid NDJSON body: {e}") from e
        if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0].get("value") or {}
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, "The commit summary must be a non-empty string")
        parent = header.get("parentCommit")
        if parent is not None and parent != head:
            raise HubError(412, f"Parent commit {parent} is not the head of {revision} ({head})")

        files = dict(self._commits[head].files)
        for line in lines[1:]:
            key, value = (line.get("key"), line.get("value") or {}) if isinstance(line, dict) else (None, {})
            if key == "file":
                path = _clean_path(value.get("path"))
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')!r}")
                try:
                    data = base64.b64decode(value.get("content") or "", validate=True)
                except ValueError as e:
                    raise HubError(400, f"Invalid base64 content for {path}") from e
                if len(data) >= LFS_SIZE_THRESHOLD or _is_binary(data):
                    raise HubError(400, f"Your push was rejected: {path} is binary or >= 10MiB and must use LFS")
                files[path] = Blob(len(data), content=data)
            elif key == "lfsFile":
                path, oid = _clean_path(value.get("path")), value.get("oid")
                if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or oid not in self._lfs:
                    raise HubError(400, f"LFS object {oid} for {path} was never uploaded")
                size = len(self._lfs[oid])
                if value.get("size") is not None and value["size"] != size:
                    raise HubError(400, f"LFS object {oid} has size {size}, not {value['size']}")
                files[path] = Blob(size, lfs_oid=oid)
            elif key == "deletedFile":
                path = _clean_path(value.get("path"))
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
            elif key == "deletedFolder":
                folder = _clean_path(str(value.get("path", "")).rstrip("/"))
                removed = [p for p in files if p.startswith(folder + "/")]
                if not removed:
                    raise HubError(404, f"A folder with this name doesn't exist: {folder}", code="EntryNotFound")
                for p in removed:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation: {key!r}")
        for path in files:
            parents = path.split("/")[:-1]
            if any("/".join(parents[:i]) in files for i in range(1, len(parents) + 1)):
                raise HubError(400, f"{path} conflicts with a file of the same name as one of its folders")

        commit = self._new_commit(repo, head, files, summary, header.get("description") or "", user)
        result: dict[str, Any] = {"success": True, "commitOid": commit.oid}
        base_url = self._repo_url(repo_type, repo_id)
        if req.flag("create_pr"):
            number = repo.next_discussion
            repo.next_discussion += 1
            repo.pulls[number] = commit.oid
            result["pullRequestUrl"] = f"{base_url}/discussions/{number}"
        elif pr is not None:
            repo.pulls[int(pr.group(1))] = commit.oid
        else:
            repo.branches[branch] = commit.oid
        result["commitUrl"] = f"{base_url}/commit/{commit.oid}"
        return _json_response(200, result)

    # ------------------------------------------------------------------------------------------ CDN

    def _route_cdn(self, req: _Request) -> _Response:
        if req.authorization is not None:
            raise HubError(403, "The CDN must not receive an Authorization header")
        segments = req.raw_path.split("/")[1:]
        if len(segments) == 2 and segments[0] == "lfs-cdn" and req.method in ("GET", "HEAD"):
            req.route, oid = "/lfs-cdn/{oid}", segments[1]
            self._check_signature(req, "download", oid)
            data = self._lfs.get(oid)
            if data is None:
                raise HubError(404, "No such object")
            headers = {"ETag": f'"{oid}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            return self._ranged(req, data, headers)
        if len(segments) == 2 and segments[0] == "lfs-upload" and req.method in ("PUT", "POST"):
            req.route, oid = "/lfs-upload/{oid}", segments[1]
            size = self._check_signature(req, "upload", oid)
            # A PUT is a basic upload, a POST completes a multipart upload.
            data = req.body if req.method == "PUT" else self._assemble_parts(req, oid)
            if len(data) != size:
                raise HubError(400, f"Size mismatch: got {len(data)} bytes, expected {size}")
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, "sha256 mismatch: the uploaded content does not match the object id")
            self._lfs[oid] = data
            return _Response(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})
        if len(segments) == 4 and segments[0] == "lfs-upload" and segments[2] == "part" and req.method == "PUT":
            req.route, oid = "/lfs-upload/{oid}/part/{n}", segments[1]
            self._check_signature(req, "part", oid)
            if not segments[3].isdigit() or int(segments[3]) < 1:
                raise HubError(400, "Invalid part number")
            self._parts.setdefault(oid, {})[int(segments[3])] = req.body
            return _Response(200, b"", {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})
        raise _UnknownRoute

    def _check_signature(self, req: _Request, kind: str, oid: str) -> int:
        size_s, sig = req.param("size", ""), req.param("sig", "")
        if not _SHA256_RE.fullmatch(oid) or not size_s or not size_s.isdigit():
            raise HubError(403, "Invalid signed URL")
        if not hmac.compare_digest(sig or "", self._sign(kind, oid, int(size_s))):
            raise HubError(403, "Signature mismatch")
        return int(size_s)

    def _assemble_parts(self, req: _Request, oid: str) -> bytes:
        payload = req.json() or {}
        parts = payload.get("parts")
        stored = self._parts.get(oid, {})
        if payload.get("oid") != oid or not isinstance(parts, list) or not parts:
            raise HubError(400, "Invalid multipart completion payload")
        numbers = [p.get("partNumber") for p in parts]
        if numbers != list(range(1, len(parts) + 1)) or set(stored) != set(numbers):
            raise HubError(400, f"Parts {numbers} do not match the uploaded parts {sorted(stored)}")
        for part in parts:
            if part.get("etag") != f'"{hashlib.md5(stored[part["partNumber"]]).hexdigest()}"':
                raise HubError(400, f"ETag mismatch for part {part['partNumber']}")
        self._parts.pop(oid, None)
        return b"".join(stored[n] for n in numbers)


# ---------------------------------------------------------------------------------------------------------- pytest


@contextmanager
def hub_client(env: dict[str, str]) -> Iterator[None]:
    """Point THIS process's huggingface_hub client at the server for the duration of the block.

    The client reads its settings once at import: `huggingface_hub.constants` from the environment, and the shared
    `HfApi` behind its module-level functions (`create_repo`, `upload_folder`, ... which transformers' `push_to_hub`
    calls) keeps the endpoint of that moment. This puts `env` (from `client_env`) into os.environ, re-reads the
    constants, re-points the shared `HfApi`, and restores all three on exit. Token variables absent from `env` are
    removed meanwhile, so `client_env(token=None)` really has no token. Process-wide state: not for threads.
    """
    from huggingface_hub import constants, hf_api

    saved_environ, saved_constants = dict(os.environ), dict(vars(constants))
    shared = hf_api.api
    saved_endpoint = shared.endpoint
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        if name not in env:
            os.environ.pop(name, None)
    os.environ.update(env)
    importlib.reload(constants)
    shared.endpoint = constants.ENDPOINT
    shared._whoami_cache.clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        vars(constants).update(saved_constants)
        shared.endpoint = saved_endpoint
        shared._whoami_cache.clear()


class RecordText(logging.Handler):
    """The messages of the log records that reach it."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def records_of(*loggers: str) -> Iterator[RecordText]:
    """The records reaching `loggers` ("" is the root) while the block runs. transformers' records do not propagate
    to the root (its own handler prints them), so watch its logger too."""
    handler = RecordText()
    for name in loggers:
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in loggers:
            logging.getLogger(name).removeHandler(handler)


class ShownOutput:
    """capfd for a test that may read it (`readouterr`, capsys-like), keeping everything read for a final check."""

    def __init__(self, capfd) -> None:
        self._capfd, self.seen = capfd, []

    def readouterr(self):
        captured = self._capfd.readouterr()
        self.seen += [captured.out, captured.err]
        return captured


def never_shows(token: str):
    """An autouse fixture for a module whose tests push in-process: after each test, nothing it printed (through any
    file descriptor) or logged (records reaching the root or transformers' logger) contains `token`. Its value is a
    `ShownOutput`, for tests that read their output. Use: `shown = never_shows(TOKEN)` at module level."""

    @pytest.fixture(autouse=True)
    def shown(capfd) -> Iterator[ShownOutput]:
        output = ShownOutput(capfd)
        with records_of("", "transformers") as logged:
            yield output
        output.readouterr()
        assert token not in "".join(output.seen + logged.messages)

    return shown


def run_hub_client(code: str, env: dict[str, str], *, timeout: float = 120) -> Any:
    """Run `code` in a fresh interpreter with `env` merged over os.environ; return its last stdout line as JSON.

    Fails the calling test with the subprocess's stderr if it exits non-zero.
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    if result.returncode != 0:
        pytest.fail(f"client subprocess failed (rc={result.returncode}):\n{result.stderr[-6000:]}")
    lines = result.stdout.strip().splitlines()
    assert lines, f"client subprocess printed nothing; stderr:\n{result.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="session")
def fake_hub():
    """A FakeHub shared by the session (tokens "hf_test_token" -> tester, "hf_other" -> intruder).

    Give each test its own repo name; use `hub.clear_requests()` / `hub.requests` to look at one flow.
    """
    with FakeHub() as hub:
        yield hub


@pytest.fixture
def hub_env(fake_hub, tmp_path) -> dict[str, str]:
    """`fake_hub.client_env()` for "tester" with a fresh HF_HOME under tmp_path."""
    return fake_hub.client_env(hf_home=tmp_path / "hf_home")

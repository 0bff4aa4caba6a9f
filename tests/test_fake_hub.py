"""The fake Hub of tests/fake_hub.py against the real huggingface_hub client.

The client reads HF_ENDPOINT when it is imported, so every client flow runs in a fresh interpreter with
`fake_hub.client_env(...)` and prints one JSON line for the test to check. The server's own state and request log
are then inspected directly. Protocol details the client cannot be made to get wrong (a tampered LFS upload, the
token reaching the CDN, HEAD framing) are exercised over raw HTTP.
"""

import base64
import hashlib
import http.client
import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import fake_hub as fh
import pytest
from fake_hub import DEFAULT_GITATTRIBUTES, FakeHub, git_blob_sha1, run_hub_client

fake_hub = fh.fake_hub  # the session-scoped server fixture
hub_env = fh.hub_env

UPLOAD_ENDPOINTS = {
    "POST /api/repos/create",
    "POST /api/validate-yaml",
    "POST /api/models/{repo}/preupload/{rev}",
    "POST /{repo}.git/info/lfs/objects/batch",
    "PUT cdn:/lfs-upload/{oid}",
    "POST /lfs-verify",
    "POST /api/models/{repo}/commit/{rev}",
}

# Runs in the client subprocesses: call fn, describe the exception it raised (class hierarchy and HTTP status).
CATCH = """
def catch(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:
        response = getattr(e, "response", None)
        return {"mro": [c.__name__ for c in type(e).__mro__], "status": getattr(response, "status_code", None)}
    return None
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def raw_request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """One raw request: (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def folder_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_clean_log(hub: FakeHub) -> None:
    """No route the fake lacks was called, the fake did not crash, and the token never reached the CDN."""
    assert [r.endpoint for r in hub.requests if not r.known] == []
    assert hub.server_errors == []
    assert [r.endpoint for r in hub.requests if r.port == "cdn" and r.authorized] == []


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A model folder: a card with YAML, text files (one in a subfolder), a .safetensors (LFS by pattern) and an
    11 MiB text file without NUL bytes (LFS by size only)."""
    root = tmp_path_factory.mktemp("upload")
    (root / "README.md").write_text("---\nlicense: apache-2.0\ntags:\n- test\n---\n# A tiny model\n")
    (root / "config.json").write_text(json.dumps({"hidden_size": 32, "model_type": "demo"}))
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("a note in a subfolder\n")
    header = json.dumps({"w": {"dtype": "U8", "shape": [256], "data_offsets": [0, 256]}}).encode()
    (root / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(range(256)))
    (root / "sub" / "large.txt").write_bytes(b"0123456789abcdef\n" * (11 * 1024 * 1024 // 17 + 1))
    return root


@pytest.fixture(scope="module")
def uploaded(fake_hub, folder, tmp_path_factory) -> dict:
    """create_repo (plain, exist_ok, conflict) and upload_folder through the real client; the flow's request log."""
    name = unique("roundtrip")
    fake_hub.clear_requests()
    env = fake_hub.client_env(hf_home=tmp_path_factory.mktemp("hf_upload"))
    out = run_hub_client(
        CATCH
        + f"""
import json
from huggingface_hub import HfApi
api = HfApi()
url = api.create_repo({name!r})
again = api.create_repo({name!r}, exist_ok=True)
conflict = catch(api.create_repo, {name!r})
info = api.upload_folder(repo_id=url.repo_id, folder_path={str(folder)!r}, commit_message="Upload the model")
print(json.dumps({{"url": str(url), "repo_id": url.repo_id, "again": str(again), "conflict": conflict,
                  "oid": info.oid, "commit_url": info.commit_url}}))
""",
        env,
    )
    return {**out, "requests": fake_hub.requests}


def test_create_repo_and_upload_folder(fake_hub, uploaded, folder):
    repo_id = uploaded["repo_id"]
    assert repo_id.startswith("tester/roundtrip-")  # namespace defaulted to the token's user
    assert uploaded["url"] == uploaded["again"] == f"{fake_hub.endpoint}/{repo_id}"  # exist_ok reads the 409's url
    assert uploaded["conflict"]["status"] == 409 and "HfHubHTTPError" in uploaded["conflict"]["mro"]
    assert uploaded["commit_url"] == f"{fake_hub.endpoint}/{repo_id}/commit/{uploaded['oid']}"

    assert fake_hub.head(repo_id) == uploaded["oid"]
    assert fake_hub.files(repo_id) == {**folder_files(folder), ".gitattributes": DEFAULT_GITATTRIBUTES.encode()}
    lfs = {path for path, blob in fake_hub.tree(repo_id).items() if blob.is_lfs}
    assert lfs == {"model.safetensors", "sub/large.txt"}  # by .gitattributes pattern, and by size
    history = fake_hub.commits(repo_id)
    assert [c.title for c in history] == ["Upload the model", "initial commit"]
    assert history[0].author == "tester" and history[0].parent == history[1].oid


def test_upload_flow_request_log(uploaded):
    requests = uploaded["requests"]
    endpoints = {r.endpoint for r in requests}
    assert endpoints >= UPLOAD_ENDPOINTS, UPLOAD_ENDPOINTS - endpoints
    assert [r.endpoint for r in requests if not r.known] == []
    # Two LFS objects were PUT to the CDN without the token; everything on the API port carried it.
    cdn_puts = [r for r in requests if r.endpoint == "PUT cdn:/lfs-upload/{oid}"]
    assert len(cdn_puts) == 2 and not any(r.authorized for r in cdn_puts) and all(r.status == 200 for r in cdn_puts)
    assert all(r.authorized for r in requests if r.port == "api")
    statuses = {r.endpoint: r.status for r in requests}
    assert statuses["POST /api/models/{repo}/commit/{rev}"] == 200


def test_snapshot_download_is_byte_equal_and_lfs_comes_from_the_cdn_without_token(fake_hub, uploaded, folder, tmp_path):
    repo_id = uploaded["repo_id"]
    fake_hub.clear_requests()
    out = run_hub_client(
        f"""
import json
from huggingface_hub import snapshot_download
print(json.dumps({{"path": snapshot_download({repo_id!r})}}))
""",
        fake_hub.client_env(hf_home=tmp_path / "fresh"),
    )
    snapshot = Path(out["path"])
    assert snapshot.is_relative_to(tmp_path / "fresh") and snapshot.name == uploaded["oid"]
    assert folder_files(snapshot) == {**folder_files(folder), ".gitattributes": DEFAULT_GITATTRIBUTES.encode()}

    assert_clean_log(fake_hub)
    requests = fake_hub.requests
    safetensors_oid = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    head = [r for r in requests if r.method == "HEAD" and r.path.endswith("/model.safetensors")]
    assert [(r.port, r.status, r.authorized) for r in head] == [("api", 302, True)]
    cdn_get = [r for r in requests if r.port == "cdn" and r.path == f"/lfs-cdn/{safetensors_oid}"]
    assert [(r.method, r.status, r.authorized) for r in cdn_get] == [("GET", 200, False)]
    # The regular files came from the API port itself.
    assert any(
        r.method == "GET" and r.path.endswith("/resolve/" + uploaded["oid"] + "/sub/notes.txt") for r in requests
    )


def test_reuploading_the_unchanged_folder_makes_no_commit(fake_hub, uploaded, folder, tmp_path):
    repo_id = uploaded["repo_id"]
    commits_before = len(fake_hub.commits(repo_id))
    fake_hub.clear_requests()
    out = run_hub_client(
        f"""
import json
from huggingface_hub import HfApi
info = HfApi().upload_folder(repo_id={repo_id!r}, folder_path={str(folder)!r})
print(json.dumps({{"oid": info.oid}}))
""",
        fake_hub.client_env(hf_home=tmp_path / "hf"),
    )
    assert out["oid"] == uploaded["oid"] == fake_hub.head(repo_id)
    assert len(fake_hub.commits(repo_id)) == commits_before
    endpoints = fake_hub.endpoints_used()
    # preupload's remote oids make every file a no-op, so nothing is committed. The client still asks the LFS batch
    # endpoint about the LFS files, and the server answers without actions because it already has the objects.
    assert endpoints == {
        "POST /api/validate-yaml",
        "POST /api/models/{repo}/preupload/{rev}",
        "POST /{repo}.git/info/lfs/objects/batch",
        "GET /api/models/{repo}/revision/{rev}",  # the client's repo_info for the sha of the no-op commit
    }
    assert_clean_log(fake_hub)


def test_branch_and_pull_request(fake_hub, tmp_path):
    repo_id = f"tester/{unique('branches')}"
    main_head = fake_hub.create_repo(repo_id, files={"config.json": b'{"v": 1}'})
    out = run_hub_client(
        CATCH
        + f"""
import json
from pathlib import Path
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
api, repo = HfApi(), {repo_id!r}
api.create_branch(repo, branch="v2")
api.upload_file(path_or_fileobj=b'{{"v": 2}}', path_in_repo="config.json", repo_id=repo, revision="v2")
v2 = Path(hf_hub_download(repo, "config.json", revision="v2")).read_text()
main = Path(hf_hub_download(repo, "config.json")).read_text()
pr = api.create_commit(repo, operations=[CommitOperationAdd("pr.txt", b"proposed")], commit_message="Propose",
                       create_pr=True)
in_pr = Path(hf_hub_download(repo, "pr.txt", revision=pr.pr_revision)).read_text()
refs = api.list_repo_refs(repo, include_pull_requests=True)
stale = catch(api.create_commit, repo, operations=[CommitOperationAdd("x.txt", b"x")], commit_message="stale",
              parent_commit="0" * 40)
print(json.dumps({{"v2": v2, "main": main, "pr_url": pr.pr_url, "pr_revision": pr.pr_revision, "in_pr": in_pr,
                  "branches": sorted(b.name for b in refs.branches), "prs": [p.name for p in refs.pull_requests],
                  "stale": stale}}))
""",
        fake_hub.client_env(hf_home=tmp_path / "hf"),
    )
    assert out["v2"] == '{"v": 2}' and out["main"] == '{"v": 1}'
    assert out["pr_url"] == f"{fake_hub.endpoint}/{repo_id}/discussions/1" and out["pr_revision"] == "refs/pr/1"
    assert out["in_pr"] == "proposed"
    assert out["branches"] == ["main", "v2"] and out["prs"] == ["refs/pr/1"]
    assert out["stale"]["status"] == 412  # parentCommit is not the head of main

    assert fake_hub.head(repo_id) == main_head  # main untouched by the branch, the PR and the stale commit
    assert fake_hub.files(repo_id)["config.json"] == b'{"v": 1}' and "pr.txt" not in fake_hub.files(repo_id)
    assert fake_hub.commits(repo_id, "v2")[1].oid == main_head
    assert fake_hub.commits(repo_id, "refs/pr/1")[1].oid == main_head
    assert_clean_log(fake_hub)


def test_typed_errors_for_missing_file_repo_revision_and_bad_card(fake_hub, tmp_path):
    repo_id = f"tester/{unique('errors')}"
    fake_hub.create_repo(repo_id, files={"config.json": b"{}", "sub/a.txt": b"a"})
    private_id = f"tester/{unique('mine')}"
    fake_hub.create_repo(private_id, private=True, files={"config.json": b"{}"})
    out = run_hub_client(
        CATCH
        + f"""
import json
from huggingface_hub import HfApi, hf_hub_download
api, repo = HfApi(), {repo_id!r}
print(json.dumps({{
    "missing_file": catch(hf_hub_download, repo, "missing.json"),
    "missing_repo": catch(hf_hub_download, "tester/no-such-repo", "config.json"),
    "missing_revision": catch(hf_hub_download, repo, "config.json", revision="no-such-branch"),
    "info_missing_revision": catch(api.model_info, repo, revision="no-such-branch"),
    "tree_missing_path": catch(lambda: list(api.list_repo_tree(repo, path_in_repo="nope"))),
    "tree_sub": sorted(f.path for f in api.list_repo_tree(repo, path_in_repo="sub")),
    "bad_card": catch(api.upload_file, path_or_fileobj=b"---\\nlicense: [unclosed\\n---\\n", path_in_repo="README.md",
                      repo_id=repo),
    "own_private": api.model_info({private_id!r}).private,
}}))
""",
        fake_hub.client_env(hf_home=tmp_path / "hf"),
    )
    assert "RemoteEntryNotFoundError" in out["missing_file"]["mro"] and out["missing_file"]["status"] == 404
    assert "RepositoryNotFoundError" in out["missing_repo"]["mro"] and out["missing_repo"]["status"] == 404
    assert "RevisionNotFoundError" in out["missing_revision"]["mro"]
    assert "RevisionNotFoundError" in out["info_missing_revision"]["mro"]
    assert "RemoteEntryNotFoundError" in out["tree_missing_path"]["mro"]
    assert out["tree_sub"] == ["sub/a.txt"]
    assert out["bad_card"]["mro"][0] == "ValueError"  # validate-yaml answered 400 with errors
    assert out["own_private"] is True
    assert "README.md" not in fake_hub.files(repo_id)
    assert_clean_log(fake_hub)


def test_writes_need_the_owners_token_and_private_repos_are_invisible(fake_hub, tmp_path):
    public_id = f"tester/{unique('public')}"
    head = fake_hub.create_repo(public_id, files={"config.json": b'{"v": 1}'})
    private_id = f"tester/{unique('private')}"
    private_head = fake_hub.create_repo(private_id, private=True, files={"config.json": b'{"secret": 1}'})
    anon_name, evil_name = unique("anon"), unique("evil")
    checks = f"""
import json
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, model_info
api, public, private = HfApi(), {public_id!r}, {private_id!r}
result = {{
    "upload": catch(api.upload_file, path_or_fileobj=b"x", path_in_repo="hack.txt", repo_id=public),
    "branch": catch(api.create_branch, public, branch="evil"),
    "delete": catch(api.delete_repo, public),
    "private_info": catch(api.model_info, private),
    "private_download": catch(hf_hub_download, private, "config.json"),
    "public_read": Path(hf_hub_download(public, "config.json")).read_text(),
}}
"""
    anonymous = run_hub_client(
        CATCH
        + checks
        + f"""
result["create"] = catch(api.create_repo, {anon_name!r})
result["bad_token"] = catch(model_info, public, token="hf_not_a_token")
print(json.dumps(result))
""",
        fake_hub.client_env(token=None, hf_home=tmp_path / "anon"),
    )
    intruder = run_hub_client(
        CATCH
        + checks
        + f"""
result["whoami"] = api.whoami()["name"]
result["create_in_other_namespace"] = catch(api.create_repo, "tester/{evil_name}")
print(json.dumps(result))
""",
        fake_hub.client_env(token="hf_other", hf_home=tmp_path / "intruder"),
    )
    for key in ("upload", "branch", "delete", "create"):
        assert anonymous[key]["status"] == 401, key
    assert anonymous["bad_token"]["status"] == 401
    assert intruder["whoami"] == "intruder"
    for key in ("upload", "branch", "delete", "create_in_other_namespace"):
        assert intruder[key]["status"] == 403 and "HfHubHTTPError" in intruder[key]["mro"], key
    for result in (anonymous, intruder):
        assert "RepositoryNotFoundError" in result["private_info"]["mro"] and result["private_info"]["status"] == 404
        assert "RepositoryNotFoundError" in result["private_download"]["mro"]
        assert result["public_read"] == '{"v": 1}'

    # Nothing changed.
    assert fake_hub.head(public_id) == head and fake_hub.head(private_id) == private_head
    assert [c.title for c in fake_hub.commits(public_id)] == ["Seed files", "initial commit"]
    assert not fake_hub.repo_exists(f"tester/{anon_name}") and not fake_hub.repo_exists(f"tester/{evil_name}")
    assert not fake_hub.repo_exists(f"intruder/{evil_name}")
    status, _, body = raw_request(f"{fake_hub.endpoint}/api/models/{public_id}/refs")
    assert status == 200 and [b["name"] for b in json.loads(body)["branches"]] == ["main"]
    assert_clean_log(fake_hub)


def test_lfs_protocol_is_strict(fake_hub):
    """Tampered, resized, token-carrying and unsigned uploads are refused; only an uploaded object can be committed."""
    repo_id = f"tester/{unique('lfs')}"
    head = fake_hub.create_repo(repo_id)
    auth = {"Authorization": "Bearer hf_test_token"}
    content = b"\x00binary" + bytes(range(256)) * 4
    oid = hashlib.sha256(content).hexdigest()
    lfs_headers = {"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"}
    batch_url = f"{fake_hub.endpoint}/{repo_id}.git/info/lfs/objects/batch"
    batch = json.dumps(
        {
            "operation": "upload",
            "transfers": ["basic"],
            "hash_algo": "sha256",
            "objects": [{"oid": oid, "size": len(content)}],
        }
    ).encode()

    assert raw_request(batch_url, "POST", batch, lfs_headers)[0] == 401
    assert raw_request(batch_url, "POST", batch, {**lfs_headers, "Authorization": "Bearer hf_other"})[0] == 403
    status, _, body = raw_request(batch_url, "POST", batch, {**lfs_headers, **auth})
    assert status == 200
    actions = json.loads(body)["objects"][0]["actions"]
    upload, verify = actions["upload"]["href"], actions["verify"]["href"]
    assert upload.startswith(fake_hub.cdn_endpoint + "/lfs-upload/" + oid)

    def commit() -> int:
        lines = [
            {"key": "header", "value": {"summary": "add blob", "description": ""}},
            {"key": "lfsFile", "value": {"path": "blob.bin", "algo": "sha256", "oid": oid, "size": len(content)}},
        ]
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        headers = {**auth, "Content-Type": "application/x-ndjson"}
        return raw_request(f"{fake_hub.endpoint}/api/models/{repo_id}/commit/main", "POST", body, headers)[0]

    tampered = bytes([content[0] ^ 1]) + content[1:]
    assert raw_request(upload, "PUT", tampered)[0] == 400  # sha256 mismatch
    assert raw_request(upload, "PUT", content + b"!")[0] == 400  # size mismatch
    assert raw_request(upload, "PUT", content, auth)[0] == 403  # the token must never reach the CDN
    assert raw_request(upload.replace("sig=", "sig=0"), "PUT", content)[0] == 403  # not the signed URL
    assert not fake_hub.has_lfs_object(oid)
    assert raw_request(verify, "POST", json.dumps({"oid": oid, "size": len(content)}).encode(), auth)[0] == 404
    assert commit() == 400  # the object was never uploaded
    assert fake_hub.head(repo_id) == head

    assert raw_request(upload, "PUT", content)[0] == 200
    verify_body = json.dumps({"oid": oid, "size": len(content)}).encode()
    assert raw_request(verify, "POST", verify_body)[0] == 401
    assert raw_request(verify, "POST", verify_body, auth)[0] == 200
    assert commit() == 200
    assert fake_hub.files(repo_id)["blob.bin"] == content and fake_hub.tree(repo_id)["blob.bin"].is_lfs
    status, _, body = raw_request(batch_url, "POST", batch, {**lfs_headers, **auth})
    assert status == 200 and "actions" not in json.loads(body)["objects"][0]  # already stored: nothing to upload

    # Regular files that belong in LFS are refused at commit time.
    lines = [
        {"key": "header", "value": {"summary": "binary as regular"}},
        {
            "key": "file",
            "value": {"path": "b.dat", "content": base64.b64encode(content).decode(), "encoding": "base64"},
        },
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    url = f"{fake_hub.endpoint}/api/models/{repo_id}/commit/main"
    assert raw_request(url, "POST", body, {**auth, "Content-Type": "application/x-ndjson"})[0] == 400


def test_http_framing_errors_and_unknown_routes(fake_hub):
    repo_id = f"tester/{unique('framing')}"
    content = b'{"hidden_size": 32}'
    head = fake_hub.create_repo(repo_id, files={"config.json": content})
    parts = urlsplit(fake_hub.endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:  # several requests on one keep-alive connection
        conn.request("HEAD", f"/{repo_id}/resolve/main/config.json")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
        assert resp.headers["Content-Length"] == str(len(content))
        assert resp.headers["ETag"] == f'"{git_blob_sha1(content)}"' and resp.headers["X-Repo-Commit"] == head

        conn.request("GET", f"/{repo_id}/resolve/main/missing.txt")
        resp = conn.getresponse()
        assert resp.status == 404 and json.loads(resp.read())["error"]
        assert resp.headers["X-Error-Code"] == "EntryNotFound" and resp.headers["X-Repo-Commit"] == head

        conn.request("GET", f"/{repo_id}/resolve/{head}/config.json", headers={"Range": "bytes=2-7"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.read() == content[2:8]

        conn.request("GET", f"/api/models/{repo_id}/revision/nope")
        resp = conn.getresponse()
        assert resp.status == 404 and resp.headers["X-Error-Code"] == "RevisionNotFound"
        resp.read()

        conn.request("GET", "/api/models/tester/nothing-here")
        resp = conn.getresponse()
        assert resp.status == 404 and resp.headers["X-Error-Code"] == "RepoNotFound"
        resp.read()

        conn.request("GET", f"/api/models/{repo_id}/xet-read-token/main")
        resp = conn.getresponse()
        assert resp.status == 404 and "X-Error-Code" not in resp.headers
        resp.read()
    finally:
        conn.close()
    unknown = [r for r in fake_hub.requests if not r.known]
    assert [r.endpoint for r in unknown][-1] == "GET /api/models/{repo}/xet-read-token/main"
    fake_hub.clear_requests()


def test_multipart_lfs_upload_and_download(tmp_path):
    with FakeHub(multipart_chunk_size=1024 * 1024) as hub:
        repo_id = "tester/multipart"
        hub.create_repo(repo_id)
        data = bytes(range(256)) * (10 * 1024 + 7)  # 2.5 MiB of binary: LFS, three parts
        (tmp_path / "weights.bin").write_bytes(data)
        out = run_hub_client(
            f"""
import hashlib, json
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download
HfApi().upload_file(path_or_fileobj={str(tmp_path / "weights.bin")!r}, path_in_repo="weights.bin", repo_id={repo_id!r})
path = hf_hub_download({repo_id!r}, "weights.bin", cache_dir={str(tmp_path / "cache")!r})
print(json.dumps({{"sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}}))
""",
            hub.client_env(hf_home=tmp_path / "hf"),
        )
        assert out["sha256"] == hashlib.sha256(data).hexdigest()
        assert hub.files(repo_id)["weights.bin"] == data
        parts = [r for r in hub.requests if r.endpoint == "PUT cdn:/lfs-upload/{oid}/part/{n}"]
        assert sorted(r.path.rsplit("/", 1)[1] for r in parts) == ["1", "2", "3"]
        assert "POST cdn:/lfs-upload/{oid}" in hub.endpoints_used()  # the completion request
        assert_clean_log(hub)

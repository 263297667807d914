"""The fake hub of hub_server.py driven by the real huggingface_hub client: listings, downloads (one file,
snapshots), create_repo + upload_folder, faults, where the token goes. No connection leaves 127.0.0.1 and
the user's HF_HOME (cache, token) is never read: `hub` points huggingface_hub at a scratch one."""

import os
import pathlib
import re

import httpx2
import pytest
from huggingface_hub import (CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download, hf_hub_url, snapshot_download)
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils._runtime import is_xet_available

from hub_server import git_oid

REPO = "o/n"


def put(root, path, body):
    p = pathlib.Path(root) / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(body)


def resolve_path(path, repo=REPO, revision="main"):
    return f"/datasets/{repo}/resolve/{revision}/{path}"


def files_under(folder):
    """{path: bytes} of the files under `folder`, leaving out huggingface_hub's .cache/ bookkeeping."""
    folder = pathlib.Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}


def test_listing_and_info(hub):
    put(hub.root, "o/n/README.md", b"# card")
    put(hub.root, "o/n/data/train-00000.parquet", b"x" * 10)
    put(hub.root, "o/n/data/sub/deep.txt", b"deep")
    api = HfApi(endpoint=hub.url, token="hf_read")

    top = list(api.list_repo_tree(REPO, path_in_repo="data", repo_type="dataset"))
    assert [(type(e).__name__, e.path) for e in top] == [("RepoFolder", "data/sub"),
                                                         ("RepoFile", "data/train-00000.parquet")]
    assert (top[1].size, top[1].blob_id, top[1].lfs, top[1].xet_hash) == (10, git_oid(b"x" * 10), None, None)
    deep = list(api.list_repo_tree(REPO, path_in_repo="data", recursive=True, repo_type="dataset"))
    assert sorted(e.path for e in deep) == ["data/sub", "data/sub/deep.txt", "data/train-00000.parquet"]
    names = ["README.md", "data/sub/deep.txt", "data/train-00000.parquet"]
    assert sorted(api.list_repo_files(REPO, repo_type="dataset")) == names

    info = api.dataset_info(REPO)
    assert info.id == REPO and re.fullmatch("[0-9a-f]{40}", info.sha)
    assert sorted(s.rfilename for s in info.siblings) == names
    assert api.repo_info(REPO, repo_type="dataset").sha == info.sha
    put(hub.root, "o/n/more.txt", b"more")  # a file written behind the server's back is a new commit too
    assert api.dataset_info(REPO).sha != info.sha

    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_files("o/missing", repo_type="dataset")
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(REPO, path_in_repo="nowhere", repo_type="dataset"))
    assert hub.requests[:3] == [("GET", "/api/datasets/o/n/tree/main/data")] * 2 + [
        ("GET", "/api/datasets/o/n/tree/main")]
    assert set(hub.authorizations) == {"Bearer hf_read"}


def test_download_one_file_into_local_dir_and_cache(hub, tmp_path):
    body = os.urandom(50_000)
    put(hub.root, "o/n/data/a.bin", body)
    out = (tmp_path / "out").resolve()
    path = hf_hub_download(REPO, "data/a.bin", repo_type="dataset", local_dir=out, endpoint=hub.url)
    assert path == str(out / "data" / "a.bin") and pathlib.Path(path).read_bytes() == body
    assert hub.requests == [("HEAD", resolve_path("data/a.bin")), ("GET", resolve_path("data/a.bin"))]
    assert hub.authorizations == [None, None]  # no token given, HF_TOKEN unset, no token file in the scratch HF_HOME

    # again: the ETag of the HEAD matches the one kept in out/.cache/huggingface => no GET
    hub.requests.clear()
    assert hf_hub_download(REPO, "data/a.bin", repo_type="dataset", local_dir=out, endpoint=hub.url) == path
    assert hub.requests == [("HEAD", resolve_path("data/a.bin"))]

    # without local_dir: into the scratch cache, as the snapshot of the commit the HEAD announced (X-Repo-Commit)
    hub.authorizations.clear()
    sha = HfApi(endpoint=hub.url).dataset_info(REPO).sha
    cached = hf_hub_download(REPO, "data/a.bin", repo_type="dataset", endpoint=hub.url, token="hf_tok")
    assert cached == os.path.join(constants.HF_HUB_CACHE, "datasets--o--n", "snapshots", sha, "data", "a.bin")
    assert cached.startswith(str(tmp_path / "hf_home")) and pathlib.Path(cached).read_bytes() == body
    assert hub.authorizations == [None, "Bearer hf_tok", "Bearer hf_tok"]  # the token goes on HEAD and GET

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "data/missing.bin", repo_type="dataset", local_dir=out, endpoint=hub.url)


def test_snapshot_download_with_allow_patterns(hub, tmp_path):
    files = {"data/train-00000.parquet": b"t0", "data/train-00001.parquet": b"t1",
             "data/test-00000.parquet": b"e0", "README.md": b"# card"}
    for path, body in files.items():
        put(hub.root, f"o/n/{path}", body)
    out = snapshot_download(REPO, repo_type="dataset", local_dir=tmp_path / "snap", allow_patterns=["data/train-*"],
                            endpoint=hub.url)
    assert out == str((tmp_path / "snap").resolve())
    assert files_under(out) == {k: v for k, v in files.items() if k.startswith("data/train-")}
    # repo_info gives the commit, the listing and the downloads are pinned to it
    sha = HfApi(endpoint=hub.url).dataset_info(REPO).sha
    assert hub.requests[:2] == [("GET", "/api/datasets/o/n/revision/main"), ("GET", f"/api/datasets/o/n/tree/{sha}")]
    assert ("GET", resolve_path("data/train-00001.parquet", revision=sha)) in hub.requests
    assert not any("test-" in path or "README" in path for _, path in hub.requests)

    # into the cache: the snapshot folder of that commit
    snap = snapshot_download(REPO, repo_type="dataset", allow_patterns=["*.md"], endpoint=hub.url)
    assert snap == os.path.join(constants.HF_HUB_CACHE, "datasets--o--n", "snapshots", sha)
    assert files_under(snap) == {"README.md": b"# card"}


def test_create_repo_upload_folder_then_download(hub, tmp_path):
    api = HfApi(endpoint=hub.url, token="hf_write")
    url = api.create_repo("me/out", repo_type="dataset", exist_ok=True)
    assert url.repo_id == "me/out" and url.repo_type == "dataset" and os.path.isdir(os.path.join(hub.root, "me/out"))
    assert api.create_repo("me/out", repo_type="dataset", exist_ok=True) == url  # 409, accepted with exist_ok
    files = {"config.json": b'{"a": 1}', "sft/train_000.bin": os.urandom(300_000), "sft/empty.bin": b"",
             "big.bin": os.urandom(6 << 20)}  # bigger than the Hub would take as a "regular" file: still regular
    for path, body in files.items():
        put(tmp_path / "src", path, body)

    info = api.upload_folder(repo_id="me/out", repo_type="dataset", folder_path=tmp_path / "src",
                             path_in_repo="run1", commit_message="upload run1")
    assert files_under(os.path.join(hub.root, "me/out")) == {f"run1/{k}": v for k, v in files.items()}
    assert info.oid == api.dataset_info("me/out").sha and info.repo_url.repo_id == "me/out"
    # upload path: preupload answers "regular" for all => one NDJSON commit with the files inline, no LFS or xet
    assert [r for r in hub.requests if r[0] == "POST"] == [
        ("POST", "/api/repos/create"), ("POST", "/api/repos/create"),
        ("POST", "/api/datasets/me/out/preupload/main"), ("POST", "/api/datasets/me/out/commit/main")]
    assert set(hub.authorizations) == {"Bearer hf_write"}

    # the same folder again: preupload gives the oids of the files there, nothing changed => no commit
    hub.requests.clear()
    again = api.upload_folder(repo_id="me/out", repo_type="dataset", folder_path=tmp_path / "src",
                              path_in_repo="run1", commit_message="upload run1")
    assert again.oid == info.oid and ("POST", "/api/datasets/me/out/commit/main") not in hub.requests

    # create_commit: additions and deletions in one commit, a new sha
    api.create_commit("me/out", [CommitOperationAdd("notes.txt", b"hi"), CommitOperationDelete("run1/sft/")],
                      commit_message="notes", repo_type="dataset")
    assert sorted(api.list_repo_files("me/out", repo_type="dataset")) == ["notes.txt", "run1/big.bin",
                                                                          "run1/config.json"]
    assert api.dataset_info("me/out").sha != info.oid

    out = snapshot_download("me/out", repo_type="dataset", local_dir=tmp_path / "back", endpoint=hub.url)
    assert files_under(out) == {"notes.txt": b"hi", "run1/big.bin": files["big.bin"],
                                "run1/config.json": files["config.json"]}


def test_corrupt_body_is_received_corrupt_once(hub, tmp_path):
    body = bytes(range(256)) * 400
    put(hub.root, "o/n/data/a.bin", body)
    hub.faults[resolve_path("data/a.bin")] = ["corrupt"]
    out = tmp_path / "out"
    path = hf_hub_download(REPO, "data/a.bin", repo_type="dataset", local_dir=out, endpoint=hub.url)
    # huggingface_hub checks the size only: the flipped bytes are kept, without an error
    assert pathlib.Path(path).read_bytes() == bytes(b ^ 0xFF for b in body)
    # a caller detects it: the git sha1 of the file is not the blob id of the listing
    api = HfApi(endpoint=hub.url)
    check = api.verify_repo_checksums(REPO, repo_type="dataset", local_dir=out)
    assert [(m["path"], m["expected"]) for m in check.mismatches] == [("data/a.bin", git_oid(body))]
    # a later call returns the corrupt file as it is (its ETag matches); force_download gets it again, right
    assert pathlib.Path(hf_hub_download(REPO, "data/a.bin", repo_type="dataset", local_dir=out,
                                        endpoint=hub.url)).read_bytes() != body
    path = hf_hub_download(REPO, "data/a.bin", repo_type="dataset", local_dir=out, endpoint=hub.url,
                           force_download=True)
    assert pathlib.Path(path).read_bytes() == body
    assert api.verify_repo_checksums(REPO, repo_type="dataset", local_dir=out).mismatches == []


def test_500_once(hub, tmp_path):
    put(hub.root, "o/n/a.bin", b"payload")
    api = HfApi(endpoint=hub.url)

    # on the HEAD of a download: a second HEAD at once (with backoff from then on), the download succeeds
    hub.faults[resolve_path("a.bin")] = ["500"]
    path = hf_hub_download(REPO, "a.bin", repo_type="dataset", local_dir=tmp_path / "1", endpoint=hub.url)
    assert pathlib.Path(path).read_bytes() == b"payload"
    assert hub.requests == [("HEAD", resolve_path("a.bin"))] * 2 + [("GET", resolve_path("a.bin"))]

    # on the GET of a download: not retried (http_get retries 408 and 429 only), surfaces as HfHubHTTPError
    hub.faults["GET " + resolve_path("a.bin")] = ["500"]
    with pytest.raises(HfHubHTTPError) as e:
        hf_hub_download(REPO, "a.bin", repo_type="dataset", local_dir=tmp_path / "2", endpoint=hub.url)
    assert e.value.response.status_code == 500
    assert not (tmp_path / "2" / "a.bin").exists()
    path = hf_hub_download(REPO, "a.bin", repo_type="dataset", local_dir=tmp_path / "2", endpoint=hub.url)
    assert pathlib.Path(path).read_bytes() == b"payload"

    # on an API call (listing, info, preupload): retried after a 1 s backoff
    hub.requests.clear()
    hub.faults["/api/datasets/o/n/tree/main"] = ["500"]
    assert api.list_repo_files(REPO, repo_type="dataset") == ["a.bin"]
    assert hub.requests == [("GET", "/api/datasets/o/n/tree/main")] * 2


@pytest.mark.parametrize("fault", ["truncate", "drop"])
def test_cut_download_is_resumed(hub, tmp_path, monkeypatch, fault):
    # http_get writes what it receives by chunks of DOWNLOAD_CHUNK_SIZE (10 MB): a cut loses the chunk under
    # way, and it resumes (after 1 s) from the last whole chunk, with a Range request if that is not 0
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 10_000)
    body = os.urandom(100_000)
    put(hub.root, "o/n/a.bin", body)
    hub.faults["GET " + resolve_path("a.bin")] = [fault]
    path = hf_hub_download(REPO, "a.bin", repo_type="dataset", local_dir=tmp_path, endpoint=hub.url)
    assert pathlib.Path(path).read_bytes() == body
    assert hub.requests == [("HEAD", resolve_path("a.bin"))] + [("GET", resolve_path("a.bin"))] * 2
    assert hub.headers[2].get("Range") == ("bytes=50000-" if fault == "truncate" else None)


def test_dropped_head_is_an_error(hub, tmp_path):
    put(hub.root, "o/n/a.bin", b"payload")
    hub.faults["HEAD " + resolve_path("a.bin")] = ["drop"]
    # not retried, not turned into a hub error: httpx's own exception (RemoteProtocolError) reaches the caller
    with pytest.raises(httpx2.TransportError):
        hf_hub_download(REPO, "a.bin", repo_type="dataset", local_dir=tmp_path, endpoint=hub.url)
    assert hub.requests == [("HEAD", resolve_path("a.bin"))]


def test_calls_without_endpoint_reach_the_fake_hub(hub, tmp_path):
    put(hub.root, "o/n/a.txt", b"A")
    assert HfApi().list_repo_files(REPO, repo_type="dataset") == ["a.txt"]
    path = hf_hub_download(REPO, "a.txt", repo_type="dataset", local_dir=tmp_path)
    assert pathlib.Path(path).read_bytes() == b"A"
    assert len(hub.requests) == 3


def test_hf_endpoint_is_read_at_import(monkeypatch):
    # no server here: nothing is requested
    before = constants.ENDPOINT
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert constants.ENDPOINT == before != "http://127.0.0.1:9"
    assert HfApi().endpoint == before
    assert hf_hub_url(REPO, "a.txt", repo_type="dataset") == f"{before}/datasets/o/n/resolve/main/a.txt"
    assert hf_hub_url(REPO, "a.txt", repo_type="dataset",
                      endpoint="http://127.0.0.1:9") == "http://127.0.0.1:9/datasets/o/n/resolve/main/a.txt"


def test_xet_is_installed_but_not_used(hub, tmp_path):
    # what makes the tests above meaningful: with hf_xet importable, only the server's answers keep xet away
    assert is_xet_available()
    put(hub.root, "o/n/a.bin", b"x" * 1000)
    path = hf_hub_download(REPO, "a.bin", repo_type="dataset", local_dir=tmp_path, endpoint=hub.url)
    assert pathlib.Path(path).read_bytes() == b"x" * 1000  # and `hub` made xet_get fail the test


def test_range_requests(hub):
    put(hub.root, "o/n/a.bin", bytes(range(100)))
    url = hub.url + resolve_path("a.bin")
    r = httpx2.get(url, headers={"Range": "bytes=10-19"})
    assert (r.status_code, r.headers["Content-Range"], r.content) == (206, "bytes 10-19/100", bytes(range(10, 20)))
    r = httpx2.get(url, headers={"Range": "bytes=-5"})
    assert (r.status_code, r.headers["Content-Range"], r.content) == (206, "bytes 95-99/100", bytes(range(95, 100)))
    assert httpx2.get(url, headers={"Range": "bytes=100-"}).status_code == 416
    r = httpx2.head(url)
    assert (r.headers["Content-Length"], r.headers["ETag"]) == ("100", f'"{git_oid(bytes(range(100)))}"')
    assert not any(name.lower().startswith("x-xet") or name.lower() == "link" for name in r.headers)

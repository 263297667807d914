import pathlib

import pytest

from stacks_data.download import DownloadError, download


def serve(server, name, body):
    (pathlib.Path(server.root) / name).write_bytes(body)
    return f"{server.url}/{name}"


@pytest.mark.parametrize("fault", ["500", "drop", "truncate"])
def test_retries_until_complete(file_server, tmp_path, fault):
    body = bytes(range(256)) * 400
    url = serve(file_server, "f.bin", body)
    file_server.faults["/f.bin"] = [fault, fault]
    dest = tmp_path / "out" / "f.bin"
    download(url, str(dest), backoff=0.01)
    assert dest.read_bytes() == body
    assert file_server.requests.count("/f.bin") == 3
    assert not (tmp_path / "out" / "f.bin.part").exists()


def test_gives_up_and_leaves_nothing(file_server, tmp_path):
    url = serve(file_server, "f.bin", b"x" * 1000)
    file_server.faults["/f.bin"] = ["truncate"] * 10
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="f.bin"):
        download(url, str(dest), retries=2, backoff=0.01)
    assert file_server.requests.count("/f.bin") == 3
    assert list(tmp_path.iterdir()) == [tmp_path / "served"]


def test_token_is_not_sent_to_a_redirect_target(file_server, other_server, tmp_path):
    url = serve(other_server, "f.bin", b"payload")
    file_server.redirects["/resolve/f.bin"] = url
    download(f"{file_server.url}/resolve/f.bin", str(tmp_path / "f.bin"), token="secret")
    assert (tmp_path / "f.bin").read_bytes() == b"payload"
    assert file_server.authorizations == ["Bearer secret"]
    assert other_server.authorizations == [None]


def test_not_found_is_final(file_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404, 1 attempts"):
        download(f"{file_server.url}/missing", str(tmp_path / "m"), backoff=0.01)


def test_verify_rejects_corrupt_file(file_server, tmp_path):
    url = serve(file_server, "f.bin", b"good")
    calls = []

    def verify(path):
        calls.append(open(path, "rb").read())
        if len(calls) == 1:
            raise ValueError("corrupt")

    dest = tmp_path / "f.bin"
    download(url, str(dest), verify=verify, backoff=0.01)
    assert calls == [b"good", b"good"] and dest.read_bytes() == b"good"


def test_existing_file_is_kept_and_stale_part_replaced(file_server, tmp_path):
    url = serve(file_server, "f.bin", b"new")
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"mine")
    download(url, str(dest))
    assert dest.read_bytes() == b"mine" and not file_server.requests
    # a crash mid-download leaves a .part: the next run fetches the whole file again
    other = tmp_path / "g.bin"
    (tmp_path / "g.bin.part").write_bytes(b"ne")
    download(url, str(other))
    assert other.read_bytes() == b"new" and not (tmp_path / "g.bin.part").exists()

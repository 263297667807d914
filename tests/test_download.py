import pathlib
import socket
import time

import pytest

from stacks_data.remote.http import download, token_for
from stacks_data.errors import NetworkError

OFFLINE = "pass --some-dir instead"


def serve(server, name, body):
    (pathlib.Path(server.root) / name).write_bytes(body)
    return f"{server.url}/{name}"


@pytest.mark.parametrize("fault", ["500", "drop", "truncate"])
def test_retries_until_complete(file_server, tmp_path, fault):
    body = bytes(range(256)) * 400
    url = serve(file_server, "f.bin", body)
    file_server.faults["/f.bin"] = [fault, fault]
    dest = tmp_path / "out" / "f.bin"
    download(url, str(dest), offline=OFFLINE, backoff=0.01)
    assert dest.read_bytes() == body
    assert file_server.requests.count("/f.bin") == 3
    assert not (tmp_path / "out" / "f.bin.part").exists()


def test_gives_up_and_leaves_nothing(file_server, tmp_path):
    url = serve(file_server, "f.bin", b"x" * 1000)
    file_server.faults["/f.bin"] = ["truncate"] * 10
    dest = tmp_path / "f.bin"
    with pytest.raises(NetworkError) as error:
        download(url, str(dest), offline=OFFLINE, retries=2, backoff=0.01)
    assert str(error.value).startswith("could not download it (") and f"({url}): {OFFLINE}" in str(error.value)
    assert file_server.requests.count("/f.bin") == 3
    assert sorted(tmp_path.iterdir()) == [tmp_path / ".locks", tmp_path / "served"]


def test_unknown_host_and_refused_connection_fail_at_once(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    for url, what in ((f"http://127.0.0.1:{port}/f.bin", "cannot connect to 127.0.0.1"),
                      ("http://no-such-host.invalid/f.bin", "cannot resolve no-such-host.invalid")):
        t0 = time.time()
        with pytest.raises(NetworkError, match=what) as error:
            download(url, str(tmp_path / "f.bin"), offline=OFFLINE, backoff=5)  # a retry would sleep 5 s
        assert time.time() - t0 < 2 and str(error.value).endswith(f": {OFFLINE}")


def test_not_found_is_final(file_server, tmp_path):
    with pytest.raises(NetworkError, match=r"HTTP 404, 1 attempt\)"):
        download(f"{file_server.url}/missing", str(tmp_path / "m"), offline=OFFLINE, backoff=0.01)


def test_token_goes_only_to_the_hub_over_https_or_allowed_hosts(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("STACKS_DATA_TOKEN_HOSTS", raising=False)
    assert token_for("https://huggingface.co/datasets/o/n/resolve/main/x") == "secret"
    assert token_for("http://huggingface.co/datasets/o/n/resolve/main/x") is None  # plain http
    assert token_for("https://example.com/x") is None
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    assert token_for("https://hub.example.org/x") == "secret"
    assert token_for("https://huggingface.co/x") is None
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8000")  # an http endpoint is not enough...
    assert token_for("http://127.0.0.1:8000/x") is None
    monkeypatch.setenv("STACKS_DATA_TOKEN_HOSTS", "mirror.lan, 127.0.0.1:8000")  # ...the user must allow it
    assert token_for("http://127.0.0.1:8000/x") == "secret"
    assert token_for("http://mirror.lan:81/x") == "secret"
    assert token_for("http://127.0.0.1:9000/x") is None
    monkeypatch.delenv("HF_TOKEN")
    assert token_for("https://huggingface.co/x") is None


def test_token_is_not_sent_to_a_redirect_target(file_server, other_server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret")
    monkeypatch.setenv("STACKS_DATA_TOKEN_HOSTS", file_server.url.split("//")[1])
    url = serve(other_server, "f.bin", b"payload")
    file_server.redirects["/resolve/f.bin"] = url
    download(f"{file_server.url}/resolve/f.bin", str(tmp_path / "f.bin"), offline=OFFLINE)
    assert (tmp_path / "f.bin").read_bytes() == b"payload"
    assert file_server.authorizations == ["Bearer secret"]
    assert other_server.authorizations == [None]


def test_verify_rejects_corrupt_file(file_server, tmp_path):
    url = serve(file_server, "f.bin", b"good")
    calls = []

    def verify(path):
        calls.append(open(path, "rb").read())
        if len(calls) == 1:
            raise ValueError("corrupt")

    dest = tmp_path / "f.bin"
    download(url, str(dest), offline=OFFLINE, verify=verify, backoff=0.01)
    assert calls == [b"good", b"good"] and dest.read_bytes() == b"good"


def test_existing_file_is_kept_and_stale_part_replaced(file_server, tmp_path):
    url = serve(file_server, "f.bin", b"new")
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"mine")
    download(url, str(dest), offline=OFFLINE)
    assert dest.read_bytes() == b"mine" and not file_server.requests
    # a crash mid-download leaves a .part: the next run fetches the whole file again
    other = tmp_path / "g.bin"
    (tmp_path / "g.bin.part").write_bytes(b"ne")
    download(url, str(other), offline=OFFLINE)
    assert other.read_bytes() == b"new" and not (tmp_path / "g.bin.part").exists()

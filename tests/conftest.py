"""Shared fixtures: a loopback HTTP server that serves a folder in the hub's URL layout, with faults."""

import contextlib
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

import pytest
from huggingface_hub import file_download

from hub_server import serving_hub, use_fake_hub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))  # `from tokenizer import ...`, as the seed's consumers do


class FileServer(http.server.ThreadingHTTPServer):
    """Serves `root` on 127.0.0.1:

    - /datasets/<owner>/<name>/resolve/main/<path>  -> root/<owner>/<name>/<path>   (hub file)
    - /api/datasets/<owner>/<name>/tree/main/<dir>  -> JSON listing of that folder   (hub API)
    - /<path>                                        -> root/<path>                  (plain URL)

    `faults[url_path]` is a list of faults served, one per request, before the real answer:
    "500", "drop" (connection closed without an answer) or "truncate" (half the announced body).
    `requests` records every path asked for, `authorizations` the Authorization header of each request,
    `redirects[url_path]` answers 302 to another URL, `delay` seconds pass before each file is sent.
    """

    daemon_threads = True

    def __init__(self, root):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.faults: dict[str, list[str]] = {}
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self.redirects: dict[str, str] = {}
        self.delay = 0.0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        path = urllib.parse.urlparse(self.path).path
        self.server.requests.append(path)
        self.server.authorizations.append(self.headers.get("Authorization"))
        if path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[path])
            self.send_header("Content-Length", "0")
            return self.end_headers()
        faults = self.server.faults.get(path)
        fault = faults.pop(0) if faults else None
        if fault == "500":
            return self.send_error(500)
        if fault == "drop":
            self.close_connection = True
            return self.connection.close()
        parts = urllib.parse.unquote(path).strip("/").split("/")
        if parts[:2] == ["api", "datasets"] and parts[4:6] == ["tree", "main"]:
            return self._tree("/".join(parts[2:4]), "/".join(parts[6:]))
        if parts[:1] == ["datasets"] and parts[3:5] == ["resolve", "main"]:
            parts = parts[1:3] + parts[5:]
        local = os.path.join(self.server.root, *parts)
        if not os.path.isfile(local):
            return self.send_error(404)
        with open(local, "rb") as f:
            body = f.read()
        time.sleep(self.server.delay)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
        if fault == "truncate":
            self.close_connection = True

    def _tree(self, repo, folder):
        local = os.path.join(self.server.root, repo, folder)
        if not os.path.isdir(local):
            return self.send_error(404)
        entries = []
        for name in sorted(os.listdir(local)):
            full = os.path.join(local, name)
            rel = f"{folder}/{name}" if folder else name
            if os.path.isdir(full):
                entries.append({"type": "directory", "oid": "0" * 40, "path": rel})
            else:
                entries.append({"type": "file", "oid": "0" * 40, "size": os.path.getsize(full), "path": rel})
        body = json.dumps(entries).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serving(root):
    root.mkdir()
    server = FileServer(str(root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def file_server(tmp_path):
    """A FileServer over tmp_path/'served' (fill it before requesting)."""
    with serving(tmp_path / "served") as server:
        yield server


@pytest.fixture
def other_server(tmp_path):
    """A second FileServer (another host:port) over tmp_path/'other', e.g. a redirect target."""
    with serving(tmp_path / "other") as server:
        yield server


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake hub (hub_server.py) over tmp_path/'hub', huggingface_hub pointed at it and at HF_HOME
    tmp_path/'hf_home'. Fails the test if anything resolves a host other than 127.0.0.1, or goes
    through xet / LFS."""
    outside = []
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            outside.append(host)
            raise OSError(f"test: no network ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    def no_xet(**kwargs):
        raise AssertionError("download through xet")

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    monkeypatch.setattr(file_download, "xet_get", no_xet)
    with serving_hub(tmp_path / "hub") as server:
        use_fake_hub(monkeypatch, server, tmp_path / "hf_home")
        yield server
    assert outside == []
    assert not any("xet" in path or "lfs" in path for _, path in server.requests)


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """cli.main() ignores SIGINT and SIGTERM once its command is done (a signal then would only interrupt
    the interpreter's shutdown). Tests call it in this process: without this, the next test's subprocesses
    would start with Ctrl-C ignored (an ignored signal stays ignored across exec) and run on after it."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in handlers.items():
        signal.signal(s, handler)

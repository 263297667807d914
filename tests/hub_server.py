"""A fake Hugging Face Hub on 127.0.0.1: enough of the Hub's HTTP API for the real huggingface_hub client
(checked against 2.4.0) to list, download and upload dataset repos, with faults.

Dataset repo `<owner>/<name>` is the folder `root/<owner>/<name>/`. What the client calls:

- GET  /api/datasets/<o>/<n>[/revision/<rev>]       dataset_info / repo_info: id, sha, siblings
- GET  /api/datasets/<o>/<n>/tree/<rev>[/<dir>]     list_repo_tree / list_repo_files (?recursive=true)
- HEAD, GET /datasets/<o>/<n>/resolve/<rev>/<path>  hf_hub_download / snapshot_download: ETag (git blob sha1),
                                                    X-Repo-Commit, Content-Length; a Range answers 206
- POST /api/repos/create                            create_repo (409 when it exists: exist_ok=True passes)
- POST /api/datasets/<o>/<n>/preupload/<rev>        upload_folder / create_commit: every file "regular"...
- POST /api/datasets/<o>/<n>/commit/<rev>           ... so the commit (NDJSON) carries them base64 inline
- POST /api/validate-yaml                           the client's check of a README.md's metadata before it
                                                    uploads one: 400 with `errors` when the front matter is
                                                    not a YAML mapping or a field the Hub checks is invalid

<rev> is "main" or any 40-hex sha (one state is kept). The commit sha hashes a per-repo commit counter and
the files' (path, size, mtime): it changes on every commit, and when a test writes files itself.
Neither xet nor LFS is ever used: no X-Xet-* header, Link rel="xet-auth", "xetHash" or "lfs" in answers
(downloads are plain GETs though hf_xet is installed) and uploads are "regular" whatever the file size.

`faults[url_path]`: faults taken one per request to that path, before the real answer: "500", "drop"
(connection closed without an answer), "truncate" (full Content-Length announced, half the body sent),
"corrupt" (every byte flipped, same length); the last two for file bodies: a HEAD leaves them in place;
faults of a file are keyed by its /resolve/main/ path, and also hit requests naming a commit sha;
a key "GET <path>" or "HEAD <path>" holds faults for that method only. `requests` records (method, path)
of every request and, in the same order, `authorizations` its Authorization header, `headers` all of them.
"""

import base64
import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import threading
import urllib.parse

import yaml

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
BODY_FAULTS = ("truncate", "corrupt")


def git_oid(data: bytes) -> str:
    """The git blob sha1: the Hub's ETag and tree "oid" of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def safe_path(path: str) -> bool:
    """A relative path without empty, "." or ".." parts: nothing lands outside the repo folder."""
    return bool(path) and all(part not in ("", ".", "..") for part in path.split("/"))


class HubServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.root = str(root)
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.headers: list[dict[str, str]] = []
        self.commits: dict[str, int] = {}  # repo_id -> commits made through the server
        self.validated: list[dict] = []  # the metadata of each README.md the client had checked
        self.lock = threading.Lock()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def repo_dir(self, repo_id: str) -> str:
        return os.path.join(self.root, *repo_id.split("/"))

    def files(self, repo_id: str) -> list[str]:
        """Paths in the repo of all its files, in name order."""
        base = self.repo_dir(repo_id)
        return sorted(os.path.relpath(os.path.join(d, f), base).replace(os.sep, "/")
                      for d, _, names in os.walk(base) for f in names)

    def read(self, repo_id: str, path: str) -> bytes | None:
        """The content of the file `path` of the repo, None if there is no such file."""
        local = os.path.join(self.repo_dir(repo_id), *path.split("/"))
        if not (safe_path(path) and os.path.isfile(local)):
            return None
        with open(local, "rb") as f:
            return f.read()

    def sha(self, repo_id: str) -> str:
        h = hashlib.sha1(f"{repo_id}:{self.commits.get(repo_id, 0)}".encode())
        for rel in self.files(repo_id):
            st = os.stat(os.path.join(self.repo_dir(repo_id), rel))
            h.update(f"\n{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()


class HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # and HEAD, POST: one router
        url = urllib.parse.urlparse(self.path)
        with self.server.lock:
            self.server.requests.append((self.command, url.path))
            self.server.authorizations.append(self.headers.get("Authorization"))
            self.server.headers.append(dict(self.headers))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self._take_fault(url.path)
        if fault == "500":
            return self._error(500, None, "injected fault")
        if fault == "drop":
            self.close_connection = True
            return self.connection.close()
        # split before unquoting: a quoted "/" (path_in_repo of a tree listing) stays inside its part
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        query = urllib.parse.parse_qs(url.query)
        method = self.command
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if parts[:1] == ["datasets"] and parts[3:4] == ["resolve"] and len(parts) > 5 and method != "POST":
            repo, rev, rest = "/".join(parts[1:3]), parts[4], parts[5:]
        elif parts[:2] == ["api", "datasets"] and len(parts) >= 4:
            repo, rest = "/".join(parts[2:4]), parts[4:]
            rev = rest[1] if len(rest) >= 2 else "main"
        else:
            return self._error(404, None, f"no route for {method} {url.path}")
        if not (safe_path(repo) and os.path.isdir(self.server.repo_dir(repo))):
            return self._error(404, "RepoNotFound", f"Repository {repo} not found")
        if rev != "main" and not COMMIT_SHA.fullmatch(rev):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if parts[0] == "datasets":
            return self._resolve(repo, "/".join(rest), fault)
        if method == "GET" and (rest == [] or (rest[:1] == ["revision"] and len(rest) == 2)):
            return self._info(repo)
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo, "/".join(rest[2:]), query.get("recursive") == ["true"])
        if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
            return self._preupload(repo, json.loads(body))
        if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
            if "create_pr" in query:
                return self._error(400, None, "pull requests are not supported")
            return self._commit(repo, body)
        return self._error(404, None, f"no route for {method} {url.path}")

    do_HEAD = do_POST = do_GET

    def _take_fault(self, path):
        # a file's faults are keyed by its /resolve/main/ URL: they also hit the client's requests that name
        # the commit sha main resolved to (snapshot_download asks for /resolve/<sha>/<path>)
        path = re.sub(r"^(/datasets/[^/]+/[^/]+/resolve/)[0-9a-f]{40}/", r"\1main/", path)
        with self.server.lock:
            for key in (f"{self.command} {path}", path):
                faults = self.server.faults.get(key)
                if faults and not (self.command != "GET" and faults[0] in BODY_FAULTS):
                    return faults.pop(0)
        return None

    # --- answers

    def _send(self, status, body=b"", headers=(), length=None):
        self.send_response(status)
        for name, value in dict(headers).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status=200):
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, status, error_code, message, headers=(), **fields):
        """The Hub's error shape: huggingface_hub maps X-Error-Code to RepositoryNotFoundError,
        RevisionNotFoundError, RemoteEntryNotFoundError, ..."""
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **dict(headers)}
        if error_code:
            headers["X-Error-Code"] = error_code
        self._send(status, json.dumps({"error": message, **fields}).encode(), headers)

    # --- dataset cards

    SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                       "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"}

    def _validate_yaml(self, request):
        """The fields of a card's metadata the Hub checks by type and vocabulary (a subset of its schema)."""
        content = request.get("content", "")
        errors = []
        try:
            meta = yaml.safe_load(content[4:].split("\n---\n", 1)[0]) if content.startswith("---\n") else {}
        except yaml.YAMLError as e:
            meta, errors = None, [f"YAML: {e}"]
        if meta is not None and not isinstance(meta, dict):
            errors.append("the metadata is not a mapping")
        elif meta:
            if not isinstance(meta.get("license", ""), str):
                errors.append('"license" must be a string')
            for key in ("language", "task_categories", "size_categories", "source_datasets", "tags"):
                if not (isinstance(meta.get(key, []), list) and all(isinstance(v, str) for v in meta.get(key, []))):
                    errors.append(f'"{key}" must be a list of strings')
            if not set(meta.get("size_categories", [])) <= self.SIZE_CATEGORIES:
                errors.append(f'"size_categories" must be among {sorted(self.SIZE_CATEGORIES)}')
        if errors:
            return self._json({"errors": [{"message": m} for m in errors], "warnings": []}, status=400)
        with self.server.lock:
            self.server.validated.append(meta or {})
        return self._json({"errors": [], "warnings": []})

    # --- repos

    def _info(self, repo):
        self._json({"id": repo, "sha": self.server.sha(repo), "private": False, "gated": False,
                    "disabled": False, "tags": [], "siblings": [{"rfilename": f} for f in self.server.files(repo)]})

    def _tree(self, repo, folder, recursive):
        base = self.server.repo_dir(repo)
        top = os.path.join(base, *folder.split("/")) if folder else base
        if (folder and not safe_path(folder)) or not os.path.isdir(top):
            return self._error(404, "EntryNotFound", f"{folder} does not exist on main")
        entries = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = os.path.relpath(dirpath, base).replace(os.sep, "/")
            prefix = "" if rel == "." else rel + "/"
            for name in dirnames:  # a tree oid is a git sha1 too: any stable 40-hex will do
                entries.append({"type": "directory", "oid": hashlib.sha1((prefix + name).encode()).hexdigest(),
                                "path": prefix + name})
            for name in sorted(filenames):
                data = self.server.read(repo, prefix + name)
                entries.append({"type": "file", "oid": git_oid(data), "size": len(data), "path": prefix + name})
            if not recursive:
                break
        self._json(entries)

    def _create(self, request):
        owner, name = request.get("organization"), request.get("name")
        if request.get("type") != "dataset" or not owner or not safe_path(f"{owner}/{name}") or "/" in name:
            return self._error(400, None, "this fake hub only has dataset repos named <owner>/<name>")
        repo, url = f"{owner}/{name}", f"{self.server.url}/datasets/{owner}/{name}"
        try:
            os.makedirs(self.server.repo_dir(repo))
        except FileExistsError:  # create_repo(exist_ok=True) reads "url" from this answer too
            return self._error(409, None, "You already created this dataset repo", url=url)
        self._json({"url": url, "name": repo, "id": repo})

    # --- files

    def _resolve(self, repo, path, fault):
        data = self.server.read(repo, path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on main",
                               {"X-Repo-Commit": self.server.sha(repo)})
        headers = {"ETag": f'"{git_oid(data)}"', "X-Repo-Commit": self.server.sha(repo), "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        status, start, end = 200, 0, len(data)
        if self.headers.get("Range"):  # what http_get sends to resume a download cut short
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers["Range"].strip())
            first, last = m.groups() if m else ("", "")
            if first:
                start, end = int(first), min(int(last) + 1, len(data)) if last else len(data)
            elif last:
                start = max(len(data) - int(last), 0)
            if not (first or last) or start >= end:
                return self._error(416, None, "range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        if fault == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        if fault == "truncate":
            self.close_connection = True
            return self._send(status, body[: len(body) // 2], headers, length=len(body))
        self._send(status, body, headers)

    def _preupload(self, repo, request):
        files = []
        for f in request["files"]:  # "oid" of the file already there: the client leaves out unchanged files
            data = self.server.read(repo, f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": None if data is None else git_oid(data)})
        self._json({"files": files})

    def _commit(self, repo, body):
        ops = [json.loads(line) for line in body.splitlines() if line.strip()]
        for op in ops:  # check everything before writing anything
            if op["key"] != "header" and not safe_path(op["value"].get("path", "").strip("/")):
                return self._error(400, None, f"invalid path in {op}")
            if op["key"] not in ("header", "file", "deletedFile", "deletedFolder"):
                return self._error(400, None, f"{op['key']} is not supported (preupload says regular for all)")
        base = self.server.repo_dir(repo)
        with self.server.lock:
            for op in ops:
                if op["key"] == "header":
                    continue
                local = os.path.join(base, *op["value"]["path"].strip("/").split("/"))
                if op["key"] == "file":
                    os.makedirs(os.path.dirname(local), exist_ok=True)
                    with open(local + ".uploading", "wb") as f:
                        f.write(base64.b64decode(op["value"]["content"]))
                    os.replace(local + ".uploading", local)
                elif op["key"] == "deletedFile" and os.path.isfile(local):
                    os.remove(local)
                elif op["key"] == "deletedFolder" and os.path.isdir(local):
                    shutil.rmtree(local)
            self.server.commits[repo] = self.server.commits.get(repo, 0) + 1
            sha = self.server.sha(repo)
        self._json({"commitUrl": f"{self.server.url}/datasets/{repo}/commit/{sha}", "commitOid": sha,
                    "pullRequestUrl": None})


def use_fake_hub(monkeypatch, server, hf_home):
    """Points huggingface_hub at `server` and the scratch HF_HOME `hf_home` until the test ends. It read
    HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE... at import: setting them now would not move it, so its constants
    are patched (and the variables set, for subprocesses). Calls without endpoint= then reach `server`."""
    from huggingface_hub import constants

    for name, rel in {"HF_HOME": "", "HF_HUB_CACHE": "hub", "HUGGINGFACE_HUB_CACHE": "hub", "HF_XET_CACHE": "xet",
                      "HF_ASSETS_CACHE": "assets", "HF_TOKEN_PATH": "token", "HF_STORED_TOKENS_PATH": "stored_tokens",
                      "AGENT_HARNESSES_PATH": ".agent_harnesses.json"}.items():
        monkeypatch.setattr(constants, name, os.path.join(str(hf_home), rel))
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"  # hf_hub_url's, built at import too
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # else the first user agent built in the process asks {ENDPOINT}/api/agent-harnesses (AI agent detection)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(hf_home))


@contextlib.contextmanager
def serving_hub(root):
    """A HubServer over `root` (created if missing), serving from a daemon thread until the block ends."""
    os.makedirs(root, exist_ok=True)
    server = HubServer(root)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # poll: a quick shutdown
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()

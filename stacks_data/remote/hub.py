"""
Hugging Face Hub I/O: reading dataset files (from a local mirror or the hub) and uploading outputs.

A mirror folder holds `<owner>/<name>/<path in repo>`, the layout
`hf download <repo> --repo-type dataset --local-dir DIR/<owner>/<name>` produces. Files fetched from
the hub are cached in that same layout, so the cache is itself a mirror.
"""

import contextlib
import fnmatch
import glob
import json
import os
import posixpath

from stacks_data.remote.http import check_reachable, download, hub_endpoint, token_for
from stacks_data.errors import FlagError, InputError, NetworkError
from stacks_data.dataset.files import write_json
from stacks_data.sources.parquet import check_complete

# huggingface_hub reads this at import: without it, its first request of a process asks the hub about
# AI agents, a network round trip (or a DNS failure offline) that nothing here needs
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def cache_root() -> str:
    """Root of the download cache: $STACKS_DATA_CACHE, else ~/.cache/stacks-data."""
    return os.environ.get("STACKS_DATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stacks-data")


def default_cache_dir() -> str:
    return os.path.join(cache_root(), "hub")


def resolve_url(repo_id: str, path: str, endpoint: str | None = None) -> str:
    """URL of a file in a dataset repo (main branch)."""
    return f"{endpoint or hub_endpoint()}/datasets/{repo_id}/resolve/main/{path}"


UPLOAD_LATER = "the dataset is complete on disk: upload it later with `stacks-data upload {dataset_dir} --hf-user USER`"


def check_upload_possible(repo_id: str, flag: str) -> None:
    """Before any work: the repo id is one the hub accepts, and the hub can be reached."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise FlagError(f"{repo_id!r} is not a valid hub repo id ({e})", flag, "pick another name") from None
    todo = "pass --skip-upload (and upload later with `stacks-data upload`), or fix the network"
    if constants.is_offline_mode():
        raise NetworkError("HF_HUB_OFFLINE is set, and uploading needs the hub", flag, todo)
    check_reachable(hub_endpoint(), todo)


def hf_api(endpoint: str | None = None):
    """An HfApi for `endpoint` that sends HF_TOKEN only where download.token_for allows, and whose
    retry chatter stays out of the user's terminal (our errors say what failed)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    endpoint = endpoint or hub_endpoint()
    return HfApi(endpoint=endpoint, token=token_for(endpoint) or False)


def source_of(mirror: str | None) -> dict:
    """Where hub datasets were read from, for a config.json."""
    return {"hf_mirror": os.path.abspath(mirror)} if mirror else {"hub": hub_endpoint()}


def offline_hint(repo_id: str, pattern: str) -> str:
    return (f"pass --hf-mirror DIR with {repo_id}/{pattern} in it (`hf download {repo_id} --repo-type dataset "
            f"--local-dir DIR/{repo_id}`), or run once with network: later runs (also with HF_HUB_OFFLINE=1) "
            "use the cache")


def dataset_files(repo_id: str, pattern: str, *, mirror: str | None = None,
                  cache_dir: str | None = None, endpoint: str | None = None) -> list[str]:
    """Local paths of the files of `repo_id` matching `pattern` (e.g. "data/train-*.parquet"), in name order.

    With `mirror`, they are read from `mirror/<repo_id>/`; otherwise they are listed on the hub and
    downloaded once into the cache. Without network (or with HF_HUB_OFFLINE=1) a complete earlier
    download is used as it is.
    """
    if mirror is not None:
        paths = sorted(glob.glob(os.path.join(mirror, repo_id, pattern)))
        if not paths:
            raise InputError("no file matches in the mirror", os.path.join(mirror, repo_id, pattern),
                             f"download {repo_id} there (`hf download {repo_id} --repo-type dataset "
                             f"--local-dir {os.path.join(mirror, repo_id)}`)")
        return paths
    endpoint = endpoint or hub_endpoint()
    cache_dir = cache_dir or default_cache_dir()
    offline = offline_hint(repo_id, pattern)
    # the last listing is kept, so that a later run without network can still use a complete cache
    listing = os.path.join(cache_dir, repo_id, ".listings", pattern.replace("/", "__") + ".json")
    try:
        names = list_files(repo_id, pattern, offline=offline, endpoint=endpoint)
    except NetworkError as e:
        cached = json.load(open(listing)) if os.path.exists(listing) else []
        if not cached or not all(os.path.exists(os.path.join(cache_dir, repo_id, n)) for n in cached):
            raise
        print(f"{e.what}: using the cached {repo_id} {pattern}")
        return [os.path.join(cache_dir, repo_id, n) for n in cached]
    if not names:
        raise InputError(f"no file of dataset {repo_id} matches {pattern}", endpoint, "check the repo and pattern")
    os.makedirs(os.path.dirname(listing), exist_ok=True)
    write_json(listing, names)
    return [
        download(resolve_url(repo_id, name, endpoint), os.path.join(cache_dir, repo_id, name), offline=offline,
                 verify=_check_parquet if name.endswith(".parquet") else None)
        for name in names
    ]


@contextlib.contextmanager
def hub_errors(what: str, endpoint: str, offline: str):
    """Map what huggingface_hub raises (whichever HTTP client it uses) to one-line NetworkErrors that
    say what to do instead (`offline`); anything else propagates, as a bug."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    if constants.is_offline_mode():
        raise NetworkError("HF_HUB_OFFLINE is set and the cache is incomplete", what, offline)
    check_reachable(endpoint, offline)
    try:
        yield
    except OfflineModeIsEnabled:
        raise NetworkError("HF_HUB_OFFLINE is set and the cache is incomplete", what, offline) from None
    except RepositoryNotFoundError:
        raise NetworkError(f"no such dataset repo on {endpoint} (or it is private: set HF_TOKEN)", what,
                           "check --hf-user and --dataset-name") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise NetworkError(f"the hub answered HTTP {status}", f"{endpoint}: {what}", offline) from None
    except Exception as e:
        # a connection reset or timeout comes as the HTTP client's own exception type
        if not isinstance(e, OSError) and type(e).__module__.split(".")[0] not in _HTTP_CLIENTS:
            raise
        raise NetworkError(f"the hub could not be reached ({type(e).__name__}: {e})", endpoint, offline) from None


_HTTP_CLIENTS = {"httpx", "httpx2", "httpcore", "requests", "urllib3"}


def list_files(repo_id: str, pattern: str, *, offline: str, endpoint: str | None = None) -> list[str]:
    """The paths of the dataset repo's files matching `pattern`, in name order."""
    endpoint = endpoint or hub_endpoint()
    # list from the deepest folder the pattern fixes, recursively: "data/*.parquet" lists data/
    fixed = posixpath.dirname(pattern.split("*")[0].split("?")[0].split("[")[0])
    with hub_errors(f"{repo_id} {pattern}", endpoint, offline):
        entries = hf_api(endpoint).list_repo_tree(repo_id, path_in_repo=fixed or None, recursive=True,
                                                  repo_type="dataset")
        return sorted(e.path for e in entries
                      if fnmatch.fnmatch(e.path, pattern) and getattr(e, "size", None) is not None)


FETCH_THREADS = 8  # what snapshot_download uses


def fetch_files(repo_id: str, paths: list[str], local_dir: str, *, offline: str) -> None:
    """Download `paths` of the dataset repo into local_dir (same layout) with huggingface_hub's
    hf_hub_download: parallel, resumable, and whatever transfer protocol the hub offers, all at one
    commit. Named file by file (snapshot_download's patterns would match every repo file against every
    path: quadratic in the number of files)."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import hf_hub_download

    from stacks_data.progress import bar

    endpoint = hub_endpoint()
    token = token_for(endpoint) or False
    with hub_errors(repo_id, endpoint, offline):
        if not paths:
            return
        revision = hf_api(endpoint).dataset_info(repo_id).sha

        def fetch(path: str) -> None:
            hf_hub_download(repo_id, path, repo_type="dataset", revision=revision, local_dir=local_dir,
                            endpoint=endpoint, token=token, tqdm_class=_Silent)

        with ThreadPoolExecutor(FETCH_THREADS) as pool, bar(total=len(paths), desc="download", unit="file") as shown:
            for _ in pool.map(fetch, paths):
                shown.update(1)


class _Silent:
    """A tqdm_class for hf_hub_download that shows nothing: fetch_files counts files in one bar."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def update(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _check_parquet(path: str) -> None:
    """A parquet file whose footer does not read is incomplete: download it again."""
    check_complete(path)


def upload_dataset(dataset_dir: str, repo_id: str, manifests: list[str] | None = None,
                   dry_run: bool = False, extra: tuple[dict, ...] = ()) -> list[dict]:
    """Upload what `manifests` list (default: every step's manifest in dataset_dir), and the manifests
    themselves, to the dataset repo `repo_id` (created if missing) in one commit; returns the files.
    `extra`: files of the folder that no manifest lists but go up too ({path, size}: the dataset card).

    Only listed files go up: never temp files, progress files, locks, or another step's folder; each
    a regular file inside the folder (no symlink leading out, FIFO or device), all of them present.
    The count printed is what the hub holds afterwards.
    """
    from huggingface_hub import CommitOperationAdd

    from stacks_data.dataset import published
    from stacks_data.dataset.manifest import find_manifests, read_manifest, relative

    manifests = manifests if manifests is not None else find_manifests(dataset_dir)
    if not manifests:
        raise InputError("no manifest.json: nothing a step finished", dataset_dir,
                         "run the steps first (each writes its manifest when it completes)")
    files = []
    for path in manifests:
        files += read_manifest(path, dataset_dir)["files"]
        files.append({"path": relative(path, dataset_dir), "size": os.path.getsize(path)})
    for f in files:
        why = published.file_problem(dataset_dir, f["path"])
        if why is None and not os.path.exists(published.local_path(dataset_dir, f["path"])):
            why = "is missing"
        if why:
            raise InputError(f"a listed file {why}: not uploading", f"{dataset_dir}: {published.printable(f['path'])}",
                             "publish only a complete folder of regular files (rerun the step that wrote it)")
    files += extra  # ours, written just now
    if dry_run:
        return files
    endpoint = hub_endpoint()
    with hub_errors(f"upload to {repo_id}", endpoint, UPLOAD_LATER.format(dataset_dir=dataset_dir)):
        api = hf_api(endpoint)
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        # exactly these files, named one by one (upload_folder's patterns are quadratic, and skip silently)
        api.create_commit(repo_id, repo_type="dataset", commit_message=f"stacks-data: upload {len(files)} files",
                          operations=[CommitOperationAdd(f["path"], published.local_path(dataset_dir, f["path"]))
                                      for f in files])
        received = set(list_files(repo_id, "*", offline=UPLOAD_LATER.format(dataset_dir=dataset_dir),
                                  endpoint=endpoint))
    missing = [f["path"] for f in files if f["path"] not in received]
    if missing:
        raise NetworkError(f"the hub lacks {len(missing)} of the {len(files)} files after the upload "
                           f"(first: {published.printable(missing[0])})", f"{endpoint}/datasets/{repo_id}",
                           "upload again")
    print(f"uploaded {len(files)} files of {dataset_dir} to {hub_endpoint()}/datasets/{repo_id}")
    return files

"""
Hugging Face Hub I/O: reading dataset files (from a local mirror or the hub) and uploading outputs.

A mirror folder holds `<owner>/<name>/<path in repo>`, the layout
`hf download <repo> --repo-type dataset --local-dir DIR/<owner>/<name>` produces. Files fetched from
the hub are cached in that same layout, so the cache is itself a mirror.
"""

import fnmatch
import glob
import json
import os
import posixpath

from huggingface_hub import HfApi

from stacks_data.download import download
from stacks_data.files import write_json
from stacks_data.parquet import open_parquet

DEFAULT_ENDPOINT = "https://huggingface.co"


def cache_root() -> str:
    """Root of the download cache: $STACKS_DATA_CACHE, else ~/.cache/stacks-data."""
    return os.environ.get("STACKS_DATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stacks-data")


def default_cache_dir() -> str:
    return os.path.join(cache_root(), "hub")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def resolve_url(repo_id: str, path: str, endpoint: str | None = None) -> str:
    """URL of a file in a dataset repo (main branch)."""
    return f"{endpoint or hub_endpoint()}/datasets/{repo_id}/resolve/main/{path}"


def dataset_files(repo_id: str, pattern: str, *, mirror: str | None = None,
                  cache_dir: str | None = None, endpoint: str | None = None) -> list[str]:
    """Local paths of the files of `repo_id` matching `pattern` (e.g. "data/train-*.parquet"), in name order.

    With `mirror`, they are read from `mirror/<repo_id>/`; otherwise they are listed on the hub and
    downloaded once into the cache.
    """
    if mirror is not None:
        paths = sorted(glob.glob(os.path.join(mirror, repo_id, pattern)))
        if not paths:
            raise FileNotFoundError(f"no file matches {os.path.join(mirror, repo_id, pattern)} in the mirror")
        return paths
    endpoint = endpoint or hub_endpoint()
    cache_dir = cache_dir or default_cache_dir()
    token = os.environ.get("HF_TOKEN")
    # the last listing is kept, so that a later run without network can still use a complete cache
    listing = os.path.join(cache_dir, repo_id, ".listings", pattern.replace("/", "__") + ".json")
    try:
        api = HfApi(endpoint=endpoint, token=token)
        names = sorted(
            entry.path for entry in api.list_repo_tree(repo_id, path_in_repo=posixpath.dirname(pattern) or None,
                                                       repo_type="dataset")
            if fnmatch.fnmatch(entry.path, pattern) and getattr(entry, "size", None) is not None
        )
    except Exception as e:  # offline or hub down (huggingface_hub raises many error types)
        cached = json.load(open(listing)) if os.path.exists(listing) else []
        if not cached or not all(os.path.exists(os.path.join(cache_dir, repo_id, n)) for n in cached):
            raise
        print(f"{endpoint} unreachable ({type(e).__name__}): using the cached {repo_id} {pattern}")
        return [os.path.join(cache_dir, repo_id, n) for n in cached]
    if not names:
        raise FileNotFoundError(f"no file of dataset {repo_id} on {endpoint} matches {pattern}")
    os.makedirs(os.path.dirname(listing), exist_ok=True)
    write_json(listing, names)
    return [
        download(resolve_url(repo_id, name, endpoint), os.path.join(cache_dir, repo_id, name), token=token,
                 verify=_check_parquet if name.endswith(".parquet") else None)
        for name in names
    ]


def _check_parquet(path: str) -> None:
    """A parquet file whose footer does not read is corrupt: download it again."""
    open_parquet(path, [])


# never uploaded: temp files of an interrupted write, partial downloads, progress files
UPLOAD_IGNORE = ["*.tmp", "*.part", ".*", "*/.*"]


def upload_folder(local_dir: str, repo_id: str, *, path_in_repo: str | None = None,
                  allow_patterns: list[str] | None = None) -> None:
    """Upload a folder (or the files of it matching allow_patterns) to the dataset repo `repo_id`
    (created if missing), using HF_TOKEN when set."""
    api = HfApi(token=os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=local_dir,
        path_in_repo=path_in_repo,
        allow_patterns=allow_patterns,
        ignore_patterns=UPLOAD_IGNORE,
        commit_message=f"stacks-data: upload {path_in_repo or 'dataset'}",
    )
    print(f"uploaded {local_dir} to https://huggingface.co/datasets/{repo_id}/tree/main/{path_in_repo or ''}")

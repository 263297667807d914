"""
manifest.json: what a step wrote, file by file, written last as the step's commit mark.

{"step": "core-eval", "stacks_data_version": "0.1.0", "config": "core_eval/config.json",
 "files": [{"path": "core_eval/ARC-Easy.pt", "size": 123, "sha256": "..."}, ...]}

Paths are relative to the dataset folder (with "/" separators), whichever sub-folder the manifest
lies in, so the manifests of all steps together describe the whole dataset as it is published.
"""

import json
import os

from stacks_data import __version__
from stacks_data.errors import InputError
from stacks_data.dataset.files import FileRecord, read_json, write_json

MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"


def relative(path: str, dataset_dir: str) -> str:
    return os.path.relpath(path, dataset_dir).replace(os.sep, "/")


def write_manifest(folder: str, dataset_dir: str, step: str, records: list[FileRecord],
                   final_folder: str | None = None) -> FileRecord:
    """Write <folder>/manifest.json for `records` (which include the step's config.json).

    A step that builds its folder under a temporary name passes the name it will have
    (`final_folder`): paths in the manifest are those of the published folder.
    """
    final_folder = final_folder or folder
    files = sorted(({"path": relative(os.path.join(final_folder, os.path.relpath(r.path, folder)), dataset_dir),
                     "size": r.size, "sha256": r.sha256} for r in records), key=lambda f: f["path"])
    config = relative(os.path.join(final_folder, CONFIG_FILE), dataset_dir)
    if config not in {f["path"] for f in files}:
        raise ValueError(f"the manifest of {step} must list its {CONFIG_FILE}")
    return write_json(os.path.join(folder, MANIFEST_FILE),
                      {"step": step, "stacks_data_version": __version__, "config": config, "files": files})


def read_manifest(path: str) -> dict:
    """A manifest.json, checked for shape."""
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable manifest ({e})", path, "regenerate or re-download it") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
            and isinstance(f.get("sha256"), str) for f in files):
        raise InputError("not a stacks-data manifest (expected files: [{path, size, sha256}])", path,
                         "regenerate or re-download it")
    for f in files:
        if f["path"].startswith("/") or ".." in f["path"].split("/"):
            raise InputError(f"manifest path {f['path']!r} leaves the dataset folder", path,
                             "do not use this dataset")
    return manifest


def find_manifests(dataset_dir: str) -> list[str]:
    """The manifests of the steps present in a dataset folder (the folder's own, then sub-folders')."""
    candidates = [os.path.join(dataset_dir, MANIFEST_FILE)] + sorted(
        os.path.join(dataset_dir, name, MANIFEST_FILE) for name in os.listdir(dataset_dir)
        if not name.startswith(".") and os.path.isdir(os.path.join(dataset_dir, name)))
    return [path for path in candidates if os.path.isfile(path)]


def read_config(path: str) -> dict:
    """A step's config.json ({} when there is none); a damaged one is an error naming it."""
    if not os.path.isfile(path):
        return {}
    config = read_json(path, dict)
    if config is None:
        raise InputError("damaged: not a JSON object", path, "rerun the step, or download the dataset again")
    return config

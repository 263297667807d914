"""
manifest.json: what a step wrote, file by file, written last as the step's commit mark.

{"step": "core-eval", "stacks_data_version": "0.1.0", "config": "core_eval/config.json",
 "files": [{"path": "core_eval/ARC-Easy.pt", "size": 123, "sha256": "..."}, ...]}

Paths are relative to the dataset folder (with "/" separators), whichever sub-folder the manifest
lies in, so the manifests of all steps together describe the whole dataset as it is published.
"""

import os

from stacks_data import __version__
from stacks_data.dataset import published
from stacks_data.errors import InputError
from stacks_data.dataset.files import FileRecord, write_json

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


def read_manifest(path: str, dataset_dir: str | None = None) -> dict:
    """A manifest.json, checked (published.check_manifest): bounded, of the step of the folder it lies
    in (when dataset_dir is given), every entry a file the layout has."""
    value = published.read_json(path, dataset_dir)
    if value is None:
        raise InputError("unreadable manifest (missing)", published.printable(path), "regenerate or re-download it")
    where = relative(path, dataset_dir) if dataset_dir is not None else None
    return published.check_manifest(value, path, where)


def find_manifests(dataset_dir: str) -> list[str]:
    """The manifests of the steps present in a dataset folder (the folder's own, then its steps' folders';
    nowhere deeper: where the layout puts them, for every tool)."""
    candidates = [os.path.join(dataset_dir, *where.split("/")) for where in published.manifest_paths()]
    return [path for path in candidates if os.path.lexists(path)]


def read_config(path: str) -> dict:
    """A step's config.json ({} when there is none), read as anything published is; a damaged one is an
    error naming it."""
    return published.read_config(path, os.path.dirname(path)) or {}

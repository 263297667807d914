"""Download a published dataset from the Hugging Face Hub into <out-dir>/<dataset-name>/, checked to the byte.

The consumer side of the steps' --hf-user: USER/DATASET_NAME, in the layout the steps write, fetched
with huggingface_hub (parallel, resumable transfers). Every file is checked against the dataset's
manifests (size and sha256); one that does not match is fetched once more, then removed (exit 1,
one line per bad file). A rerun fetches only what is missing or wrong. A dataset published without
manifests (e.g. by the original scripts) still downloads, with a warning that it cannot be verified.

  python data/download_dataset.py --hf-user USER                       # everything
  python data/download_dataset.py --hf-user USER --num-train-shards 8  # val + the first 8 train shards
  python data/download_dataset.py --hf-user USER --tokenizer-only
"""

import argparse
import fnmatch
import os
import sys
import time

from stacks_data import flags
from stacks_data.remote import hub
from stacks_data.errors import FlagError, InputError, OutputError
from stacks_data.dataset import layout, published
from stacks_data.dataset.files import hash_file, human_bytes, write_json
from stacks_data.dataset.manifest import CONFIG_FILE, MANIFEST_FILE, read_manifest
from stacks_data.dataset.folder import DatasetLock, check_output_folders
from stacks_data.executors import ordered_map
from stacks_data.steps.verify import PARTIAL_FILE

STEP_NAMES = [step.name for step in layout.STEPS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_hf_user_flag(parser, "the hub user/org that published it")
    parser.add_argument("--dataset-name", default=flags.DEFAULT_DATASET_NAME, help="the dataset repo's name")
    parser.add_argument("--out-dir", default="data", help="the dataset lands in <out-dir>/<dataset-name>/")
    parser.add_argument("--num-train-shards", type=int, default=-1,
                        help="only the first N train shards (-1: all); the val shards always come")
    parser.add_argument("--tokenizer-only", action="store_true", help="only tokenizer/ (and the config)")
    parser.add_argument("--steps", default=",".join(STEP_NAMES), type=step_list,
                        help="which steps' outputs to fetch, comma-separated (those the repo has)")
    flags.add_workers_flag(parser, executors=False)


def step_list(text: str) -> list[str]:
    """--steps: comma-separated step names (argparse turns the flag, and its default, into the list)."""
    steps = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEP_NAMES]
    if unknown or not steps:
        raise FlagError(f"unknown step(s) {unknown}", "--steps", f"pass some of {','.join(STEP_NAMES)}")
    return steps


def check_args(args: argparse.Namespace) -> None:
    if not args.hf_user:
        raise FlagError("which hub user or organization published it?", "--hf-user",
                        "pass --hf-user USER (or set $HF_USER)")
    if "/" in args.dataset_name or args.dataset_name in ("", ".", ".."):
        raise FlagError(f"{args.dataset_name!r} is not a dataset name", "--dataset-name", "pass a plain name")
    flags.check_hub_names(args)
    flags.check_at_least(args, "--num-train-shards", -1)
    flags.check_at_least(args, "--num-workers", 1)
    flags.check_writable_dir(args.out_dir, "--out-dir")
    check_output_folders(flags.dataset_dir(args), flags.tokenizer_dir(args))


def run(settings: flags.Frozen) -> None:
    t0 = time.time()
    repo_id, dest = flags.hub_repo_id(settings), flags.dataset_dir(settings)
    offline = "on a machine without network, copy the dataset folder instead and check it with `stacks-data verify`"
    with DatasetLock(dest, layout.DOWNLOAD.name):
        names = hub.list_files(repo_id, "*", offline=offline)
        # where the layout puts manifests, and nowhere deeper: what verify reads too
        manifests = [n for n in names if published.manifest_paths().get(n) in settings.steps]
        check_no_symlink(dest, [*manifests, ".cache/huggingface"])  # huggingface_hub's metadata goes there
        hub.fetch_files(repo_id, manifests, dest, offline=offline)  # small: always fetched anew
        expected = {}  # repo path -> manifest entry
        for name in manifests:
            for f in read_manifest(os.path.join(dest, name), dest)["files"]:
                expected[f["path"]] = f
        if not manifests:
            print(f"warning: {repo_id} has no manifest.json (published without stacks-data?): its files are "
                  "downloaded but cannot be verified", file=sys.stderr)
        wanted = select(names if not manifests else sorted(expected), settings, bool(manifests))
        if not wanted:
            raise InputError("nothing to download for these flags", repo_id, "check --steps and --dataset-name")
        check_no_symlink(dest, wanted)

        bad = fetch_checked(repo_id, dest, wanted, expected, settings.num_workers, offline)
        left_out = sorted(set(expected) - set(wanted))
        partial = os.path.join(dest, PARTIAL_FILE)
        if left_out:
            write_json(partial, left_out)  # verify may miss these: they were left out on purpose
        elif os.path.exists(partial):
            os.remove(partial)
        size = sum(os.path.getsize(os.path.join(dest, *p.split("/"))) for p in wanted
                   if os.path.exists(os.path.join(dest, *p.split("/"))))
        if bad:
            for path, why in bad:
                print(f"{published.printable(path)}: {why}")
            raise InputError(f"{len(bad)} file(s) did not match the manifest and were removed", repo_id,
                             "rerun the same command to fetch them again")
        print(f"{dest}: {len(wanted)} files, {human_bytes(size)} from {repo_id}"
              + (", checked against its manifests" if manifests else ", not verified (no manifest)")
              + (f"; {len(left_out)} files left out on purpose" if left_out else "") + f" ({time.time() - t0:.1f}s)")


def check_no_symlink(dest: str, paths: list[str]) -> None:
    """A download writes only inside the dataset folder: no path it writes may go through a symlink."""
    for path in paths:
        if link := published.symlink_in_the_way(dest, path):
            raise OutputError(f"{published.printable(link)} is a symlink: a download writes only inside the folder",
                              dest, "remove the symlink (or download into another --out-dir)")


def select(paths: list[str], settings: flags.Frozen, from_manifests: bool) -> list[str]:
    """The repo paths to fetch for the flags: the wanted steps' files, the first N train shards."""
    steps = [layout.PRETRAIN.name] if settings.tokenizer_only else settings.steps
    chosen = []
    for path in paths:
        step = layout.step_of(path)
        if step.name not in steps:
            continue
        if not from_manifests and published.path_problem(path):
            continue  # a listing names no hidden, deep or odd path we would write
        if not from_manifests and not any(fnmatch.fnmatch(path, p) for p in step.published_before_manifests):
            continue
        if settings.tokenizer_only and not (path.startswith(f"{layout.TOKENIZER_FOLDER}/") or path in (CONFIG_FILE, MANIFEST_FILE)):
            continue
        chosen.append(path)
    if settings.num_train_shards >= 0:
        train = set(sorted(p for p in chosen if _is_train_shard(p))[:settings.num_train_shards])
        chosen = [p for p in chosen if not _is_train_shard(p) or p in train]
    return chosen


def _is_train_shard(path: str) -> bool:
    return layout.step_of(path) is layout.PRETRAIN and fnmatch.fnmatch(path.rsplit("/", 1)[-1], "train_*.bin")


def fetch_checked(repo_id: str, dest: str, wanted: list[str], expected: dict, num_workers: int,
                  offline: str) -> list[tuple[str, str]]:
    """Fetch what is missing or does not match its manifest entry; a file still wrong after a second
    fetch is removed. Returns (path, why) of the removed ones."""
    local = [os.path.join(dest, *p.split("/")) for p in wanted]
    # files already here are kept when they match (a rerun fetches only what is missing or wrong)
    todo = [p for p, ok in zip(wanted, _matches(local, [expected.get(p) for p in wanted], num_workers)) if not ok]
    for attempt in range(2):
        for path in todo:
            if os.path.exists(os.path.join(dest, *path.split("/"))):
                os.remove(os.path.join(dest, *path.split("/")))  # huggingface_hub would trust its metadata
        if todo:
            hub.fetch_files(repo_id, todo, dest, offline=offline)
        checks = _matches([os.path.join(dest, *p.split("/")) for p in todo], [expected.get(p) for p in todo],
                          num_workers)
        todo = [p for p, ok in zip(todo, checks) if not ok]
    bad = []
    for path in todo:
        target = os.path.join(dest, *path.split("/"))
        why = "not in the repo" if not os.path.exists(target) else "size or sha256 differs from the manifest"
        if os.path.exists(target):
            os.remove(target)
        bad.append((path, why))
    return bad


BATCH_FILES, BATCH_BYTES = 512, 64 << 20  # a worker's item: many small files, or one large one


def _matches(paths: list[str], entries: list[dict | None], num_workers: int) -> list[bool]:
    """Per path: it exists and matches its manifest entry (no entry: it exists). Checked in batches of
    consecutive files: one item per file would cost more in passing items to workers than in hashing
    100,000 small files."""
    batches, size = [[]], 0
    for item in zip(paths, [e and (e["size"], e["sha256"]) for e in entries]):
        if len(batches[-1]) >= BATCH_FILES or (batches[-1] and size >= BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item[1][0] if item[1] else 0
    results = ordered_map(_match_batch, batches, num_workers, describe=lambda batch: batch[0][0] if batch else "")
    return [ok for batch in results for ok in batch]


def _match_batch(items) -> list[bool]:
    return [_match(item) for item in items]


def _match(item) -> bool:
    path, expect = item
    if not os.path.isfile(path):
        return False
    if expect is None:
        return True
    size, sha256 = expect
    if os.path.getsize(path) != size:
        return False
    return hash_file(path).sha256 == sha256

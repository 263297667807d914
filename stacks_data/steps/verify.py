"""Check a dataset folder: every step present in it, every byte, and that the numbers agree.

    stacks-data verify DIR [--quick | --deep]        (or: python data/verify_dataset.py DIR)

Prints one line per problem and a summary; exits 1 when anything is wrong. Checked:
- the files each manifest.json lists exist, with the listed size and sha256 (--quick: sizes only),
  hashed in parallel, each read once; no shard or .pt file that no manifest lists;
- .bin headers (magic, version, count matching the file size);
- every listed file is a regular file inside the folder (no symlink leading out, FIFO or device);
- .pt files are zips of stored members no larger than the file (torch.save's; a compressed member
  could be a decompression bomb);
- with --deep, what a file whose sha256 matches its manifest cannot hide from the step that wrote and
  checked it, but a manifest made by hand could: every token id below the vocab size, SFT masks hold
  only 0 and 1, and every .pt loads with torch.load(weights_only=True), under a memory bound, and
  holds the documented keys (this reads every token and loads every .pt: far slower than hashing);
- tokenizer/tokenizer.pkl loads the way steps 2-4 load it (restricted unpickler, values tiktoken can
  take) and encodes a short sample in time; the summary says when it was not checked;
- the numbers in each config.json agree with the manifests' files (shard counts, token counts, vocab,
  the tokenizer's hash and fingerprint).
Manifests and configs are read through stacks_data.dataset.published (bounded, checked for shape): the folder
may come from a stranger. A partial download (download_dataset.py --num-train-shards N) lists the files it left out in
.partial.json: those may be missing.
"""

import argparse
import os
import threading
import time

from stacks_data import flags
from stacks_data.dataset import layout, published
from stacks_data.dataset.binfile import HEADER_BYTES, TOKEN_DTYPES, read_bin, token_bytes
from stacks_data.errors import FlagError, InputError, UserError
from stacks_data.dataset.files import hash_file, human_bytes
from stacks_data.interrupts import import_torch
from stacks_data.dataset.manifest import CONFIG_FILE, find_manifests, read_manifest
from stacks_data.executors.threads import thread_map
from stacks_data.progress import bar
from stacks_data.tokenizer import TOKENIZER_FILE

PARTIAL_FILE = ".partial.json"  # files a partial download left out on purpose
TOKENIZER_PKL = f"{layout.TOKENIZER_FOLDER}/{TOKENIZER_FILE}"
# what a .pt load may allocate: the CORE files are pickled lists of ints, which take about 11x their file's
# size once unpickled (measured: the 167 MB bigbench_language_identification.pt peaks at 2.1 GB); what
# cannot be unpickled from stored zip members of that size is refused, not swapped for
PT_LOAD_BUDGET, PT_LOAD_PER_BYTE = 256 << 20, 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_dir", metavar="DIR", help="the dataset folder, e.g. data/fineweb_edu_32k_8_370")
    parser.add_argument("--quick", action="store_true", help="check sizes, not sha256 hashes (nor the tokenizer)")
    parser.add_argument("--deep", action="store_true", help="also every token id against the vocab, the SFT masks, "
                        "and load every .pt file (slow: reads every token, loads every .pt)")
    flags.add_workers_flag(parser, executors=False)


def check_args(args: argparse.Namespace) -> None:
    flags.check_input_dir(args.dataset_dir, "DIR")
    flags.check_at_least(args, "--num-workers", 1)
    if args.quick and args.deep:
        raise FlagError("--quick and --deep exclude each other", "--deep", "pass one of them")


def run(settings: flags.Frozen) -> None:
    t0 = time.time()
    problems, files, size, tokenizer = verify(settings.dataset_dir, settings.quick, settings.num_workers, settings.deep)
    for problem in problems:
        print(published.printable(problem))
    what = "sizes" if settings.quick else "sizes, hashes and contents" if settings.deep else "sizes and hashes"
    if problems:
        raise InputError(f"{len(problems)} problem(s) in {files} files ({what} checked; {tokenizer})", settings.dataset_dir,
                         "re-download or regenerate the files named above")
    print(f"ok: {settings.dataset_dir}: {files} files, {human_bytes(size)}, {what} checked, "
          f"{tokenizer}, in {time.time() - t0:.1f}s")


def verify(dataset_dir: str, quick: bool = False, num_workers: int = 1,
           deep: bool = False) -> tuple[list[str], int, int, str]:
    """(problems, number of files checked, bytes checked, what was done with the tokenizer) of a dataset folder."""
    manifests = find_manifests(dataset_dir)
    if not manifests:
        return [f"{dataset_dir}: no manifest.json (no step finished here, or published without manifests)"], 0, 0, \
            "tokenizer not checked"
    problems, listed, entries = [], set(), []
    try:
        partial = set(published.read_partial(dataset_dir, PARTIAL_FILE))
    except UserError as e:
        problems.append(str(e))
        partial = set()
    for path in manifests:
        try:
            manifest = read_manifest(path, dataset_dir)
        except UserError as e:
            problems.append(str(e))
            continue
        for f in manifest["files"]:
            listed.add(f["path"])
            entries.append((manifest.get("step"), f))
    problems += _unlisted(dataset_dir, listed)
    vocab = _vocab_size(dataset_dir)

    present = []
    for step, f in entries:
        local = published.local_path(dataset_dir, f["path"])
        if why := published.file_problem(dataset_dir, f["path"]):
            problems.append(f"{f['path']}: {why}")
        elif not os.path.isfile(local):
            if f["path"] not in partial:
                problems.append(f"{f['path']}: missing (the manifest lists it)")
        elif os.path.getsize(local) != f["size"]:
            problems.append(f"{f['path']}: {os.path.getsize(local)} bytes, the manifest says {f['size']}")
        else:
            present.append((local, f["path"], f["sha256"], step, vocab, quick, deep))
    size = sum(os.path.getsize(item[0]) for item in present)
    pkl = next((item for item in present if item[1] == TOKENIZER_PKL), None)
    tokenizer_check = []  # its problem (or None), from a thread: the check's child process runs beside the hashing
    if pkl is not None and not quick:
        checker = threading.Thread(target=lambda: tokenizer_check.append(published.tokenizer_problem(pkl[0])),
                                   daemon=True)
        checker.start()
    loadable = []  # .pt files whose archive is sound: loaded last, here, one at a time
    with bar(total=size, desc="verify", unit="B", unit_scale=True) as progress:
        for item, (file_problems, nbytes) in zip(present, thread_map(check_file, present, num_workers)):
            problems += file_problems
            progress.update(nbytes)
            if item[1].endswith(".pt") and deep and not file_problems:
                loadable.append(item)
    problems += _check_configs(dataset_dir, entries)
    if pkl is None:
        tokenizer = "tokenizer not checked (none listed and present)"
    elif quick:
        tokenizer = "tokenizer not checked (--quick)"
    else:
        tokenizer = "tokenizer loaded as steps 2-4 load it, a sample encoded"
        while checker.is_alive():
            checker.join(0.1)  # in slices: a signal's handler runs between them
        if why := tokenizer_check[0]:
            problems.append(f"{TOKENIZER_PKL}: {why}")
    # one at a time, after the hashing: torch's ~250 MB and each load's memory bound, once
    for local, rel, _, step, _, _, _ in loadable:
        problems += _load_pt(local, rel, step)
    return problems, len(entries), size, tokenizer


def check_file(item) -> tuple[list[str], int]:
    """One file: its hash, and what its kind promises (.bin header; with deep, its ids; .pt archive)."""
    local, rel, sha256, step, vocab, quick, deep = item
    name = os.path.basename(rel)
    problems = []
    if name.endswith(".bin"):
        problems += _check_bin(local, rel, vocab, mask=name.endswith("_mask.bin"), scan=deep)
    elif name.endswith(".pt") and not quick:  # its zip directory only: loading it is --deep's
        problems += [f"{rel}: {why}"] if (why := published.pt_problem(local)) else []
    if not quick and hash_file(local).sha256 != sha256:
        problems.append(f"{rel}: sha256 differs from the manifest's (corrupt or changed)")
    return problems, os.path.getsize(local)


def _check_bin(path: str, rel: str, vocab: int | None, mask: bool, scan: bool) -> list[str]:
    try:
        tokens = read_bin(path)
    except InputError as e:
        return [f"{rel}: {e.what}"]
    if not scan or not len(tokens):
        return []
    top = int(tokens.max())
    if mask and top > 1:
        return [f"{rel}: a mask holds values other than 0/1 (max {top})"]
    if not mask and vocab is not None and top >= vocab:
        return [f"{rel}: token id {top} is not below the vocab size {vocab}"]
    return []


def _load_pt(path: str, rel: str, step: str | None) -> list[str]:
    """A .pt whose archive published.pt_problem passed: it loads, under a memory bound, with the keys."""
    torch = import_torch()
    try:
        with published.memory_bound(PT_LOAD_BUDGET + PT_LOAD_PER_BYTE * os.path.getsize(path)):
            data = torch.load(path, weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, a pickle weights_only refuses
        return [f"{rel}: does not load with torch.load(weights_only=True) ({type(e).__name__})"]
    if rel.endswith("token_bytes.pt") or rel.endswith("token_bytes_exact.pt"):
        ok = isinstance(data, torch.Tensor) and data.dtype == torch.int32 and data.dim() == 1
        return [] if ok else [f"{rel}: expected a 1-d int32 tensor"]
    keys = _step_named(step).pt_keys
    if keys and (not isinstance(data, dict) or not keys <= set(data)):
        missing = sorted(keys - set(data)) if isinstance(data, dict) else "all"
        return [f"{rel}: missing key(s) {missing}"]
    return []


def _unlisted(dataset_dir: str, listed: set[str]) -> list[str]:
    """Shard and .pt files no manifest lists (outside hidden folders: staging, caches)."""
    out = []
    for root, dirs, names in os.walk(dataset_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), dataset_dir).replace(os.sep, "/")
            if name.endswith((".bin", ".pt")) and rel not in listed:
                out.append(f"{rel}: no manifest lists it (left from another run?)")
    return sorted(out)


def _read_config(path: str, dataset_dir: str, problems: list[str]) -> dict:
    """A config.json as a dict ({} when it is missing, unreadable or not an object: said in `problems`)."""
    try:
        return published.read_config(path, dataset_dir) or {}
    except UserError as e:
        problems.append(str(e))
        return {}


def _vocab_size(dataset_dir: str) -> int | None:
    vocab = _read_config(os.path.join(dataset_dir, CONFIG_FILE), dataset_dir, []).get("vocab_size")  # said below
    return vocab if type(vocab) is int else None


def _token_counter(where: str, config: dict):
    """The token count of a listed shard from its size, in the format config.json names (None: a format
    this package does not know, said in the problem)."""
    dtype = config.get("token_dtype", "uint16")  # folders made before --token-dtype: uint16
    if not isinstance(dtype, str) or dtype not in TOKEN_DTYPES:
        return None, [f"{where}: unknown token_dtype {published.printable(repr(dtype))}"]
    return (lambda entry: _tokens(entry, dtype)), []


def _tokens(entry: dict, token_dtype: str) -> int:
    return (entry["size"] - HEADER_BYTES) // token_bytes(token_dtype)


def _check_configs(dataset_dir: str, entries: list[tuple[str, dict]]) -> list[str]:
    """The numbers of each step's config.json against its manifest's files."""
    problems = []
    by_step: dict[str, list[dict]] = {}
    for step, f in entries:
        by_step.setdefault(step, []).append(f)
    root = _read_config(os.path.join(dataset_dir, CONFIG_FILE), dataset_dir, [])
    for step, step_files in by_step.items():
        config_entry = next((f for f in step_files if f["path"] == _step_named(step).prefix() + CONFIG_FILE), None)
        config = _read_config(published.local_path(dataset_dir, config_entry["path"]), dataset_dir,
                              problems) if config_entry else {}
        if not config:
            problems.append(f"{step}: its config.json is missing, unreadable or not a JSON object")
            continue
        where = config_entry["path"]
        check = _step_named(step).config_check
        problems += CONFIG_CHECKS[check](where, config, step_files) if check else []
        fingerprint = config.get("tokenizer_fingerprint")
        if step != layout.PRETRAIN.name and root and fingerprint and fingerprint != root.get("tokenizer_fingerprint"):
            problems.append(f"{where}: made with another tokenizer than the dataset's (tokenizer_fingerprint differs)")
    return problems


def _step_named(name: str | None) -> layout.Step:
    """The step a manifest names (a step of no name or another name gets no step's checks)."""
    return next((s for s in layout.STEPS if s.name == name), layout.Step(str(name), ""))


def _check_shards(where: str, config: dict, step_files: list[dict]) -> list[str]:
    """Step 1: the shard counts and token counts per split, and the tokenizer's hash."""
    tokens_of, problems = _token_counter(where, config)
    if tokens_of is None:
        return problems
    sub = f"{config['bin_subdir']}/" if config.get("bin_subdir") else ""
    for split in ("train", "val"):
        shards = [f for f in step_files if f["path"].startswith(sub)
                  and (m := layout.PRETRAIN.shard_file.fullmatch(f["path"][len(sub):])) and m.group(1) == split]
        if config.get(f"{split}_shards") != len(shards):
            problems.append(f"{where}: {split}_shards is {config.get(f'{split}_shards')}, the manifest lists "
                            f"{len(shards)}")
        if config.get(f"{split}_tokens") != sum(map(tokens_of, shards)):
            problems.append(f"{where}: {split}_tokens is {config.get(f'{split}_tokens')}, the shards hold "
                            f"{sum(map(tokens_of, shards))}")
    pkl = next((f for f in step_files if f["path"] == f"{layout.TOKENIZER_FOLDER}/{TOKENIZER_FILE}"), None)
    if pkl is None or pkl["sha256"] != config.get("tokenizer_sha256"):
        problems.append(f"{where}: tokenizer_sha256 is not the listed {layout.TOKENIZER_FOLDER}/{TOKENIZER_FILE}'s")
    return problems


def _check_sft_shards(where: str, config: dict, step_files: list[dict]) -> list[str]:
    """SFT: every token shard has its mask, of the same count; the counts per split."""
    tokens_of, problems = _token_counter(where, config)
    if tokens_of is None:
        return problems
    for split in ("train", "val"):
        tokens = [f for f in step_files if (m := layout.SFT.shard_file.fullmatch(os.path.basename(f["path"])))
                  and m.group(1) == split and not m.group(3)]
        masks = {os.path.basename(f["path"]): f for f in step_files if f["path"].endswith("_mask.bin")}
        for f in tokens:
            mask = masks.get(os.path.basename(f["path"])[:-4] + "_mask.bin")
            if mask is None:
                problems.append(f"{f['path']}: its _mask.bin is not listed")
            elif mask["size"] != f["size"]:
                problems.append(f"{f['path']}: its _mask.bin has another token count")
        if config.get(f"{split}_shards") != len(tokens) or config.get(f"{split}_tokens") != sum(map(tokens_of, tokens)):
            problems.append(f"{where}: {split}_shards / {split}_tokens do not match the listed shards")
    return problems


def _check_tasks(where: str, config: dict, step_files: list[dict]) -> list[str]:
    """Eval steps: every task the config lists has its file in the manifest."""
    files = {os.path.basename(f["path"]) for f in step_files}
    tasks = config.get("tasks") if isinstance(config.get("tasks"), list) else []
    missing = [t.get("file") if isinstance(t, dict) else t for t in tasks
               if not isinstance(t, dict) or not isinstance(t.get("file"), str) or t["file"] not in files]
    return [f"{where}: task file(s) {missing} are not listed in its manifest"] if missing else []


CONFIG_CHECKS = {"shards": _check_shards, "masked_shards": _check_sft_shards, "tasks": _check_tasks}

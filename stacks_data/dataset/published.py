"""What others publish, checked before use: manifests, configs, paths, files, tokenizers, .pt archives.

A dataset folder may come from a stranger (`download`), and `verify` is what tells a user it is safe
to train on. Everything a tool reads from such a folder goes through here first, and a failure is one
line naming the file and the entry:
- JSON (manifests, config.json, .partial.json) is read from a regular file inside the folder, of
  bounded size and nesting depth, and checked for shape before any field is used;
- a manifest path is relative, normalized, printable, not hidden, and names a file at a place the
  layout has (the top, or one step folder / tokenizer/ / a shard sub-folder deep);
- a listed file is a regular file inside the folder (no symlink leading out, no FIFO, no device);
- a .pt file is a zip of stored members no larger than the file before anything loads it;
- the tokenizer is checked the way steps 2-4 load it, its values too, with a timed encode.
"""

import contextlib
import json
import os
import posixpath
import re
import resource
import stat
import subprocess
import sys
import zipfile

import numpy as np

from stacks_data.dataset import layout
from stacks_data.errors import InputError

MAX_JSON_BYTES = 256 << 20  # a manifest of a million files is ~150 MB
MAX_JSON_DEPTH = 64  # ours are 4 deep
MAX_FILE_BYTES = 1 << 44  # 16 TiB: more than any one file of a dataset
MAX_PATH_CHARS = 512
PARTS_ALLOWED = 2  # "config.json", "tokenizer/tokenizer.pkl", "core_eval/x.pt", "climbmix/train_000000.bin"
SHA256 = re.compile(r"[0-9a-f]{64}")
ENCODE_SECONDS = 20  # a sane tokenizer encodes the sample in milliseconds (after a second of imports)
REFUSE = "do not use this dataset: re-download it from a source you trust, or regenerate it"


def printable(text: str) -> str:
    """`text` with control characters escaped: what others wrote, safe to print on a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


# ------------------------------------------------------------------------------------ layout


def manifest_paths() -> dict[str, str]:
    """Where manifests may lie in a dataset (relative path -> step): one per step folder, nowhere deeper."""
    return {f"{step.prefix()}manifest.json": step.name for step in layout.STEPS}


def path_problem(path) -> str | None:
    """Why a manifest path cannot name a dataset file (None: it can)."""
    if not isinstance(path, str) or not path:
        return "is empty or not a string"
    if len(path) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    if not path.isprintable():
        return "holds control characters"
    if path.startswith("/") or "\\" in path:
        return "is not a relative path with / separators"
    parts = path.split("/")
    if ".." in parts:
        return "leaves the dataset folder"
    if path.endswith("/") or posixpath.normpath(path) != path:
        return "is not a normalized file path"
    if any(part.startswith(".") for part in parts):
        return "names a hidden file (locks, staging and caches are never published)"
    if len(parts) > PARTS_ALLOWED:
        return f"is deeper than the layout allows ({PARTS_ALLOWED} levels)"
    if parts[-1] == "manifest.json":
        return "names a manifest as a file"
    return None


# ------------------------------------------------------------------------------------ files


def local_path(dataset_dir: str, rel: str) -> str:
    return os.path.join(dataset_dir, *rel.split("/"))


def file_problem(dataset_dir: str, rel: str) -> str | None:
    """Why the listed file `rel` is not a regular file inside the folder (None: it is, or it is missing)."""
    local = local_path(dataset_dir, rel)
    try:
        st = os.stat(local)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    root = os.path.realpath(dataset_dir)
    if os.path.commonpath([root, os.path.realpath(local)]) != root:
        return "is a symlink that leads out of the dataset folder"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, device or folder)"
    return None


def symlink_in_the_way(dataset_dir: str, rel: str) -> str | None:
    """The first folder of `rel` (below dataset_dir) that is a symlink, or `rel` itself if it is one."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if os.path.islink(local_path(dataset_dir, sub)):
            return sub
    return None


# ------------------------------------------------------------------------------------ JSON


def read_json(path: str, dataset_dir: str | None = None):
    """The JSON value in `path`, a regular file (inside dataset_dir when given) of bounded size and
    depth; None when it is missing. InputError naming the file otherwise."""
    shown = printable(path)
    if dataset_dir is not None and os.path.lexists(path):
        why = file_problem(dataset_dir, os.path.relpath(path, dataset_dir).replace(os.sep, "/"))
        if why:
            raise InputError(f"it {why}", shown, REFUSE)
    try:
        # O_NONBLOCK: a FIFO opens at once (and is then refused), instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror})", shown, REFUSE) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError("not a regular file (a FIFO, device or folder)", shown, REFUSE)
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise InputError(f"larger than {MAX_JSON_BYTES >> 20} MB", shown, REFUSE)
    if json_depth(data) > MAX_JSON_DEPTH:
        raise InputError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", shown, REFUSE)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InputError(f"not valid JSON ({printable(str(e))})", shown, REFUSE) from None


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped), in linear time."""
    codes = np.frombuffer(_STRINGS.sub(b'""', data), dtype=np.uint8)
    steps = (codes == ord("[")).astype(np.int32) + (codes == ord("{")) - (codes == ord("]")) - (codes == ord("}"))
    return int(np.cumsum(steps).max()) if steps.size else 0


def read_config(path: str, dataset_dir: str) -> dict | None:
    """A config.json (None when missing); InputError when it is not a JSON object."""
    value = read_json(path, dataset_dir)
    if value is not None and not isinstance(value, dict):
        raise InputError("not a JSON object", printable(path), REFUSE)
    return value


def read_partial(dataset_dir: str, name: str) -> list[str]:
    """The paths a partial download left out (.partial.json): [] when there is none."""
    path = os.path.join(dataset_dir, name)
    value = read_json(path, dataset_dir)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise InputError("not a list of paths", printable(path), "remove it and download again")
    return value


def check_manifest(value, path: str, where: str | None = None) -> dict:
    """A manifest's JSON value, checked: its step is the one of the folder it lies in (`where`, its
    path in the dataset, when known), every entry a layout path of that step, a bounded size and a
    sha256. InputError naming the file and the entry."""
    shown = printable(path)
    files = value.get("files") if isinstance(value, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise InputError("not a stacks-data manifest (expected files: [{path, size, sha256}])", shown, REFUSE)
    step = value.get("step")
    if not isinstance(step, str) or step not in {s.name for s in layout.STEPS}:
        raise InputError(f"unknown step {printable(repr(step))}", shown, REFUSE)
    if where is not None and manifest_paths().get(where) != step:
        raise InputError(f"a manifest of {step} in the wrong folder", shown, REFUSE)
    seen = set()
    for i, f in enumerate(files):
        rel, size, sha256 = f.get("path"), f.get("size"), f.get("sha256")
        entry = f"{shown}: files[{i}]" + (f" {printable(rel)!r}" if isinstance(rel, str) else "")
        why = path_problem(rel)
        if why is None and layout.step_of(rel).name != step:
            why = f"is not in the folder of {step}"
        if why is None and rel in seen:
            why = "is listed twice"
        if why is None and (type(size) is not int or not 0 <= size <= MAX_FILE_BYTES):
            why = "has no valid size"
        if why is None and not (isinstance(sha256, str) and SHA256.fullmatch(sha256)):
            why = "has no valid sha256"
        if why:
            raise InputError(f"manifest path {why}", entry, REFUSE)
        seen.add(rel)
    return value


# ------------------------------------------------------------------------------------ .pt files


def pt_problem(path: str) -> str | None:
    """Why a .pt file must not be loaded (None: it may). torch.save writes a zip of stored members;
    a compressed member, or one larger than the file, is a decompression bomb or not ours."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        return f"not a torch.save zip archive ({printable(str(e))})"
    total = 0
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED:
            return f"member {printable(m.filename)!r} is compressed (torch.save never compresses): not loaded"
        total += m.file_size
        if m.file_size > size or total > size:
            return f"member {printable(m.filename)!r} is larger than the file: not loaded"
    return None


@contextlib.contextmanager
def memory_bound(extra_bytes: int):
    """Within the block, this process may allocate at most `extra_bytes` more (RLIMIT_DATA: heap and
    private mappings); past that an allocation fails (MemoryError / RuntimeError) instead of the machine
    swapping. The limit in force before comes back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))
    limit = used + extra_bytes
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


# ------------------------------------------------------------------------------------ tokenizer


def tokenizer_problem(path: str) -> str | None:
    """Load tokenizer.pkl the way steps 2-4 do (restricted unpickler, value checks, tiktoken) and encode
    a short sample, in a child process with a time limit; None when all of it works."""
    code = "import sys; from stacks_data.tokenizer import encode_sample; encode_sample(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(__file__)),
                                                                      os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                              timeout=ENCODE_SECONDS, env=env)
    except subprocess.TimeoutExpired:
        return f"encoding a short sample takes over {ENCODE_SECONDS}s (a pathological pattern?)"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return printable(lines[-1].removeprefix("error: "))
    return None

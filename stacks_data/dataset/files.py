"""Writing output files: atomically (a temp name in the same folder, then a rename), hashed on the way.

Every writer returns a FileRecord (path, size, sha256) computed from the bytes it wrote, so that a
step's manifest costs no second read of its outputs. Also reading small input files: one line naming
the file (and line) when one cannot be read.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass

from stacks_data.errors import InputError, from_os_error
from stacks_data.interrupts import import_torch

TMP_SUFFIX = ".tmp"  # an interrupted write leaves at most <name>.tmp, which the next run removes


@dataclass(frozen=True)
class FileRecord:
    path: str
    size: int
    sha256: str


def write_bytes(path: str, chunks) -> FileRecord:
    """Write the byte buffers `chunks` (bytes, memoryviews, arrays) to path, atomically, hashing them."""
    digest, size = hashlib.sha256(), 0
    tmp = path + TMP_SUFFIX
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                size += f.write(chunk)
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        if e.filename is None:  # a failed write(2) (disk full) names no file: this one
            e.filename = path
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise
    return FileRecord(path, size, digest.hexdigest())


def lock_file(lock_path: str, shared: bool = False, wait: bool = True) -> int:
    """Open `lock_path` (created if need be) and flock(2) it: the lock is held until the returned fd is
    closed, or the process dies (a crashed run never blocks the next). wait=False: BlockingIOError when
    another process holds it. The one lock scheme of the package (locked below, the dataset folder's locks)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def locked(path: str, shared: bool = False, wait: bool = True):
    """Hold a lock_file on `<folder of path>/.locks/<name>.lock` while the block runs."""
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), ".locks")
    os.makedirs(folder, exist_ok=True)
    fd = lock_file(os.path.join(folder, os.path.basename(path) + ".lock"), shared, wait)
    try:
        yield
    finally:
        os.close(fd)


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def read_text(path: str) -> str:
    """A UTF-8 text input file, newlines as open() gives them ("\n"). FileNotFoundError is the caller's
    to explain; any other failure is an InputError naming the file (and the line, for bad UTF-8)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise InputError("a folder, expected a file", path) from None
    except OSError as e:
        raise from_os_error(e) or InputError(f"cannot read it ({e.strerror})", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"not UTF-8 text (byte {data[e.start]:#04x})", f"{path}:{line}", "save it as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_json(path: str, kind: type = object):
    """The JSON value in `path` when it is a `kind` (dict, list...); None when the file is missing, does
    not read (damaged) or holds something else."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def write_json(path: str, obj) -> FileRecord:
    return write_bytes(path, [json_bytes(obj)])


def record_of(path: str, data: bytes) -> FileRecord:
    """The record `data` will have once written to `path` (to list a file before writing it)."""
    return FileRecord(path, len(data), hashlib.sha256(data).hexdigest())


def write_text(path: str, text: str) -> FileRecord:
    return write_bytes(path, [text.encode()])


def torch_save(obj, path: str) -> FileRecord:
    """torch.save(obj) to path. Serialized in memory first: the file is then written (and any
    error raised, with its path) by us, not by torch's C++ writer."""
    buffer = io.BytesIO()
    import_torch().save(obj, buffer)
    return write_bytes(path, [buffer.getbuffer()])


def torch_save_plain(obj, path: str) -> FileRecord:
    """torch_save for payloads of plain Python objects (no tensors): the same bytes, ~10x faster.

    torch.save calls its Python persistent_id hook (which looks for tensor storages) on every
    object it pickles, i.e. once per int of a token list; without tensors it always answers None,
    so dropping the hook changes nothing in the file (tests/test_core_eval.py checks the bytes).
    """
    buffer = io.BytesIO()
    import_torch().save(obj, buffer, pickle_module=_PlainPickle)
    return write_bytes(path, [buffer.getbuffer()])


class _PlainPickler(pickle.Pickler):
    def __init_subclass__(cls, **kwargs):
        # torch.save pickles with a subclass of pickle_module.Pickler that defines persistent_id
        super().__init_subclass__(**kwargs)
        if "persistent_id" in cls.__dict__:
            del cls.persistent_id


class _PlainPickle:
    """A pickle_module for torch.save: the standard pickle minus the persistent_id hook."""
    Pickler = _PlainPickler
    Unpickler = pickle.Unpickler


def hash_file(path: str) -> FileRecord:
    """The record of a file already on disk (read in 8 MB blocks)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            digest.update(block)
            size += len(block)
    return FileRecord(path, size, digest.hexdigest())


def file_damage(expected: FileRecord, against: str) -> str | None:
    """Why the file at expected.path is not the one of that size and sha256 (None: it is); `against` says
    where they come from, e.g. "in the manifest"."""
    path, size, sha256 = expected.path, expected.size, expected.sha256
    if not os.path.lexists(path):
        return "missing"
    if os.path.islink(path) or not os.path.isfile(path):
        return "not a regular file"
    if (actual := os.path.getsize(path)) != size:
        return f"{actual:,} bytes, not the {size:,} {against}"
    if hash_file(path).sha256 != sha256:
        return f"sha256 differs from the one {against}"
    return None


def remove_temp_files(folder: str) -> None:
    """Remove what interrupted writes left in `folder` (not recursive)."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(TMP_SUFFIX):
                _remove_quietly(os.path.join(folder, name))


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000

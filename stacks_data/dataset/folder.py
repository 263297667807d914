"""
The dataset folder, and the promises every step keeps about it, made here once for all steps.

- Lock. A step holds `<dataset>/.lock.<step>` exclusively while it runs: a second run of the same
  step on the same folder fails at once, naming the PID of the first. All steps also lock
  `<dataset>/.lock.tokenizer`: step 1 and `download` (which write the tokenizer) exclusively,
  steps 2-4 (which read it) shared, so they run side by side but never while step 1 does; `upload`
  exclusively too (it reads every step's files: none may change under it). The
  locks are flock(2) locks: the kernel drops them when their process dies, so a crashed run never
  blocks the next.
- Publish, don't overwrite. A step whose outputs are a sub-folder (`core_eval/`, `sft/`,
  `chat_eval/`) builds it whole as `.<name>.staging/`, writes its config.json and manifest.json
  last, then swaps it for the old folder in one atomic rename (renameat2 RENAME_EXCHANGE): at every
  instant the folder is the complete old one or the complete new one. What a killed run left is
  removed by the next run of that step.
Step 1's shards are too large to build twice; steps/pretrain keeps its own promise with the lock from
here (resume, refuse other settings, config.json removed first and written last).
"""

import ctypes
import errno
import glob
import os
import shutil

from stacks_data.dataset import layout
from stacks_data.dataset.files import FileRecord, lock_file, write_json
from stacks_data.dataset.manifest import CONFIG_FILE, MANIFEST_FILE, write_manifest
from stacks_data.errors import OutputError

LOCK_PREFIX = ".lock."


class DatasetLock:
    """`with DatasetLock(dataset_dir, step):` holds the step's locks on the folder (see above)."""

    def __init__(self, dataset_dir: str, step: str):
        self.dataset_dir, self.step = dataset_dir, step
        self.fds: list[int] = []

    def __enter__(self) -> "DatasetLock":
        command = layout.command(self.step)
        writer, alone = command.writes_tokenizer, command.alone
        self.created = writer and not os.path.exists(self.dataset_dir)
        if writer:
            os.makedirs(self.dataset_dir, exist_ok=True)
        try:
            own = self._lock(self.step)
            if own is None:
                pid = _pid_in(self._path(self.step))
                raise OutputError(f"another `{self.step}` run{_pid_text(pid)} is writing this dataset",
                                  self.dataset_dir, "wait for it to finish, or stop it")
            os.ftruncate(own, 0)
            os.pwrite(own, f"{os.getpid()}\n".encode(), 0)
            if self._lock("tokenizer", shared=not alone) is None:
                raise self._tokenizer_busy(alone)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.fds:  # the first is this step's lock, holding its PID: gone with it (a crash leaves a dead PID)
            os.ftruncate(self.fds[0], 0)
        for fd in self.fds:
            os.close(fd)  # closing the file drops its flock
        self.fds = []
        # a folder this run created and left with nothing but its locks (it failed early) goes
        if self.created and all(n.startswith(LOCK_PREFIX) for n in os.listdir(self.dataset_dir)):
            shutil.rmtree(self.dataset_dir, ignore_errors=True)

    def _path(self, name: str) -> str:
        return os.path.join(self.dataset_dir, LOCK_PREFIX + name)

    def _lock(self, name: str, shared: bool = False) -> int | None:
        try:
            fd = lock_file(self._path(name), shared, wait=False)
        except BlockingIOError:
            return None
        self.fds.append(fd)
        return fd

    def _tokenizer_busy(self, alone: bool) -> OutputError:
        running = {}  # step -> PID, of the other steps running on this folder
        for path in sorted(glob.glob(self._path("*"))):
            name, pid = os.path.basename(path)[len(LOCK_PREFIX):], _pid_in(path)
            if name not in ("tokenizer", self.step) and pid and _alive(pid):
                running[name] = pid
        exclusive = [f"`{name}` PID {pid}" for name, pid in running.items() if _alone(name)]
        sharing = [f"`{name}` PID {pid}" for name, pid in running.items() if not _alone(name)]
        if exclusive or not alone:
            doing = "is uploading this dataset" if {n for n in running if _alone(n)} == {layout.UPLOAD.name} \
                else "is writing the tokenizer of this dataset"
            return OutputError(f"{' and '.join(exclusive) or 'another run'} {doing}", self.dataset_dir,
                               "wait for it to finish, then rerun")
        readers = ", ".join(sharing) or "PID unknown"
        why = "the tokenizer must not change under them" if layout.command(self.step).writes_tokenizer else \
            "an upload must not mix their old and new files"
        return OutputError(f"steps that read the tokenizer are running ({readers})", self.dataset_dir,
                           f"wait for them to finish: {why}")


def _alone(name: str) -> bool:
    """The command of that lock has the folder to itself (a lock of another name excludes no one)."""
    return any(c.name == name and c.alone for c in layout.COMMANDS)


def _pid_in(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _pid_text(pid: int | None) -> str:
    return f" (PID {pid})" if pid else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_folders(*paths: str) -> None:
    """Output folders must be folders where they exist (a file there would fail a long run at its end,
    or be swapped away by a StagedFolder)."""
    for path in paths:
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError("a file is in the way of an output folder", path, "move it away, or pick another "
                              "--out-dir / --dataset-name")


class StagedFolder:
    """`<dataset>/<name>/`, built whole under `<dataset>/.<name>.staging/` and swapped in by publish().

    with StagedFolder(dataset_dir, "core_eval") as folder:
        records.append(write_something(os.path.join(folder.path, ...)))
        folder.publish("core-eval", config, records)

    Leaving the block without publishing (an error, Ctrl-C) removes the staging folder and leaves the
    published one as it was. Callers hold the step's DatasetLock, so the fixed staging name is theirs.
    """

    def __init__(self, dataset_dir: str, name: str):
        self.dataset_dir = dataset_dir
        self.final = os.path.join(dataset_dir, name)
        self.path = os.path.join(dataset_dir, f".{name}.staging")
        self.old = os.path.join(dataset_dir, f".{name}.old")
        self.published = False

    def __enter__(self) -> "StagedFolder":
        check_output_folders(self.final)
        self._clean_leftovers()
        os.makedirs(self.path)
        return self

    def __exit__(self, *exc) -> None:
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)

    def publish(self, step: str, config: dict, records: list[FileRecord]) -> str:
        """Write config.json and manifest.json (last), then swap the folder in; returns the manifest's path."""
        records = records + [write_json(os.path.join(self.path, CONFIG_FILE), config)]
        unrecorded = sorted(set(os.listdir(self.path)) - {os.path.relpath(r.path, self.path) for r in records})
        if unrecorded:  # a writer that bypassed the records: a bug, and the manifest would be incomplete
            raise RuntimeError(f"{step} wrote files it did not record: {unrecorded}")
        write_manifest(self.path, self.dataset_dir, step, records, final_folder=self.final)
        if os.path.exists(self.final):
            if not _exchange(self.path, self.final):
                # no atomic exchange on this system: two renames, and _clean_leftovers undoes a crash between
                os.rename(self.final, self.old)
                os.rename(self.path, self.final)
            shutil.rmtree(self.path if os.path.exists(self.path) else self.old, ignore_errors=True)
        else:
            os.rename(self.path, self.final)
        self.published = True
        return os.path.join(self.final, MANIFEST_FILE)

    def _clean_leftovers(self) -> None:
        if os.path.isdir(self.old):
            if not os.path.exists(self.final):
                os.rename(self.old, self.final)  # killed between the two renames: the old folder is back
            else:
                shutil.rmtree(self.old)
        if os.path.isdir(self.path):
            shutil.rmtree(self.path)
        elif os.path.lexists(self.path):  # a file (what a swap with a file in the way left)
            os.remove(self.path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)

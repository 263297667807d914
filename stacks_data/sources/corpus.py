"""
The pretraining corpora: which parquet shards, where they come from, where they are cached.

- `fineweb-edu` (default): karpathy/fineweb-edu-100b-shuffle, shard_00000 .. shard_01822.parquet
- `climbmix`: karpathy/climbmix-400b-shuffle, shard_00000 .. shard_06542.parquet; its .bin shards go
  to the `climbmix/` sub-folder, where the seed project's current training scripts read them
- `hf:OWNER/NAME`: any parquet dataset on the hub: the files matching --files, in name order

Shards live in a local folder (--parquet-dir, else a cache folder per corpus under
$NANOCHAT_BASE_DIR or ~/.cache/nanochat); a shard already there is used as it is, so a folder filled
by hand works offline; a missing one is downloaded (and checked: parquet footer and text column)
before it is renamed into place.
"""

import contextlib
import fnmatch
import glob
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stacks_data.remote.http import check_reachable, download, hub_endpoint
from stacks_data.errors import FlagError, InputError, OutputError
from stacks_data.dataset.files import locked, read_json, write_json
from stacks_data.sources.parquet import check_complete, check_text_type, open_parquet
from stacks_data.progress import bar

PRESETS = {  # name: (repo, dataset name prefix, cache folder, default --num-shards, .bin sub-folder, shards)
    "fineweb-edu": ("karpathy/fineweb-edu-100b-shuffle", "fineweb_edu", "base_data", 370, "", 1823),
    "climbmix": ("karpathy/climbmix-400b-shuffle", "climbmix", "base_data_climbmix", 170, "climbmix", 6543),
}
MAX_PARALLEL_DOWNLOADS = 8


@dataclass(frozen=True)
class Corpus:
    name: str                        # the --corpus value
    repo_id: str
    prefix: str                      # of the default dataset name
    cache_name: str                  # the default --parquet-dir's folder name
    default_num_shards: int | None   # None: every file that matches --files
    bin_subdir: str                  # where the seed's training scripts look for this corpus's .bin shards
    num_available: int | None        # shard_00000.. shard_<n-1>; None: the files are listed (hf:)

    def default_dataset_name(self, vocab_size: int, tok_train_shards: int, num_shards: int | None) -> str:
        """fineweb_edu_32k_8_370 at the default flags: the seed's name, following the flags (a vocab
        that is not a multiple of 1024 is written out: fineweb_edu_4500_2_8)."""
        vocab = f"{vocab_size // 1024}k" if vocab_size % 1024 == 0 else str(vocab_size)
        return f"{self.prefix}_{vocab}_{tok_train_shards}_{num_shards or 'all'}"

    def default_base_url(self) -> str:
        return f"{hub_endpoint()}/datasets/{self.repo_id}/resolve/main"


def get_corpus(name: str) -> Corpus:
    if name in PRESETS:
        return Corpus(name, *PRESETS[name])
    if name.startswith("hf:") and re.fullmatch(r"[\w.-]+/[\w.-]+", name[3:]):
        repo = name[3:]
        prefix = re.sub(r"[^a-z0-9]+", "_", repo.split("/")[1].lower()).strip("_")
        return Corpus(name, repo, prefix, "base_data_hf_" + repo.replace("/", "__"), None, "", None)
    raise FlagError(f"unknown corpus {name!r}", "--corpus",
                    f"pass one of {', '.join(PRESETS)}, or hf:OWNER/NAME for a parquet dataset on the hub")


def default_parquet_dir(corpus: Corpus) -> str:
    base = os.environ.get("NANOCHAT_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanochat")
    return os.path.join(base, corpus.cache_name)


def shard_names(corpus: Corpus, num_shards: int | None, files_pattern: str, parquet_dir: str,
                local_only: bool) -> list[str]:
    """The repo paths of the run's shards, in order (the last is val).

    Numbered corpora: shard_00000.parquet ... For hf: corpora the files matching files_pattern: those
    in parquet_dir when it has any and `local_only` (an explicit --parquet-dir: the offline form),
    else the hub's listing.
    """
    if corpus.num_available is not None:
        if num_shards > corpus.num_available:
            raise FlagError(f"{corpus.name} has {corpus.num_available:,} shards, asked for {num_shards:,}",
                            "--num-shards", f"pass at most {corpus.num_available}")
        return [f"shard_{i:05d}.parquet" for i in range(num_shards)]
    names = _local_names(parquet_dir, files_pattern) if local_only else []
    if not names:
        from stacks_data.remote.hub import list_files

        names = list_files(corpus.repo_id, files_pattern, offline=f"put the files in a folder and pass "
                                                                  f"--parquet-dir DIR (DIR/{files_pattern})")
    if not names:
        raise InputError(f"no file of {corpus.repo_id} matches {files_pattern!r}", "--files",
                         "check the pattern (it is matched against paths in the repo, e.g. 'data/*.parquet')")
    if num_shards is not None and num_shards > len(names):
        raise FlagError(f"{corpus.name} has {len(names)} files matching {files_pattern!r}, asked for {num_shards}",
                        "--num-shards", f"pass at most {len(names)}")
    return names[:num_shards] if num_shards is not None else names


def _local_names(parquet_dir: str, pattern: str) -> list[str]:
    paths = glob.glob(os.path.join(parquet_dir, pattern), recursive=True)
    names = sorted(os.path.relpath(p, parquet_dir).replace(os.sep, "/") for p in paths)
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


@contextlib.contextmanager
def parquet_dir_lock(parquet_dir: str, deleting: bool):
    """Runs may share a parquet folder (a cache: each file is downloaded once), but one that deletes
    shards there (--max-cached-shards) must have it to itself."""
    if not deleting and os.path.isdir(parquet_dir) and not os.access(parquet_dir, os.W_OK):
        yield  # read-only (a shared mount, say): no run deletes there, and no lock file can be made
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(os.path.join(parquet_dir, "shards"), shared=not deleting, wait=False))
        except BlockingIOError:
            raise OutputError("another pretrain run uses this parquet folder" + (
                "" if deleting else " with --max-cached-shards (it deletes shards there)"),
                f"--parquet-dir {parquet_dir}", "wait for it, or give this run a folder of its own") from None
        yield


CAPPED_DOWNLOADS = ".capped_downloads.json"  # in the parquet folder: see Shards


class Shards:
    """Where the run's shards are on disk, and how a missing one is fetched.

    `downloaded` holds the shards a capped run (--max-cached-shards) may delete: those it downloaded.
    A capped run also lists each download, before it starts, in the folder's CAPPED_DOWNLOADS, so that
    the next capped run takes over what a killed one left (else they would stay, past the cap, for
    good); files the user put there are never listed. Capped runs have the folder to themselves.
    """

    def __init__(self, names: list[str], parquet_dir: str, base_url: str, text_column: str, capped: bool = False):
        self.names, self.parquet_dir, self.base_url, self.text_column = names, parquet_dir, base_url, text_column
        self.downloaded: set[str] = set()
        self.record = os.path.join(parquet_dir, CAPPED_DOWNLOADS) if capped else None
        self.listed: set[str] = set()  # the names in the record (downloads under way included)
        self.lock = threading.Lock()
        if self.record:
            self.listed = {n for n in read_json(self.record, list) or [] if os.path.exists(self.path(n))}
            self.downloaded = set(self.paths(sorted(self.listed)))

    def path(self, name: str) -> str:
        return os.path.join(self.parquet_dir, *name.split("/"))

    def paths(self, names: list[str] | None = None) -> list[str]:
        return [self.path(n) for n in (self.names if names is None else names)]

    def fetch(self, name: str) -> str:
        """The local path of a shard, downloaded first when missing."""
        path = self.path(name)
        if os.path.exists(path):
            return path
        if self.record:  # listed first: a kill after the download must not leave it unlisted
            with self.lock:
                self.listed.add(name)
                write_json(self.record, sorted(self.listed))
        download(f"{self.base_url.rstrip('/')}/{name}", path, verify=self.check,
                 offline=f"download the shards elsewhere and pass --parquet-dir DIR (DIR/{name}, ...)")
        with self.lock:
            self.downloaded.add(path)
        return path

    def check(self, path: str) -> None:
        """A downloaded shard: ValueError when incomplete (the download is tried again), InputError when
        it has no text column or no rows (final)."""
        check_complete(path)
        self.check_content(path)

    def check_content(self, path: str) -> None:
        """InputError unless `path` is a parquet file with the text column and at least one row."""
        try:
            parquet = open_parquet(path, [self.text_column])
        except InputError as e:
            if "missing column" not in e.what:
                raise
            raise InputError(e.what, path, "pass --text-column with the column that holds the documents") from None
        check_text_type(parquet.schema_arrow.field(self.text_column).type, path, self.text_column)
        rows = parquet.metadata.num_rows
        if rows == 0:
            raise InputError("the shard has no rows", path, "replace it with a shard that has documents")

    def check_local(self) -> None:
        """Check the shards already on disk (footers only: cheap), so that a bad one is found before
        any work, not midway; downloaded ones are checked as they arrive."""
        for path in self.paths():
            if os.path.exists(path):
                self.check_content(path)

    def check_downloadable(self) -> None:
        """If the run will download, find out now whether it can: not after training, or after the
        dataset folder lost its finished work."""
        missing = [p for p in self.paths() if not os.path.exists(p)]
        if missing:
            check_reachable(self.base_url, f"download the shards elsewhere and pass --parquet-dir DIR "
                                           f"({len(missing)} of the run's shards are not in {self.parquet_dir})")

    def fetch_all(self, names: list[str]) -> list[str]:
        """Local paths of `names`, downloading the missing ones (in parallel)."""
        missing = [n for n in names if not os.path.exists(self.path(n))]
        if missing:
            with ThreadPoolExecutor(min(MAX_PARALLEL_DOWNLOADS, len(missing))) as pool:
                for _ in bar(iterable=pool.map(self.fetch, missing), total=len(missing),
                              desc=f"download to {self.parquet_dir}", unit="shard"):
                    pass
        return self.paths(names)


class ShardStream:
    """The run's shards in the order the tokenizer reads them, downloaded while everything else runs.

    Up to `parallel` downloads run at once, on the shards of `order` (local paths) within `lookahead`
    of the one being read, so tokenization starts as soon as its first shard is there and the two
    halves overlap. With `max_cached`, at most that many of the run's shards are on disk at once: a shard is
    deleted when released (its row groups all read by the workers), or, to make room for one needed
    sooner, when it is the one needed last (it comes back when needed); `pinned` shards (the
    tokenizer's, while the caller reads them) stay until unpin(). Only shards this run downloaded are
    ever deleted: files that were in the folder already are the user's. A download that fails is raised
    by get() of that shard, in order: what was finished before it stays resumable.
    """

    def __init__(self, shards: Shards, order: list[str], max_cached: int | None, pinned: list[str] = (),
                 parallel: int = 4, lookahead: int = 16):
        self.shards, self.order, self.max_cached = shards, order, max_cached
        self.names = dict(zip(shards.paths(), shards.names))  # local path -> name in the repo
        self.index = {path: i for i, path in enumerate(order)}
        self.lookahead = min(lookahead, max_cached) if max_cached else lookahead
        self.state = {path: "ready" if os.path.exists(path) else "absent" for path in order}
        self.downloads = sum(state == "absent" for state in self.state.values())  # at the start
        self.pinned = set(pinned)
        self.errors: dict[str, BaseException] = {}
        self.reading = 0  # index in order of the shard the reader asked for last
        self.waited = 0.0  # seconds the reader waited for downloads
        self.downloaded_bytes = 0
        self.closed = False
        self.cond = threading.Condition()
        if max_cached:
            self._remove_unneeded()
        # daemon threads: an interrupted run does not wait for a download to finish (a .part is left)
        for _ in range(min(parallel, self.lookahead)):
            threading.Thread(target=self._download_loop, daemon=True).start()

    def _deletable(self, path: str) -> bool:
        return path in self.shards.downloaded and path not in self.pinned

    def _remove_unneeded(self) -> None:
        """With a cap, the shards it downloaded that the run no longer reads (nor pins) go."""
        for path in self.names:
            if path not in self.state and self._deletable(path) and os.path.exists(path):
                os.remove(path)

    def unpin(self) -> None:
        with self.cond:
            self.pinned.clear()
            if self.max_cached:
                self._remove_unneeded()
            self.cond.notify_all()

    def _on_disk(self) -> int:
        """The run's shards on disk or downloading that count against the cap (the user's own do not)."""
        held = {p for p, s in self.state.items() if s == "downloading" or s == "ready" and p in self.shards.downloaded}
        return len(held | {p for p in self.pinned if p in self.shards.downloaded and os.path.exists(p)})

    def _next_download(self) -> str | None:
        for index in range(self.reading, min(len(self.order), self.reading + self.lookahead + 1)):
            path = self.order[index]
            if self.state[path] != "absent":
                continue
            if not self.max_cached or self._on_disk() < self.max_cached:
                return path
            # full: make room by evicting the shard needed last, if it is needed after this one
            later = [p for p in self.order[index + 1:] if self.state[p] == "ready" and self._deletable(p)]
            if later:
                os.remove(later[-1])
                self.state[later[-1]] = "absent"
                return path
            return None
        return None

    def _download_loop(self) -> None:
        while True:
            with self.cond:
                while not self.closed and (path := self._next_download()) is None:
                    self.cond.wait()
                if self.closed:
                    return
                self.state[path] = "downloading"
            try:
                self.shards.fetch(self.names[path])
                size, outcome = os.path.getsize(path), "ready"
            except BaseException as e:  # reported to the reader, in order
                size, outcome = 0, "failed"
                self.errors[path] = e
            with self.cond:
                self.state[path] = outcome
                self.downloaded_bytes += size
                self.cond.notify_all()

    def get(self, path: str) -> str:
        """`path`, once downloaded (the reader waits for it here)."""
        t0 = time.perf_counter()
        with self.cond:
            self.reading = self.index[path]
            self.cond.notify_all()
            while self.state[path] in ("absent", "downloading"):
                self.cond.wait()
            self.waited += time.perf_counter() - t0
            if self.state[path] == "failed":
                raise self.errors[path]
        return path

    def release(self, path: str) -> None:
        """The workers are done with `path`: with a cap, it is deleted and makes room."""
        if not self.max_cached:
            return
        with self.cond:
            if self.state[path] == "ready" and self._deletable(path):
                with contextlib.suppress(FileNotFoundError):  # removed by hand meanwhile: as good
                    os.remove(path)
                self.state[path] = "released"
                self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def shards_ready(self) -> int:
        return sum(1 for s in self.state.values() if s in ("ready", "released"))

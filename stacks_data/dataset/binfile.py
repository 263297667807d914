"""
The .bin token file: a 256 x int32 little-endian header, then the tokens.

header[0] = magic, header[1] = version, header[2] = number of tokens. Two formats (--token-dtype):
- uint16 (the default): magic 20240520, version 1, uint16 tokens: the format of modded-nanogpt /
  nanochat loaders, for a vocab of at most 65,536;
- uint32: llm.c's magic 20240801, version 7, uint32 tokens (dev/data/data_common.py; train_llama3.py
  reads it), for larger vocabs.
Training code elsewhere reads these files directly.
"""

import collections
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stacks_data.dataset.doc_stats import DocStats
from stacks_data.errors import InputError
from stacks_data.dataset.files import FileRecord, write_bytes

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
# --token-dtype -> (magic, version, token dtype)
TOKEN_DTYPES = {"uint16": (MAGIC, VERSION, np.dtype("<u2")), "uint32": (20240801, 7, np.dtype("<u4"))}
# every header this package can read: magic -> (version, token dtype)
FORMATS = {magic: (version, dtype) for magic, version, dtype in TOKEN_DTYPES.values()}
MAX_VOCAB = 2**32  # the widest format's


def vocab_limit(token_dtype: str) -> int:
    """The largest vocab whose ids a format holds."""
    return 2 ** (8 * TOKEN_DTYPES[token_dtype][2].itemsize)


def token_bytes(token_dtype: str) -> int:
    """Bytes per token in that format (a shard is HEADER_BYTES + this * its token count)."""
    return TOKEN_DTYPES[token_dtype][2].itemsize


def write_bin(path: str, tokens: np.ndarray | list[np.ndarray], token_dtype: str = "uint16") -> FileRecord:
    """Write tokens (an array, or arrays one after the other) to path atomically (temp name, then
    rename); returns its record (size, sha256)."""
    magic, version, dtype = TOKEN_DTYPES[token_dtype]
    chunks = [_as_dtype(path, np.asarray(c), token_dtype) for c in (tokens if isinstance(tokens, list) else [tokens])]
    if len(chunks) > 64:  # many small pieces (SFT's): one buffer hashes and writes faster
        chunks = [np.concatenate(chunks)]
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, version, sum(c.size for c in chunks)
    # the token buffers hashed and written as they are: no copy of a 200 MB shard
    return write_bytes(path, [header.tobytes(), *(np.ascontiguousarray(c, dtype=dtype).data for c in chunks)])


def _as_dtype(path: str, tokens: np.ndarray, token_dtype: str) -> np.ndarray:
    dtype = TOKEN_DTYPES[token_dtype][2]
    if tokens.dtype == dtype:
        return tokens
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_limit(token_dtype)):
        raise ValueError(f"{path}: token ids must fit {token_dtype}")
    return tokens.astype(dtype)


def read_header(path: str) -> int:
    """Validate the header of a .bin file (any format) and return its token count."""
    return int(open_tokens(path)[0][2])


def open_tokens(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(header, tokens memory-mapped) of a .bin file of any format in FORMATS, checked against its size.

    Nothing but the header is read: a caller reads the tokens it looks at.
    """
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header.size != HEADER_INTS or int(header[0]) not in FORMATS:
        raise InputError("not a .bin token file (bad magic number)", path, "regenerate or re-download it")
    version, dtype = FORMATS[int(header[0])]
    if header[1] != version:
        raise InputError(f"unsupported .bin version {header[1]} for magic {header[0]} (expected {version})", path,
                         "regenerate or re-download it")
    expected = HEADER_BYTES + dtype.itemsize * int(header[2])
    if os.path.getsize(path) != expected:
        raise InputError(f"the file has {os.path.getsize(path)} bytes, its header announces {expected}", path,
                         "regenerate or re-download it")
    if not header[2]:  # numpy cannot map an empty range
        return header, np.zeros(0, dtype=dtype)
    return header, np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(int(header[2]),))


def read_bin(path: str) -> np.ndarray:
    """The tokens of a .bin file, memory-mapped (uint16 or uint32, as its header says)."""
    return open_tokens(path)[1]


WRITE_THREADS = 2  # shards hashed and written at once, beside the packing (sha256: ~1.4 ns a token a thread)


class ShardWriter:
    """Packs parallel token streams into shards of exactly shard_size tokens.

    name_patterns has one entry per stream, e.g. ["train_{:06d}.bin"] or, for SFT,
    ["sft_train_{:06d}.bin", "sft_train_{:06d}_mask.bin"]; add() takes one array per stream,
    all of the same length, which the writer keeps (views, no copy: the caller must not change them).
    stats (a doc_stats.DocStats) is fed each shard's first stream as it is cut, with the BOS
    positions add() is given: the statistics of exactly the written tokens (a dropped partial shard is
    not in them).

    The caller's thread only cuts the stream: a full shard is hashed and written by a writer thread
    (WRITE_THREADS at most at once; a shard beyond waits), from the pieces it was given, while the caller
    goes on packing the next; the statistics are fed on a thread of their own, shard after shard.
    on_shard(index, note, stats_state) runs in the caller's thread, in shard order, once a shard is on
    disk (its records in `records`), with what at_cut(index) returned when it was cut (e.g. where in the
    input it ends: by the time it is on disk, the caller has gone further) and the statistics' state()
    up to its end (None without stats). A write's error is raised in the caller's thread, by the add()
    or close() that finds it; `stats` is the caller's again once close() returns.
    """

    def __init__(self, out_dir: str, name_patterns: list[str], shard_size: int, first_index: int = 0,
                 on_shard=None, stats: DocStats | None = None, token_dtype: str = "uint16", at_cut=None):
        if shard_size <= 0:
            raise ValueError("shard size must be positive")
        self.out_dir = out_dir
        self.name_patterns = name_patterns
        self.shard_size = shard_size
        self.index = first_index  # index of the shard being filled
        self.on_shard, self.at_cut = on_shard, at_cut
        self.token_dtype = token_dtype
        self.pieces: list[list[np.ndarray]] = [[] for _ in name_patterns]  # the shard being filled, per stream
        self.fill = 0
        self.tokens_written = 0  # tokens in completed shards written by this writer
        self.records: list[FileRecord] = []
        self.stats = stats
        self.bos_in_buffer: list[np.ndarray] = []  # BOS positions in the shard being filled, for stats
        self.writing: collections.deque = collections.deque()  # (index, futures, note, tokens, stats), oldest first
        self.threads: ThreadPoolExecutor | None = None  # started with the first shard to write
        self.stats_thread: ThreadPoolExecutor | None = None  # one: the statistics are fed in order

    def add(self, *arrays: np.ndarray, bos: np.ndarray | None = None) -> None:
        """Append one array per stream, all of the same length; bos: the positions of the BOS tokens in
        the first (sorted), needed when the writer keeps statistics."""
        n = len(arrays[0])
        if len(arrays) != len(self.pieces) or any(len(a) != n for a in arrays):
            raise ValueError("add() takes one array per stream, all of the same length")
        if self.stats is not None and bos is None:
            raise ValueError("a writer that keeps statistics needs the BOS positions")
        pos = 0
        while pos < n:
            take = min(n - pos, self.shard_size - self.fill)
            for pieces, a in zip(self.pieces, arrays):
                pieces.append(a[pos:pos + take])
            if self.stats is not None:
                lo, hi = np.searchsorted(bos, (pos, pos + take))
                self.bos_in_buffer.append(bos[lo:hi] - pos + self.fill)
            self.fill += take
            pos += take
            if self.fill == self.shard_size:
                self._cut()
        self._settle(len(self.writing))

    def close(self, keep_partial: bool = True) -> None:
        """Write the last, incomplete shard (if any and if wanted); returns once every shard is on disk."""
        if self.fill and keep_partial:
            self._cut()
        self.fill = 0
        self.pieces = [[] for _ in self.name_patterns]
        self._settle(0)
        for threads in (self.threads, self.stats_thread):
            if threads is not None:
                threads.shutdown()

    def abandon(self) -> None:
        """The run is failing or interrupted: the shards being written are finished and recorded, in
        order, up to the first that fails (whole on disk, a restart need not redo them; and no thread
        writes once the run is over); the run's own error is the one raised, not theirs."""
        try:
            self._settle(0)
        except Exception:
            pass
        finally:
            for threads in (self.threads, self.stats_thread):
                if threads is not None:
                    threads.shutdown(cancel_futures=True)

    def _cut(self) -> None:
        if self.threads is None:
            os.makedirs(self.out_dir, exist_ok=True)
            self.threads = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="shard-writer")
            self.stats_thread = ThreadPoolExecutor(1, thread_name_prefix="shard-stats")
        stats = None
        if self.stats is not None:
            bos = np.concatenate(self.bos_in_buffer) if self.bos_in_buffer else np.zeros(0, np.int64)
            stats = self.stats_thread.submit(_fed, self.stats, self.fill, bos)
            self.bos_in_buffer = []
        note = self.at_cut(self.index) if self.at_cut is not None else None
        futures = [self.threads.submit(write_bin, os.path.join(self.out_dir, pattern.format(self.index)), pieces,
                                       self.token_dtype) for pattern, pieces in zip(self.name_patterns, self.pieces)]
        self.writing.append((self.index, futures, note, self.fill, stats))
        self.pieces = [[] for _ in self.name_patterns]
        self.fill = 0
        self.index += 1
        self._settle(WRITE_THREADS)

    def _settle(self, keep: int) -> None:
        """Record the shards on disk, in order, waiting until at most `keep` are still being written."""
        while self.writing and (len(self.writing) > keep or all(f.done() for f in self.writing[0][1])):
            index, futures, note, tokens, stats = self.writing.popleft()
            self.records += [f.result() for f in futures]  # a failed write raises here
            self.tokens_written += tokens
            stats = stats.result() if stats is not None else None
            if self.on_shard is not None:
                self.on_shard(index, note, stats)


def _fed(stats: DocStats, n: int, bos: np.ndarray) -> dict:
    """Feed one shard to the statistics (on their thread); their state up to its end."""
    stats.feed(n, bos)
    return stats.state()

"""
The .bin token file: a 256 x int32 little-endian header, then the tokens.

header[0] = magic, header[1] = version, header[2] = number of tokens. Two formats (--token-dtype):
- uint16 (the default): magic 20240520, version 1, uint16 tokens: the format of modded-nanogpt /
  nanochat loaders, for a vocab of at most 65,536;
- uint32: llm.c's magic 20240801, version 7, uint32 tokens (dev/data/data_common.py; train_llama3.py
  reads it), for larger vocabs.
Training code elsewhere reads these files directly.
"""

import os

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


def write_bin(path: str, tokens: np.ndarray, token_dtype: str = "uint16") -> FileRecord:
    """Write tokens to path atomically (temp name, then rename); returns its record (size, sha256)."""
    magic, version, dtype = TOKEN_DTYPES[token_dtype]
    tokens = np.asarray(tokens)
    if tokens.dtype != dtype:
        if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_limit(token_dtype)):
            raise ValueError(f"{path}: token ids must fit {token_dtype}")
        tokens = tokens.astype(dtype)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, version, tokens.size
    # no copy of a 200 MB shard: the buffer is hashed and written as it is
    return write_bytes(path, [header.tobytes(), np.ascontiguousarray(tokens, dtype=dtype).data])


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


class ShardWriter:
    """Packs parallel token streams into shards of exactly shard_size tokens.

    name_patterns has one entry per stream, e.g. ["train_{:06d}.bin"] or, for SFT,
    ["sft_train_{:06d}.bin", "sft_train_{:06d}_mask.bin"]; add() takes one array per stream,
    all of the same length. on_shard(index, tokens_written) runs after each shard is on disk.
    stats (a doc_stats.DocStats) is fed each shard's first stream as it is written, with the BOS
    positions add() is given: the statistics of exactly the written tokens (a dropped partial shard is
    not in them).
    """

    def __init__(self, out_dir: str, name_patterns: list[str], shard_size: int,
                 first_index: int = 0, on_shard=None, stats: DocStats | None = None, token_dtype: str = "uint16"):
        if shard_size <= 0:
            raise ValueError("shard size must be positive")
        self.out_dir = out_dir
        self.name_patterns = name_patterns
        self.shard_size = shard_size
        self.index = first_index  # index of the shard being filled
        self.on_shard = on_shard
        self.token_dtype = token_dtype
        self.buffers = [np.empty(shard_size, dtype=TOKEN_DTYPES[token_dtype][2]) for _ in name_patterns]
        self.fill = 0
        self.tokens_written = 0  # tokens in completed shards written by this writer
        self.records: list[FileRecord] = []
        self.stats = stats
        self.bos_in_buffer: list[np.ndarray] = []  # BOS positions in the shard being filled, for stats

    def add(self, *arrays: np.ndarray, bos: np.ndarray | None = None) -> None:
        """Append one array per stream, all of the same length; bos: the positions of the BOS tokens in
        the first (sorted), needed when the writer keeps statistics."""
        n = len(arrays[0])
        if len(arrays) != len(self.buffers) or any(len(a) != n for a in arrays):
            raise ValueError("add() takes one array per stream, all of the same length")
        if self.stats is not None and bos is None:
            raise ValueError("a writer that keeps statistics needs the BOS positions")
        pos = 0
        while pos < n:
            take = min(n - pos, self.shard_size - self.fill)
            for buf, a in zip(self.buffers, arrays):
                buf[self.fill:self.fill + take] = a[pos:pos + take]
            if self.stats is not None:
                lo, hi = np.searchsorted(bos, (pos, pos + take))
                self.bos_in_buffer.append(bos[lo:hi] - pos + self.fill)
            self.fill += take
            pos += take
            if self.fill == self.shard_size:
                self._flush()

    def close(self, keep_partial: bool = True) -> None:
        """Write the last, incomplete shard (if any and if wanted)."""
        if self.fill and keep_partial:
            self._flush()
        self.fill = 0
        self.buffers = []  # a shard's worth of memory per stream, not needed any more

    def _flush(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        for pattern, buf in zip(self.name_patterns, self.buffers):
            path = os.path.join(self.out_dir, pattern.format(self.index))
            self.records.append(write_bin(path, buf[:self.fill], self.token_dtype))
        if self.stats is not None:
            self.stats.feed(self.fill, np.concatenate(self.bos_in_buffer) if self.bos_in_buffer else np.zeros(0, np.int64))
            self.bos_in_buffer = []
        self.tokens_written += self.fill
        self.fill = 0
        self.index += 1
        if self.on_shard is not None:
            self.on_shard(self.index - 1, self.tokens_written)

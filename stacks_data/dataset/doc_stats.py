"""
Document statistics of a split's token stream, computed while its shards are written.

A document is a <|bos|> and the tokens after it, up to the next <|bos|> or the end of the split's
written tokens; the split's stream is its shards, concatenated in order. What a trainer needs and can
only get from a full pass over the data (README, Output formats):
- the length distribution (min, nearest-rank percentiles, max), in tokens, BOS included;
- max_docs_in_window[T]: the most documents that have a token in one window of T consecutive tokens,
  over every window that fits in the stream (the whole stream when it is shorter than T): the size a
  varlen loader must give cu_seqlens;
- max_docs_in_bos_window[T]: the same over the windows that start at a BOS (cut at the stream's end).

The stream is fed as the writer flushes it (the positions of its BOS tokens per chunk, which the
workers already know), never token by token: numpy over BOS positions, with only the positions of the
last max(T) tokens carried from chunk to chunk, and exact counts per length, so memory is bounded by the
number of distinct lengths whatever the dataset size. state() / from_state() let a resumed run go on
from the last finished shard with the same numbers as an uninterrupted one.
"""

import numpy as np

WINDOWS = tuple(2**k for k in range(10, 18))  # 1,024 ... 131,072 tokens
PERCENTILES = (50, 90, 99)


class DocStats:
    """The statistics of one token stream that starts with a BOS, fed chunk by chunk."""

    def __init__(self, windows=WINDOWS):
        self.windows = tuple(sorted(set(int(t) for t in windows)))
        self.tokens = 0  # stream position: tokens fed so far
        self.count = 0  # documents started (BOS seen)
        self.lengths: dict[int, int] = {}  # length -> documents of that length (closed documents)
        self.carry = np.zeros(0, dtype=np.int64)  # BOS positions a window still to evaluate may hold
        # per window: the first BOS position not yet evaluated as a window start, and the best so far
        self.next_any = {t: 1 for t in self.windows}  # windows (b-1, b+T-1): b >= 1
        self.next_bos = {t: 0 for t in self.windows}  # windows [b, b+T)
        self.best_any = {t: 0 for t in self.windows}
        self.best_bos = {t: 0 for t in self.windows}

    def feed(self, n: int, bos: np.ndarray) -> None:
        """The next n tokens of the stream, with the positions of their BOS tokens (relative to the chunk)."""
        if not n:
            return
        new = np.asarray(bos, dtype=np.int64) + self.tokens
        if new.size:
            starts = np.concatenate((self.carry[-1:], new))  # the open document's start, then the new ones
            if self.carry.size:
                self._add_lengths(np.diff(starts))
            else:
                self._add_lengths(np.diff(new))
        positions = np.concatenate((self.carry, new))
        self.count += new.size
        self.tokens += n
        self._evaluate(positions, final=False)
        keep = min(min(self.next_any.values()), min(self.next_bos.values()))
        open_doc = positions[-1:]  # the open document's start: its length is known only at its end
        self.carry = np.unique(np.concatenate((positions[positions >= keep], open_doc)))

    def _add_lengths(self, lengths: np.ndarray) -> None:
        values, counts = np.unique(lengths, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            self.lengths[value] = self.lengths.get(value, 0) + count

    def _evaluate(self, positions: np.ndarray, final: bool) -> None:
        """Windows whose tokens are all in the stream now (all of them, at its end). positions: sorted and
        distinct, so the index of the k-th chosen start is lo + k (one search per window, not two)."""
        end = self.tokens
        for t in self.windows:
            # a window that starts just before the BOS at b holds 1 + the BOS tokens in [b, b+T-2]
            lo = int(np.searchsorted(positions, self.next_any[t]))
            hi = int(np.searchsorted(positions, end - t + 1, side="right"))  # its last token, b+T-2, is in the stream
            if hi > lo:
                held = np.searchsorted(positions, positions[lo:hi] + (t - 1)) - np.arange(lo, hi)
                self.best_any[t] = max(self.best_any[t], 1 + int(held.max()))
                self.next_any[t] = int(positions[hi - 1]) + 1
            # a window that starts at the BOS b: the BOS tokens in [b, b+T-1] (cut at the end)
            lo = int(np.searchsorted(positions, self.next_bos[t]))
            hi = int(np.searchsorted(positions, end if final else end - t, side="right"))
            if hi > lo:
                held = np.searchsorted(positions, positions[lo:hi] + t) - np.arange(lo, hi)
                self.best_bos[t] = max(self.best_bos[t], int(held.max()))
                self.next_bos[t] = int(positions[hi - 1]) + 1

    def result(self) -> dict:
        """The statistics of the stream fed so far, as config.json holds them (keys: README, Output formats)."""
        return DocStats.from_state(self.state())._finish()

    def _finish(self) -> dict:
        end = self.tokens
        lengths = dict(self.lengths)
        if self.carry.size:  # the last document ends with the stream
            last = end - int(self.carry[-1])
            lengths[last] = lengths.get(last, 0) + 1
        out = {"count": self.count, "tokens": end, "length": _length_summary(lengths, self.count)}
        self._evaluate(self.carry, final=True)
        any_window, bos_window = {}, {}
        for t in self.windows:
            if end < t:  # the whole stream is the one window
                any_window[str(t)] = self.count
            else:  # the last window, (end-T, end-1]: the document holding its first token, and those after
                tail = int(np.count_nonzero(self.carry >= end - t + 1))
                any_window[str(t)] = max(self.best_any[t], 1 + tail) if self.count else 0
            bos_window[str(t)] = self.best_bos[t]
        out["max_docs_in_window"], out["max_docs_in_bos_window"] = any_window, bos_window
        return out

    def state(self) -> dict:
        """Everything needed to go on from here (JSON-able): see from_state."""
        return {"windows": list(self.windows), "tokens": self.tokens, "count": self.count,
                "lengths": [[k, v] for k, v in sorted(self.lengths.items())], "carry": self.carry.tolist(),
                "next_any": [self.next_any[t] for t in self.windows], "next_bos": [self.next_bos[t] for t in self.windows],
                "best_any": [self.best_any[t] for t in self.windows], "best_bos": [self.best_bos[t] for t in self.windows]}

    @classmethod
    def from_state(cls, state: dict) -> "DocStats":
        stats = cls(state["windows"])
        stats.tokens, stats.count = state["tokens"], state["count"]
        stats.lengths = {int(k): int(v) for k, v in state["lengths"]}
        stats.carry = np.asarray(state["carry"], dtype=np.int64)
        for name in ("next_any", "next_bos", "best_any", "best_bos"):
            setattr(stats, name, dict(zip(stats.windows, map(int, state[name]))))
        return stats


def _length_summary(lengths: dict[int, int], count: int) -> dict:
    """min, nearest-rank percentiles (pXX = sorted[ceil(XX/100 * n) - 1]) and max of the lengths."""
    if not count:
        return {"min": 0, **{f"p{p}": 0 for p in PERCENTILES}, "max": 0}
    values = np.array(sorted(lengths), dtype=np.int64)
    cumulative = np.cumsum([lengths[v] for v in values.tolist()])
    summary = {"min": int(values[0])}
    for p in PERCENTILES:
        rank = -(-p * count // 100)  # ceil(p/100 * n), in integers
        summary[f"p{p}"] = int(values[np.searchsorted(cumulative, rank)])
    summary["max"] = int(values[-1])
    return summary


def bos_positions(tokens: np.ndarray, bos: int) -> np.ndarray:
    """Where the BOS tokens are (for streams whose producer does not already know it)."""
    return np.flatnonzero(np.asarray(tokens) == bos)

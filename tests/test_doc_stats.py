"""Document statistics against a brute-force count, over shard and chunk boundaries, and after a resume."""

import math
import random

import numpy as np
import pytest

from stacks_data.dataset.doc_stats import DocStats, bos_positions

BOS = 7


def brute_force(stream: np.ndarray, windows) -> dict:
    """Every window, counted one by one."""
    starts = np.flatnonzero(stream == BOS).tolist()
    n = len(stream)
    owner = np.cumsum(stream == BOS) - 1  # the document of each token
    lengths = sorted(np.diff(starts + [n]).tolist())
    rank = lambda p: lengths[math.ceil(p / 100 * len(lengths)) - 1]
    out = {"count": len(starts), "tokens": n,
           "length": {"min": lengths[0], "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": lengths[-1]},
           "max_docs_in_window": {}, "max_docs_in_bos_window": {}}
    for t in windows:
        spans = [(0, n)] if n < t else [(s, s + t) for s in range(n - t + 1)]
        out["max_docs_in_window"][str(t)] = max(len(set(owner[a:b].tolist())) for a, b in spans)
        out["max_docs_in_bos_window"][str(t)] = max(len(set(owner[b:b + t].tolist())) for b in starts)
    return out


def stream_of(lengths) -> np.ndarray:
    return np.concatenate([np.r_[BOS, np.full(n - 1, 3, dtype=np.int64)] for n in lengths]).astype(np.uint16)


def fed(stream: np.ndarray, cuts, windows) -> DocStats:
    stats = DocStats(windows)
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        stats.feed(b - a, bos_positions(stream[a:b], BOS))
    return stats


@pytest.mark.parametrize("seed", range(12))
def test_equals_brute_force_around_shard_boundaries(seed):
    rng = random.Random(seed)
    T = rng.choice([4, 8, 16])
    windows = (4, 8, 16)
    shard = rng.choice([5, 16, 17, 40])
    # lengths 1, T-1, T, T+1 around shard boundaries, and one document spanning three shards
    lengths = [rng.choice([1, T - 1, T, T + 1, rng.randint(1, 3 * T)]) for _ in range(rng.randint(1, 30))]
    lengths.insert(rng.randint(0, len(lengths)), 2 * shard + 3)
    stream = stream_of(lengths)
    cuts = list(range(shard, len(stream), shard))  # the writer's flushes
    assert fed(stream, cuts, windows).result() == brute_force(stream, windows)


def test_resumed_from_a_saved_state_gives_the_same_numbers():
    rng = random.Random(5)
    stream = stream_of([rng.randint(1, 20) for _ in range(200)])
    cuts = list(range(13, len(stream), 13))
    whole = fed(stream, cuts, (4, 8, 32)).result()
    first = fed(stream[:cuts[20]], cuts[:20], (4, 8, 32))
    resumed = DocStats.from_state(first.state())
    for a, b in zip(cuts[20:], [*cuts[21:], len(stream)]):
        resumed.feed(b - a, bos_positions(stream[a:b], BOS))
    assert resumed.result() == whole == brute_force(stream, (4, 8, 32))


def test_short_and_empty_streams():
    assert fed(stream_of([3]), [], (4,)).result() == brute_force(stream_of([3]), (4,))
    empty = DocStats((4,)).result()
    assert empty["count"] == 0 and empty["max_docs_in_window"] == {"4": 0}

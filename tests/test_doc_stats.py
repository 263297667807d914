"""Document statistics against a brute-force count, over shard and chunk boundaries, and after a resume."""

import json
import math
import os
import random
import re

import numpy as np
import pytest

import test_lifecycle
import test_sft
from fixtures import write_corpus
from test_sft import tokenizer_dir, work  # noqa: F401  (fixtures)
from stacks_data.cli import run_step
from stacks_data.dataset.binfile import read_bin
from stacks_data.dataset.doc_stats import DocStats, bos_positions
from stacks_data.steps import card

BOS = 7


def brute_force(stream: np.ndarray, windows, bos: int = BOS) -> dict:
    """Every window, counted one by one."""
    starts = np.flatnonzero(stream == bos).tolist()
    n = len(stream)
    owner = np.cumsum(stream == bos) - 1  # the document of each token
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


# ------------------------------------------------------------------------------ in the steps' config.json


def split_stream(folder, pattern: str) -> np.ndarray:
    names = sorted(n for n in os.listdir(folder) if re.fullmatch(pattern, n))
    return np.concatenate([np.asarray(read_bin(os.path.join(folder, n))) for n in names])


def brute_force_of(stream, bos, windows):
    return brute_force(stream, windows, bos)


def test_pretrain_config_holds_the_exact_statistics_also_after_a_kill(tmp_path):
    write_corpus(tmp_path / "parquet", num_files=4, docs_per_file=60)
    (tmp_path / "baselines").mkdir()
    argv = test_lifecycle.pretrain_argv(tmp_path, "out", "parquet", "--window", "5", "--window", "700",
                                        "--keep-partial")
    killed = test_lifecycle.run_killed(argv, 30, tmp_path)  # in the middle of the shards
    assert killed.returncode != 0
    run_step("pretrain", argv[1:])  # resumes
    folder = tmp_path / "out" / "ds"
    config = json.loads((folder / "config.json").read_text())
    for split in ("train", "val"):
        stream = split_stream(folder, rf"{split}_\d{{6}}\.bin")
        got = config["documents"][split]
        assert got["tokens"] == len(stream) and got["count"] == int(np.count_nonzero(stream == config["bos_id"]))
        windows = [5, 700, 1024, 2048]  # the brute force is quadratic: the larger ones hold the whole stream
        want = brute_force_of(stream, config["bos_id"], windows)
        assert got["length"] == want["length"]
        for key in ("max_docs_in_window", "max_docs_in_bos_window"):
            assert {t: got[key][t] for t in map(str, windows)} == want[key], (split, key)
        assert set(got["max_docs_in_window"]) == {str(t) for t in sorted({5, 700, *(2**k for k in range(10, 18))})}


def test_sft_counts_unsupervised_conversations_and_can_drop_them(work):  # noqa: F811
    folder, config = test_sft.run_sft(work, "--max-seq-len", "24")
    _, tokens, mask, _ = test_sft.read_split(folder, "train")
    bos = config["bos_id"]
    starts = np.flatnonzero(tokens == bos).tolist() + [len(tokens)]
    per_conversation = [(b - a, int(mask[a:b].sum())) for a, b in zip(starts, starts[1:])]
    teach_nothing = [n for n, supervised in per_conversation if not supervised]
    got = config["documents"]["train"]
    assert got["unsupervised"] == {"count": len(teach_nothing), "tokens": sum(teach_nothing), "dropped": False}
    assert len(teach_nothing) > 0
    assert got["supervised_tokens"] == int(mask.sum())
    assert got["length"] == brute_force_of(tokens, bos, [4])["length"]

    dropped_folder, dropped = test_sft.run_sft(work, "--max-seq-len", "24", "--drop-unsupervised", out="dropped")
    _, kept_tokens, kept_mask, _ = test_sft.read_split(dropped_folder, "train")
    kept_starts = np.flatnonzero(kept_tokens == bos).tolist() + [len(kept_tokens)]
    assert all(kept_mask[a:b].any() for a, b in zip(kept_starts, kept_starts[1:]))
    assert dropped["documents"]["train"]["unsupervised"] == {**got["unsupervised"], "dropped": True}
    assert dropped["train_tokens"] == config["train_tokens"] - sum(teach_nothing)



# ------------------------------------------------------------------------------ uint32 shards


def random_word_corpus(folder, num_files: int, docs_per_file: int, seed: int = 0) -> None:
    """Documents of random words: enough distinct pairs for a vocab of 70,000 merges."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    folder.mkdir(parents=True)
    for i in range(num_files):
        docs = [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(rng.randint(5, 200)))
                for _ in range(docs_per_file)]
        pq.write_table(pa.table({"text": docs}), folder / f"shard_{i:05d}.parquet", row_group_size=200)


def pretrain_dtype(root, out, vocab, *extra):
    run_step("pretrain", ["--parquet-dir", str(root / "parquet"), "--out-dir", str(root / out), "--dataset-name", "ds",
                          "--num-shards", "3", "--tok-train-shards", "2", "--vocab-size", str(vocab),
                          "--shard-size", "50000", "--num-workers", "1", "--skip-upload",
                          "--baselines-dir", str(root / "baselines"), *extra])
    return root / out / "ds"


def test_uint32_shards_hold_the_same_ids_with_llm_c_s_header(tmp_path):
    random_word_corpus(tmp_path / "parquet", 3, 300)
    (tmp_path / "baselines").mkdir()
    narrow = pretrain_dtype(tmp_path, "u16", 4096)
    wide = pretrain_dtype(tmp_path, "u32", 4096, "--token-dtype", "uint32")
    names = sorted(n for n in os.listdir(narrow) if n.endswith(".bin"))
    assert names == sorted(n for n in os.listdir(wide) if n.endswith(".bin")) and names
    for name in names:
        header = np.fromfile(wide / name, dtype="<i4", count=256)
        assert (header[0], header[1]) == (20240801, 7)
        ids = np.fromfile(wide / name, dtype="<u4", offset=1024)
        assert header[2] == len(ids) and np.array_equal(ids, np.asarray(read_bin(str(narrow / name))))
    assert json.loads((wide / "config.json").read_text())["token_dtype"] == "uint32"
    run_step("verify", [str(wide)])
    snippet = card.card(str(wide))  # the dataset card's reading snippet follows the format
    assert "assert header[0] == 20240801 and header[1] == 7" in snippet and 'dtype="<u4"' in snippet


def test_a_vocab_of_70000_writes_uint32_shards_that_verify(tmp_path):
    random_word_corpus(tmp_path / "parquet", 3, 1500)
    (tmp_path / "baselines").mkdir()
    folder = pretrain_dtype(tmp_path, "out", 70000, "--token-dtype", "uint32")
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == 70000
    tokens = np.concatenate([np.asarray(read_bin(str(folder / n))) for n in sorted(os.listdir(folder))
                             if re.fullmatch(r"train_\d{6}\.bin", n)])
    assert tokens.dtype == np.uint32 and tokens.max() >= 2**16  # ids past uint16, kept whole
    run_step("verify", [str(folder)])


def test_sft_uint32_shards_hold_the_same_ids(work):  # noqa: F811
    narrow, _ = test_sft.run_sft(work)
    wide, config = test_sft.run_sft(work, "--token-dtype", "uint32", out="wide")
    assert config["token_dtype"] == "uint32"
    for split in ("train", "val"):
        names, tokens, mask, _ = test_sft.read_split(wide, split)
        assert np.fromfile(wide / names[0], dtype="<i4", count=2).tolist() == [20240801, 7]
        _, want_tokens, want_mask, _ = test_sft.read_split(narrow, split)
        assert np.array_equal(tokens, want_tokens) and np.array_equal(mask, want_mask)

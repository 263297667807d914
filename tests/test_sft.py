"""The SFT step end to end: mixture order, shards, config.json, hub loading, workers, invalid rows, upload."""

import filecmp
import json
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures import published_files, repo_files
from stacks_data.steps import sft
from stacks_data.sources import sft as S
from stacks_data.cli import run_step
from stacks_data.errors import FlagError, InputError
from stacks_data.dataset.binfile import read_bin
from stacks_data.tokenizer import RustBPETokenizer

NAME = "tiny"


def smoltalk_rows(prefix, n):
    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": f"{prefix} system {i}"}] if i % 3 == 0 else []
        for turn in range(1 + i % 2):
            messages += [{"role": "user", "content": f"{prefix} question {i}.{turn}"},
                         {"role": "assistant", "content": f"{prefix} answer {i}.{turn} " + "la " * (i % 7)}]
        rows.append(messages)
    return rows


def mmlu_rows(prefix, n):
    return [{"question": f"{prefix} q{i}", "subject": "", "choices": [f"c{i}{j}" for j in range(4)], "answer": i % 4}
            for i in range(n)]


def gsm8k_rows(prefix, n):
    return [{"question": f"{prefix} how many {i}?",
             "answer": f"{i}+1=<<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}" if i % 2 else f"It is {i}.\n#### {i}"}
            for i in range(n)]


def write(path, table):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def make_hub(root, smol_train=(9, 8), smol_test=5, mmlu_aux=12, mmlu_test=10, gsm_train=7, gsm_test=6):
    """A hub-layout folder with every file the SFT step reads (SmolTalk train in two files)."""
    smol = os.path.join(root, "HuggingFaceTB", "smol-smoltalk", "data")
    rows = smoltalk_rows("train", sum(smol_train))
    write(os.path.join(smol, "train-00000-of-00002.parquet"), pa.table({"messages": rows[:smol_train[0]]}))
    write(os.path.join(smol, "train-00001-of-00002.parquet"), pa.table({"messages": rows[smol_train[0]:]}))
    write(os.path.join(smol, "test-00000-of-00001.parquet"), pa.table({"messages": smoltalk_rows("test", smol_test)}))
    mmlu = os.path.join(root, "cais", "mmlu")
    write(os.path.join(mmlu, "auxiliary_train", "train-00000-of-00001.parquet"),
          pa.table({"train": mmlu_rows("aux", mmlu_aux)}))
    write(os.path.join(mmlu, "all", "test-00000-of-00001.parquet"), pa.Table.from_pylist(mmlu_rows("test", mmlu_test)))
    gsm = os.path.join(root, "openai", "gsm8k", "main")
    write(os.path.join(gsm, "train-00000-of-00001.parquet"), pa.Table.from_pylist(gsm8k_rows("train", gsm_train)))
    write(os.path.join(gsm, "test-00000-of-00001.parquet"), pa.Table.from_pylist(gsm8k_rows("test", gsm_test)))
    return root


WORDS = ["apple", "banana", "cherry", "kayak", "strawberry", "zebra", "mississippi", "a"]
IDENTITY = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A tiny model."}],
    [{"role": "user", "content": "Who made you?"}, {"role": "assistant", "content": "Some people."},
     {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You are welcome."}],
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    text = " ".join(f"train test question answer system la how many It is Who are you {i}" for i in range(200))
    path = str(tmp_path_factory.mktemp("tok"))
    RustBPETokenizer.train_from_iterator([text], 400).save(path)
    return path


@pytest.fixture
def work(tmp_path, tokenizer_dir, monkeypatch):
    """tmp_path with hub/, words.txt, out/tiny/tokenizer and identity conversations; cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    make_hub(str(tmp_path / "mirror"))
    (tmp_path / "words.txt").write_text("\r\n".join(WORDS) + "\r\n")
    tok_dir = tmp_path / "out" / NAME / "tokenizer"
    tok_dir.mkdir(parents=True)
    for name in os.listdir(tokenizer_dir):
        (tok_dir / name).write_bytes(open(os.path.join(tokenizer_dir, name), "rb").read())
    (tmp_path / "out" / NAME / "identity_conversations.jsonl").write_text("\n".join(map(json.dumps, IDENTITY)) + "\n")
    return tmp_path


def run_sft(work, *extra, out="out", mirror=True):
    argv = ["--out-dir", str(work / out), "--dataset-name", NAME, "--skip-upload", "--num-workers", "1",
            "--simple-spelling-size", "50", "--spelling-bee-size", "30", "--words-file", str(work / "words.txt"),
            "--shard-size", "500", *extra]
    if mirror:
        argv += ["--hf-mirror", str(work / "mirror")]
    if out != "out" and not (work / out / NAME).exists():  # another output folder: same inputs
        (work / out / NAME).mkdir(parents=True)
        os.symlink(work / "out" / NAME / "tokenizer", work / out / NAME / "tokenizer")
        os.symlink(work / "out" / NAME / "identity_conversations.jsonl", work / out / NAME / "identity_conversations.jsonl")
    run_step("sft", argv)
    folder = work / out / NAME / "sft"
    return folder, json.loads((folder / "config.json").read_text())


def read_split(folder, split):
    """Concatenated tokens and mask of a split's shards, and the shard sizes."""
    names = sorted(n for n in os.listdir(folder) if n.startswith(f"sft_{split}_") and not n.endswith("_mask.bin"))
    tokens = [np.asarray(read_bin(str(folder / n))) for n in names]
    masks = [np.asarray(read_bin(str(folder / n.replace(".bin", "_mask.bin")))) for n in names]
    return names, np.concatenate(tokens), np.concatenate(masks), [len(t) for t in tokens]


def hf_shuffled(rows):
    return [rows[i] for i in np.random.default_rng(42).permutation(len(rows))]


def reference_mixture(split, simple=50, bee=30):
    """The mixture built the obvious way: every conversation materialized, concatenated, shuffled."""
    if split == "val":
        parts = [[{"messages": m} for m in hf_shuffled(smoltalk_rows("test", 5))],
                 [S.mmlu_conversation(r) for r in hf_shuffled(mmlu_rows("test", 10))[:5200]],
                 [S.gsm8k_conversation(r) for r in hf_shuffled(gsm8k_rows("test", 6))[:420]]]
    else:
        gsm = [S.gsm8k_conversation(r) for r in hf_shuffled(gsm8k_rows("train", 7))]
        identity = [{"messages": m} for m in IDENTITY]
        shuffled_words = list(WORDS)
        random.Random(42).shuffle(shuffled_words)
        parts = [[{"messages": m} for m in hf_shuffled(smoltalk_rows("train", 17))],
                 [S.mmlu_conversation(r) for r in hf_shuffled(mmlu_rows("aux", 12))],
                 gsm, gsm, identity, identity,
                 [S.simple_spelling_conversation(i, (WORDS, shuffled_words)) for i in range(simple)],
                 [S.spelling_bee_conversation(i, (WORDS, shuffled_words)) for i in range(bee)]]
    mixture = [c for part in parts for c in part]
    random.Random(42).shuffle(mixture)
    return mixture


def test_shards_match_the_reference_mixture(work, tokenizer_dir):
    folder, config = run_sft(work)
    tok = RustBPETokenizer.from_directory(tokenizer_dir)
    for split in ("val", "train"):
        rendered = [tok.render_conversation(c, max_tokens=2048) for c in reference_mixture(split)]
        ids = np.array([t for r in rendered for t in r[0]], dtype=np.uint16)
        mask = np.array([m for r in rendered for m in r[1]], dtype=np.uint16)
        names, tokens, masks, sizes = read_split(folder, split)
        assert np.array_equal(tokens, ids) and np.array_equal(masks, mask)
        # packed into shards of exactly --shard-size tokens, the last one partial, numbered from 0
        assert sizes[:-1] == [500] * (len(sizes) - 1) and 0 < sizes[-1] <= 500
        assert names == [f"sft_{split}_{i:06d}.bin" for i in range(len(names))]
        assert config[f"{split}_tokens"] == len(ids) and config[f"{split}_shards"] == len(names)
        assert config[f"{split}_conversations"] == len(rendered)
        assert config[f"{split}_truncated"] == 0
        assert int((tokens == tok.get_bos_token_id()).sum()) == len(rendered)
    assert config["val_source_counts"] == {"SmolTalk": 5, "MMLU": 10, "GSM8K": 6}
    assert config["train_source_counts"] == {"SmolTalk": 17, "MMLU": 12, "GSM8K": 14, "CustomJSON": 4,
                                             "SimpleSpelling": 50, "SpellingBee": 30}
    assert config["train_conversations"] == 17 + 12 + 14 + 4 + 50 + 30
    assert config["train_invalid_counts"] == {} and config["val_invalid_counts"] == {}
    assert (config["max_seq_len"], config["shard_size"], config["bos_id"], config["vocab_size"]) == (
        2048, 500, tok.get_bos_token_id(), 400)


def test_mixture_order_is_random_42_shuffle_of_indices():
    # shuffling indices gives the same permutation as shuffling the concatenated conversations
    items = [f"s{i}" for i in range(30)]
    reference = list(items)
    random.Random(42).shuffle(reference)
    assert [items[i] for i in sft.mixture_order([10, 5, 15])] == reference


def test_truncation_is_counted(work, tokenizer_dir):
    folder, config = run_sft(work, "--max-seq-len", "24")
    tok = RustBPETokenizer.from_directory(tokenizer_dir)
    for split in ("val", "train"):
        full = [tok.render_conversation(c, max_tokens=None)[0] for c in reference_mixture(split)]
        assert config[f"{split}_truncated"] == sum(len(ids) >= 24 for ids in full) > 0
        assert config[f"{split}_tokens"] == sum(min(len(ids), 24) for ids in full)
        _, tokens, _, _ = read_split(folder, split)
        starts = np.flatnonzero(tokens == tok.get_bos_token_id())
        assert np.diff(np.append(starts, len(tokens))).max() == 24


def test_val_takes_first_5200_mmlu_and_420_gsm8k(work):
    make_hub(str(work / "mirror"), mmlu_test=5203, gsm_test=423)
    _, config = run_sft(work, "--simple-spelling-size", "0", "--spelling-bee-size", "0", "--shard-size", "100000")
    assert config["val_source_counts"] == {"SmolTalk": 5, "MMLU": 5200, "GSM8K": 420}
    assert config["val_conversations"] == 5625
    assert "SimpleSpelling" in config["train_source_counts"] and config["train_source_counts"]["SpellingBee"] == 0


def test_one_and_two_workers_byte_identical(work):
    one, _ = run_sft(work, out="one")
    two, _ = run_sft(work, "--num-workers", "2", "--chunk-size", "7", out="two")
    names = sorted(os.listdir(one))
    assert names == sorted(os.listdir(two)) and len(names) > 4
    match, mismatch, errors = filecmp.cmpfiles(one, two, names, shallow=False)
    assert mismatch == [] and errors == []


def test_loading_from_the_hub_server_matches_the_mirror(work, file_server, monkeypatch):
    # serve the same hub folder and the word list over loopback; cache under STACKS_DATA_CACHE
    make_hub(file_server.root)
    os.makedirs(os.path.join(file_server.root, "dwyl"))
    with open(os.path.join(file_server.root, "dwyl", "words_alpha.txt"), "w", newline="") as f:
        f.write("\r\n".join(WORDS))  # CRLF, like the real file
    monkeypatch.setenv("HF_ENDPOINT", file_server.url)
    monkeypatch.setenv("STACKS_DATA_CACHE", str(work / "cache"))
    mirrored, _ = run_sft(work, out="mirrored")
    words_url = f"{file_server.url}/dwyl/words_alpha.txt"
    argv = ["--out-dir", str(work / "out"), "--dataset-name", NAME, "--skip-upload", "--num-workers", "1",
            "--simple-spelling-size", "50", "--spelling-bee-size", "30", "--shard-size", "500",
            "--words-url", words_url]
    run_step("sft", argv)
    served = work / "out" / NAME / "sft"
    names = sorted(os.listdir(mirrored))
    assert names == sorted(os.listdir(served))
    shards = [n for n in names if n.endswith(".bin")]
    assert filecmp.cmpfiles(mirrored, served, shards, shallow=False)[0] == shards
    configs = [json.loads((folder / "config.json").read_text()) for folder in (mirrored, served)]
    assert configs[1].pop("source") == {"hub": file_server.url}
    assert configs[0].pop("source") == {"hf_mirror": str(work / "mirror")}
    assert configs[0] == configs[1]
    # files were fetched in the hub layout and cached; the word list too
    assert os.path.isfile(work / "cache" / "hub" / "HuggingFaceTB" / "smol-smoltalk" / "data" / "train-00001-of-00002.parquet")
    assert os.path.isfile(work / "cache" / "hub" / "cais" / "mmlu" / "auxiliary_train" / "train-00000-of-00001.parquet")
    assert (work / "cache" / "words" / "words_alpha.txt").read_bytes() == "\r\n".join(WORDS).encode()
    assert "/datasets/openai/gsm8k/resolve/main/main/test-00000-of-00001.parquet" in file_server.requests
    # a second run reads everything from the cache
    file_server.requests.clear()
    run_step("sft", argv)
    assert not any(r.endswith(".parquet") or r.endswith("words_alpha.txt") for r in file_server.requests)


def write_bad_rows(work):
    smol = work / "mirror" / "HuggingFaceTB" / "smol-smoltalk" / "data" / "train-00001-of-00002.parquet"
    rows = pq.read_table(smol).column("messages").to_pylist()
    rows[2] = [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "?"}]
    pq.write_table(pa.table({"messages": rows}), smol)
    aux = work / "mirror" / "cais" / "mmlu" / "auxiliary_train" / "train-00000-of-00001.parquet"
    rows = pq.read_table(aux).column("train").to_pylist()
    rows[5]["choices"] = ["only", "three", "choices"]
    pq.write_table(pa.table({"train": rows}), aux)


def test_invalid_conversation_is_an_error_naming_source_and_row(work):
    write_bad_rows(work)
    with pytest.raises(InputError) as error:
        run_sft(work)
    message = str(error.value)
    # the first bad row in mixture order is reported (SmolTalk row 11 sits at mixture position 21, the
    # MMLU one at 52), by its row in the split (9 + 2) and in its file
    assert message.startswith("invalid conversation in the train mixture: message 0")
    assert "(SmolTalk row 11 (" in message and "train-00001-of-00002.parquet row 2))" in message
    assert "--skip-invalid" in message


def test_skip_invalid_counts_per_source(work):
    _, clean = run_sft(work, out="clean")
    write_bad_rows(work)
    _, config = run_sft(work, "--skip-invalid")
    assert config["train_invalid_counts"] == {"SmolTalk": 1, "MMLU": 1}
    assert config["train_conversations"] == clean["train_conversations"] - 2
    assert config["train_source_counts"] == clean["train_source_counts"]
    assert config["val_invalid_counts"] == {}


def test_missing_identity_file_is_skipped(work, capsys):
    os.remove(work / "out" / NAME / "identity_conversations.jsonl")
    _, config = run_sft(work)
    assert "CustomJSON skipped" in capsys.readouterr().out
    assert "CustomJSON" not in config["train_source_counts"]
    assert config["train_conversations"] == 17 + 12 + 14 + 50 + 30


def test_a_rerun_replaces_the_whole_folder(work):
    folder = work / "out" / NAME / "sft"
    folder.mkdir()
    (folder / "sft_train_000099.bin").write_bytes(b"old")
    run_sft(work)
    assert not (folder / "sft_train_000099.bin").exists()
    assert sorted(os.listdir(folder)) == sorted(p[len("sft/"):] for p in published_files(work / "out" / NAME))


def test_upload(work, hub):
    argv = ["--out-dir", str(work / "out"), "--dataset-name", NAME, "--hf-user", "someone", "--num-workers", "1",
            "--simple-spelling-size", "5", "--spelling-bee-size", "5", "--words-file", str(work / "words.txt"),
            "--hf-mirror", str(work / "mirror")]
    run_step("sft", argv)
    uploaded = repo_files(hub, f"someone/{NAME}")
    assert uploaded == published_files(work / "out" / NAME)
    assert "sft/manifest.json" in uploaded and all(p.startswith("sft/") for p in uploaded)


def test_upload_without_user_fails_before_work(work, monkeypatch):
    monkeypatch.delenv("HF_USER", raising=False)
    with pytest.raises(FlagError, match="--hf-user"):
        run_step("sft", ["--out-dir", str(work / "out"), "--dataset-name", NAME])
    assert not (work / "out" / NAME / "sft").exists()

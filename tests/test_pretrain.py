import json
import os
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import torch

from fixtures import published_files, repo_files, write_corpus
from test_lifecycle import tree
from stacks_data.dataset import binfile
from stacks_data.steps.pretrain import pretokenize
from stacks_data.steps.pretrain import step as pretrain_step
from stacks_data.cli import run_step
from stacks_data.errors import FlagError, InputError, NetworkError, OutputError
from stacks_data.tokenizer import RustBPETokenizer

NUM_FILES = 4  # files 0..2 train, file 3 val; tokenizer trains on file 0 (file 1 held out)


def pretrain(corpus, out, *extra):
    os.makedirs(os.path.join(os.path.dirname(out), "baselines"), exist_ok=True)  # offline: no GPT-2/GPT-4 columns
    run_step("pretrain", ["--parquet-dir", str(corpus), "--out-dir", str(out), "--dataset-name", "ds",
                          "--baselines-dir", os.path.join(os.path.dirname(out), "baselines"),
                          "--num-shards", str(NUM_FILES), "--tok-train-shards", "2", "--vocab-size", "320",
                          "--shard-size", "1000", "--num-workers", "1", "--skip-upload", *extra])
    return out / "ds"


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "parquet"
    return folder, write_corpus(folder, NUM_FILES)


def bins(folder, prefix):
    return [binfile.read_bin(str(folder / f)) for f in sorted(os.listdir(folder)) if f.startswith(prefix)]


def files_bytes(folder):
    names = [f for f in sorted(os.listdir(folder)) if f.endswith((".bin", ".json")) and not f.startswith(".")]
    return {f: (folder / f).read_bytes() for f in names}


def test_end_to_end(corpus, tmp_path):
    parquet_dir, docs = corpus
    out = pretrain(parquet_dir, tmp_path / "out")
    tok = RustBPETokenizer.from_directory(out / "tokenizer")
    with open(out / "tokenizer" / "tokenizer.pkl", "rb") as f:
        assert isinstance(pickle.load(f), tiktoken.Encoding)
    bos = tok.get_bos_token_id()
    assert tok.get_vocab_size() == 320

    # val = the last file, flushed on its own with its partial shard; train = the others, partial dropped
    def stream(file_docs):
        return [t for d in file_docs for t in [bos] + tok.encode(d)]
    val_stream, train_stream = stream(docs[3]), stream(docs[0] + docs[1] + docs[2])
    val = bins(out, "val_")
    assert [len(v) for v in val[:-1]] == [1000] * (len(val) - 1)
    assert np.concatenate(val).tolist() == val_stream
    train = bins(out, "train_")
    assert all(len(t) == 1000 for t in train)
    assert np.concatenate(train).tolist() == train_stream[: len(train) * 1000]
    assert len(train_stream) - len(train) * 1000 < 1000

    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 320 and config["bos_id"] == bos and config["shard_size"] == 1000
    assert config["train_shards"] == len(train) and config["train_tokens"] == len(train) * 1000
    assert config["val_tokens"] == len(val_stream) and config["val_documents"] == len(docs[3])
    assert config["train_documents"] == 3 * len(docs[0])
    assert config["train_dropped_tokens"] == len(train_stream) - len(train) * 1000
    assert config["tokenizer_fingerprint"] == tok.fingerprint()

    token_bytes = torch.load(out / "tokenizer" / "token_bytes.pt")
    assert token_bytes.dtype == torch.int32 and token_bytes.tolist() == tok.token_byte_lengths(exact=False)
    assert "bytes/token" in (out / "tokenizer_comparison.md").read_text()
    assert not [f for f in os.listdir(out) if f.endswith((".tmp", ".part"))]


def test_keep_partial_and_bin_subdir(corpus, tmp_path):
    parquet_dir, docs = corpus
    out = pretrain(parquet_dir, tmp_path / "out", "--keep-partial", "--bin-subdir", "fineweb_edu")
    tok = RustBPETokenizer.from_directory(out / "tokenizer")
    train = bins(out / "fineweb_edu", "train_")
    expected = [t for d in docs[0] + docs[1] + docs[2] for t in [tok.get_bos_token_id()] + tok.encode(d)]
    assert np.concatenate(train).tolist() == expected
    assert not [f for f in os.listdir(out) if f.endswith(".bin")]
    assert json.loads((out / "config.json").read_text())["bin_subdir"] == "fineweb_edu"


def test_no_train_shard_is_a_warning(corpus, tmp_path, capsys):
    parquet_dir, _ = corpus
    out = pretrain(parquet_dir, tmp_path / "out", "--shard-size", "10000000")
    config = json.loads((out / "config.json").read_text())
    assert config["train_shards"] == 0 and config["train_dropped_tokens"] > 0
    assert not bins(out, "train_")
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: no train shards")]
    assert len(warning) == 1 and f"{config['train_dropped_tokens']:,} tokens" in warning[0]
    assert "--keep-partial" in warning[0]
    pretrain(parquet_dir, tmp_path / "kept", "--shard-size", "10000000", "--keep-partial")
    assert "no train shards" not in capsys.readouterr().err


def test_workers_do_not_change_bytes(corpus, tmp_path):
    parquet_dir, _ = corpus
    one = pretrain(parquet_dir, tmp_path / "one")
    two = pretrain(parquet_dir, tmp_path / "two", "--num-workers", "2")
    assert files_bytes(one) == files_bytes(two)
    assert len([f for f in files_bytes(one) if f.endswith(".bin")]) > 5


def test_downloads_through_faults(corpus, tmp_path, file_server):
    source, _ = corpus
    for f in os.listdir(source):
        os.symlink(source / f, os.path.join(file_server.root, f))
    file_server.faults["/shard_00000.parquet"] = ["500", "truncate"]
    file_server.faults["/shard_00003.parquet"] = ["drop"]
    local = tmp_path / "downloaded"
    local.mkdir()
    reference = pretrain(source, tmp_path / "ref")
    out = pretrain(local, tmp_path / "out", "--base-url", file_server.url)
    got, want = files_bytes(out), files_bytes(reference)
    assert json.loads(got.pop("config.json"))["source"]["base_url"] == file_server.url
    for name in ("config.json", "manifest.json"):  # they name their config.json: the sources differ
        want.pop(name)
    got.pop("manifest.json")
    assert got == want
    assert sorted(os.listdir(local)) == sorted(os.listdir(source))  # no .part left
    assert file_server.requests.count("/shard_00000.parquet") == 3


def killed_at_the_12th_shard(monkeypatch, run):
    """run() interrupted as it writes its 12th shard (val's 7 and 4 of train's are on disk)."""
    real_cut, cuts = binfile.ShardWriter._cut, {"n": 0}

    def crashing_cut(self):
        cuts["n"] += 1
        if cuts["n"] == 12:
            raise KeyboardInterrupt("killed")
        real_cut(self)

    monkeypatch.setattr(binfile.ShardWriter, "_cut", crashing_cut)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(binfile.ShardWriter, "_cut", real_cut)


def test_resumes_after_crash_in_tokenization(corpus, tmp_path, monkeypatch):
    parquet_dir, _ = corpus
    reference = files_bytes(pretrain(parquet_dir, tmp_path / "ref"))

    killed_at_the_12th_shard(monkeypatch, lambda: pretrain(parquet_dir, tmp_path / "out"))
    out = tmp_path / "out" / "ds"
    assert not (out / "config.json").exists()

    calls = []
    real_task = pretokenize.tokenize_row_group
    monkeypatch.setattr(pretokenize, "tokenize_row_group", lambda task: calls.append(task) or real_task(task))
    pretrain(parquet_dir, tmp_path / "out")
    assert files_bytes(out) == reference
    # finished work was not redone: val is done; train's 4 shards (4000 tokens) end inside its second row
    # group (of 9, ~2000 tokens each), where it resumes
    assert calls[0] == (str(parquet_dir / "shard_00000.parquet"), 1, 25, "text")
    assert len(calls) == 8

    calls.clear()
    pretrain(parquet_dir, tmp_path / "out")  # a finished run is not redone at all
    assert calls == [] and files_bytes(out) == reference


def test_encoder_mismatches_are_counted_once_across_a_resume(corpus, tmp_path, monkeypatch):
    parquet_dir, _ = corpus
    real_task = pretokenize.tokenize_row_group
    monkeypatch.setattr(pretokenize, "tokenize_row_group", lambda task: (*real_task(task)[:3], 1, real_task(task)[4]))  # 1 per group
    reference = json.loads((pretrain(parquet_dir, tmp_path / "ref") / "config.json").read_text())
    groups = sum(pq.ParquetFile(parquet_dir / f"shard_{i:05d}.parquet").num_row_groups for i in range(NUM_FILES))
    assert reference["encoder_mismatches"] == groups

    # killed inside train: the row group it resumes in is tokenized again (and its mismatch counted again)
    killed_at_the_12th_shard(monkeypatch, lambda: pretrain(parquet_dir, tmp_path / "out"))
    resumed = json.loads((pretrain(parquet_dir, tmp_path / "out") / "config.json").read_text())
    assert resumed == reference | {"source": resumed["source"]}  # only the output folder's paths differ


def test_crash_in_training_retrains(corpus, tmp_path, monkeypatch):
    parquet_dir, _ = corpus
    reference = files_bytes(pretrain(parquet_dir, tmp_path / "ref"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(pretrain_step, "in_a_worker", killed)  # the training, in its worker process
        with pytest.raises(KeyboardInterrupt):
            pretrain(parquet_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "ds" / "tokenizer" / "tokenizer.pkl").exists()
    assert files_bytes(pretrain(parquet_dir, tmp_path / "out")) == reference


def test_changed_flags_are_refused_unless_overwrite(corpus, tmp_path):
    parquet_dir, _ = corpus
    out = pretrain(parquet_dir, tmp_path / "out")
    before = files_bytes(out)
    with pytest.raises(OutputError, match=r"shards: shard_size is 1000 in the folder, 3000 in the command.*--overwrite"):
        pretrain(parquet_dir, tmp_path / "out", "--shard-size", "3000")
    assert files_bytes(out) == before  # refused before anything changed
    pretrain(parquet_dir, tmp_path / "out", "--shard-size", "3000", "--overwrite")
    assert all(len(t) == 3000 for t in bins(out, "train_"))
    config = json.loads((out / "config.json").read_text())
    assert config["shard_size"] == 3000
    assert len(bins(out, "train_")) == config["train_shards"]


@pytest.mark.parametrize("change", [["--shard-size", "3000", "--overwrite"], []])
def test_a_run_that_cannot_download_changes_nothing(corpus, tmp_path, change):
    """--overwrite, or a lost shard to redo, with an input missing and no way to download it: the error
    comes before the folder loses anything (and never leaves a config.json over missing shards)."""
    parquet_dir, _ = corpus
    out = pretrain(parquet_dir, tmp_path / "out")
    if not change:
        os.remove(out / "train_000003.bin")
    before = tree(out)
    os.remove(parquet_dir / f"shard_{NUM_FILES - 2:05d}.parquet")
    with pytest.raises(NetworkError):
        pretrain(parquet_dir, tmp_path / "out", "--base-url", "http://127.0.0.1:9", *change)
    assert tree(out) == before


def test_a_read_only_parquet_dir_is_read(corpus, tmp_path, monkeypatch):
    parquet_dir, _ = corpus
    reference = files_bytes(pretrain(parquet_dir, tmp_path / "ref"))
    shutil.rmtree(parquet_dir / ".locks")
    real_access, real_makedirs = os.access, os.makedirs

    # a read-only mount, as root sees it too: access(2) says no, and nothing can be made in it
    def access(path, mode):
        return False if str(path) == str(parquet_dir) and mode == os.W_OK else real_access(path, mode)

    def makedirs(path, *args, **kwargs):
        if str(path).startswith(str(parquet_dir)):
            raise OSError(30, "Read-only file system", str(path))
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "makedirs", makedirs)
    assert files_bytes(pretrain(parquet_dir, tmp_path / "out")) == reference
    assert not (parquet_dir / ".locks").exists()


def test_moving_shards_to_a_subdir_removes_the_old_ones(corpus, tmp_path):
    parquet_dir, _ = corpus
    out = pretrain(parquet_dir, tmp_path / "out")
    assert bins(out, "train_")
    pretrain(parquet_dir, tmp_path / "out", "--bin-subdir", "fineweb_edu", "--overwrite")
    assert not [f for f in os.listdir(out) if f.endswith(".bin")]
    assert len(bins(out / "fineweb_edu", "train_")) == json.loads((out / "config.json").read_text())["train_shards"]


def test_reused_tokenizer_must_match(corpus, tmp_path):
    parquet_dir, _ = corpus
    pretrain(parquet_dir, tmp_path / "out")
    with pytest.raises(OutputError, match="tokenizer: vocab_size is 320 in the folder, 330 in the command"):
        pretrain(parquet_dir, tmp_path / "out", "--vocab-size", "330")


@pytest.mark.parametrize("vocab, error", [
    ("200", r"must be between 265 and 65,536, got .* \(--vocab-size\)"),
    ("70000", r"a vocab of 70,000 \(--vocab-size\) does not fit uint16 tokens \(--token-dtype\): pass --token-dtype uint32"),
])
def test_bad_vocab_size(corpus, tmp_path, vocab, error):
    parquet_dir, _ = corpus
    with pytest.raises(FlagError, match=error):
        pretrain(parquet_dir, tmp_path / "out", "--vocab-size", vocab)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("table, message", [
    (pa.table({"content": ["a", "b"]}), r"missing column\(s\) \['text'\].* \(.*shard_00002.parquet\)"),
    (pa.table({"text": ["a", None, "c"]}), r"'text' is null, expected a string \(.*shard_00002.parquet row 1\)"),
    (pa.table({"text": [1, 2]}), r"column 'text' has type int64, expected string \(.*shard_00002.parquet\)"),
    (None, r"not a readable parquet file .*\(.*shard_00002.parquet\)"),
])
def test_bad_input_names_file_and_row(corpus, tmp_path, table, message):
    parquet_dir, _ = corpus
    bad = parquet_dir / "shard_00002.parquet"
    bad.unlink()
    if table is None:
        bad.write_bytes(b"PAR1 this is not parquet")
    else:
        pq.write_table(table, bad)
    with pytest.raises(InputError, match=message):
        pretrain(parquet_dir, tmp_path / "out")
    out = tmp_path / "out" / "ds"
    assert not (out / "config.json").exists()
    assert not [f for f in (os.listdir(out) if out.exists() else []) if f.endswith(".tmp")]
    if "null" not in message:  # what the footer shows is found before any work (nulls only when read)
        assert not (out / "tokenizer").exists()


def test_upload(corpus, tmp_path, monkeypatch, hub):
    monkeypatch.delenv("HF_USER", raising=False)
    monkeypatch.setenv("HF_TOKEN", "secret")
    parquet_dir, _ = corpus
    args = ["--parquet-dir", str(parquet_dir), "--out-dir", str(tmp_path / "out"), "--dataset-name", "ds",
            "--num-shards", "4", "--tok-train-shards", "2", "--vocab-size", "320", "--shard-size", "1000",
            "--num-workers", "1", "--baselines-dir", str(parquet_dir)]
    with pytest.raises(FlagError, match="--hf-user"):
        run_step("pretrain", args)  # refused before any work
    assert not (tmp_path / "out").exists() and not hub.requests
    run_step("pretrain", args + ["--hf-user", "me"])
    out = tmp_path / "out" / "ds"
    uploaded = repo_files(hub, "me/ds")
    # this step's files (manifest included), never progress, lock or temp files
    assert uploaded == published_files(out)
    assert {"manifest.json", "config.json", "tokenizer/tokenizer.pkl", "tokenizer_comparison.md"} <= set(uploaded)
    assert not [p for p in uploaded if p.startswith(".") or "/." in p]
    # the hub endpoint is plain http here: the token was not sent
    assert set(hub.authorizations) == {None}

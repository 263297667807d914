"""stacks-data inspect: the documents it prints are the corpus's, SFT marks exactly the supervised tokens,
one .bin file and both token widths, the length plot, and errors in one line."""

import itertools
import re
import shutil
import struct

import numpy as np
import pytest

from fixtures import make_docs
from stacks_data.steps import inspect as inspect_step
from stacks_data.dataset.binfile import HEADER_INTS, open_tokens, read_bin
from stacks_data.cli import main, run_step
from stacks_data.errors import FlagError, InputError
from stacks_data.tokenizer import RustBPETokenizer
from test_roundtrip import built  # noqa: F401  (the dataset all four steps made)


def inspect(capsys, *argv) -> str:
    capsys.readouterr()
    run_step("inspect", [str(a) for a in argv])
    return capsys.readouterr().out


def test_the_val_split_starts_with_the_corpus_s_first_val_document(built, capsys):
    first_val = make_docs(60, seed=3)[0]  # the last parquet file (shard_00003) is val; its first row
    out = inspect(capsys, built, "--split", "val")
    header = re.search(r"--- val document 0: .*---\n", out)
    assert header and out[header.end():].startswith(first_val + "\n")
    assert "val_000000.bin: magic 20240520, version 1, uint16 tokens" in out
    assert re.search(r"^val +\d+ +[\d,]+ +60$", out, re.M)  # 60 documents, from config.json


def test_doc_k_runs_across_shards(built, capsys):
    docs = make_docs(60, seed=0) + make_docs(60, seed=1) + make_docs(60, seed=2)  # train: the files in order
    tok = RustBPETokenizer.from_directory(built / "tokenizer")
    tokens = np.concatenate([read_bin(str(p)) for p in sorted(built.glob("train_*.bin"))])
    starts = np.flatnonzero(tokens == tok.get_bos_token_id())
    # a document that starts in one shard and ends in the next (shards are 1000 tokens)
    k = next(k for k in range(len(starts) - 1) if starts[k] // 1000 != starts[k + 1] // 1000 and starts[k] % 1000)
    out = inspect(capsys, built, "--split", "train", "--doc", k)
    assert out.split("---\n", 1)[1] == docs[k] + "\n\n"
    assert f"--- train document {k}: {starts[k + 1] - starts[k]:,} tokens with <|bos|> " \
           f"(train_{starts[k] // 1000:06d}.bin from token {starts[k] % 1000:,}) ---" in out
    cut = inspect(capsys, built, "--split", "train", "--doc", k, "--max-tokens", 3)
    assert cut.split("---\n", 1)[1] == tok.decode(tokens[starts[k] + 1:starts[k] + 4].tolist()) + "\n\n"


def test_sft_marks_exactly_the_supervised_tokens(built, capsys):
    tok = RustBPETokenizer.from_directory(built / "tokenizer")
    tokens = read_bin(str(built / "sft" / "sft_val_000000.bin"))
    mask = read_bin(str(built / "sft" / "sft_val_000000_mask.bin"))
    starts = np.flatnonzero(tokens == tok.get_bos_token_id())
    for k in range(3):
        ids, bits = tokens[starts[k] + 1:starts[k + 1]].tolist(), mask[starts[k] + 1:starts[k + 1]].tolist()
        out = inspect(capsys, built, "--split", "sft_val", "--doc", k)
        shown = out.split("---\n", 1)[1][:-2]
        # the text with the marks taken out is the conversation; the marked spans are the runs of mask 1
        assert shown.replace("[[", "").replace("]]", "") == tok.decode(ids)
        runs = [tok.decode([i for i, _ in run]) for bit, run in itertools.groupby(zip(ids, bits), key=lambda p: p[1])
                if bit]
        assert re.findall(r"\[\[(.*?)\]\]", shown, re.S) == runs and runs
        assert all(run.endswith(("<|assistant_end|>", "<|python_end|>")) for run in runs)
        assert "\033[" not in out  # no colour when the output is not a terminal


def test_colour_on_a_terminal():
    tok = RustBPETokenizer.train_from_iterator(make_docs(100, seed=1), 300)
    parts = [tok.enc.encode_ordinary(text) for text in ("hello", " there", " world")]
    ids = np.array(sum(parts, []))
    mask = np.array([0] * len(parts[0]) + [1] * len(parts[1]) + [0] * len(parts[2]))
    shown = inspect_step.render(ids, mask, tok, terminal=True)
    assert shown == f"hello{inspect_step.MARK_ON} there{inspect_step.MARK_OFF} world"


def test_one_bin_file(built, capsys):
    out = inspect(capsys, built / "sft" / "sft_train_000001.bin", "--doc", "0", "--max-tokens", "5")
    tokens = read_bin(str(built / "sft" / "sft_train_000001.bin"))
    tok = RustBPETokenizer.from_directory(built / "tokenizer")
    bos = int(np.count_nonzero(tokens == tok.get_bos_token_id()))
    assert re.search(rf"^sft_train_000001.bin +1 +{len(tokens):,} +{bos:,}$", out, re.M)
    assert "[[" in out or "<|user_start|>" in out  # decoded with the dataset's tokenizer, mask beside it


def test_a_uint32_v7_file_is_read_by_its_header(tmp_path, capsys):
    path = tmp_path / "v7.bin"
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = [20240801, 7, 4]
    path.write_bytes(header.tobytes() + np.array([5, 70000, 1, 2], dtype="<u4").tobytes())
    assert open_tokens(str(path))[1].tolist() == [5, 70000, 1, 2]
    out = inspect(capsys, path)
    assert "v7.bin: magic 20240801, version 7, uint32 tokens, 4 tokens" in out and "5 70000 1 2" in out
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(InputError, match="header announces"):
        inspect(capsys, path)


def test_plot_is_a_png(built, tmp_path, capsys):
    out = inspect(capsys, built, "--plot", tmp_path / "lengths.png")
    png = (tmp_path / "lengths.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (900, 450)
    assert f"wrote {tmp_path / 'lengths.png'}" in out


@pytest.mark.parametrize("argv, error, match", [
    (["--split", "val", "--doc", "100000"], InputError, "so no document 100000"),
    (["--doc", "-1"], FlagError, "start at 0"),
])
def test_errors_are_one_line(built, capsys, argv, error, match):
    with pytest.raises(error, match=match):
        inspect(capsys, built, *argv)
    with pytest.raises(SystemExit) as exit:
        main(["inspect", str(built), *argv])
    assert exit.value.code in (1, 2)
    assert capsys.readouterr().err.strip().startswith("error: ")


def test_a_partial_download_and_a_split_the_folder_lacks(built, tmp_path, capsys):
    shutil.copytree(built, tmp_path / "ds", ignore=shutil.ignore_patterns("sft"))
    for shard in sorted((tmp_path / "ds").glob("train_*.bin"))[2:]:  # as download --num-train-shards 2 leaves it
        shard.unlink()
    out = inspect(capsys, tmp_path / "ds", "--split", "train", "--doc", "0")
    assert re.search(r"^train +2/\d+ ", out, re.M) and "n of the split's m shards are here" in out
    assert out.split("---\n", 1)[1] == make_docs(60, seed=0)[0] + "\n\n"
    with pytest.raises(FlagError, match="no sft_val split"):
        inspect(capsys, tmp_path / "ds", "--split", "sft_val")

"""The tokenizer report (numbers checked against counts made here), its plot, offline baselines, and
token_bytes.pt counted the consumers' way."""

import base64
import re
import struct

import pytest
import tiktoken
import torch

from fixtures import EXTRAS, make_docs, write_corpus
from stacks_data.steps.pretrain import tokenizer_report as R
from stacks_data.cli import run_step
from stacks_data.tokenizer import RustBPETokenizer

TRAINING = {"docs": 300, "chars": 12345, "doc_cap": 10000, "train_shards": [["shard_00000.parquet", "x"]]}


def small_ranks(docs, vocab) -> dict[bytes, int]:
    return RustBPETokenizer.train_from_iterator(docs, vocab).spec["mergeable_ranks"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    tok = RustBPETokenizer.train_from_iterator(make_docs(400, seed=1) + list(R.domain_texts().values()), 600)
    # baselines of our own making, in tiktoken's rank-file format
    baselines = {"gpt2": small_ranks(make_docs(300, seed=2), 300), "cl100k_base": small_ranks(make_docs(300, seed=3), 400)}
    (root / "baselines").mkdir()
    for name, ranks in baselines.items():
        (root / "baselines" / f"{name}.tiktoken").write_text(
            "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1])))
    samples = {"training shard": "\n".join(make_docs(50, seed=4)), "held-out shard": "\n".join(make_docs(50, seed=5))}
    (root / "out").mkdir()
    records, text = R.write_report(tok, TRAINING, samples, (50, 1234, 10), str(root / "baselines"), str(root / "out"))
    return tok, baselines, samples, root, records, text


def table(text: str) -> dict[str, list[str]]:
    """The compression table of the markdown, by sample name."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ") and "|---" not in line]
    header = next(i for i, r in enumerate(rows) if r[0].strip() == "sample")
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[header + 1:]}


def test_numbers_match_counts_made_independently(setup):
    tok, baselines, samples, _, _, text = setup
    gpt4 = tiktoken.Encoding("x", pat_str=R.BASELINE_SPECS["cl100k_base"]["pat_str"],
                             mergeable_ranks=baselines["cl100k_base"], special_tokens={})
    gpt2 = tiktoken.Encoding("y", pat_str=R.BASELINE_SPECS["gpt2"]["pat_str"], mergeable_ranks=baselines["gpt2"],
                             special_tokens={})
    rows = table(text)
    assert list(rows) == list(R.DOMAINS) + ["training shard", "held-out shard"]
    for name, sample in {**R.domain_texts(), **samples}.items():
        b, c = len(sample.encode()), len(sample)
        ours, two, four = (len(e.encode_ordinary(sample)) for e in (tok.enc, gpt2, gpt4))
        assert rows[name] == [f"{b:,}", f"{c:,}", f"{ours:,}", f"{b / ours:.2f}", f"{c / ours:.2f}",
                              f"{b / two:.2f}", f"{100 * (two - ours) / two:+.1f}%",
                              f"{b / four:.2f}", f"{100 * (four - ours) / four:+.1f}%"]
    assert f"| fingerprint | `{tok.fingerprint()}` |" in text
    assert "| vocab size | 600 (591 byte-level merges and bytes, 9 special tokens) |" in text
    assert "300 documents, 12,345 characters of shard_00000.parquet" in text
    assert "about 12,340 tokens: the held-out shard has 50 documents, 1,234 tokens" in text
    assert "| baselines | GPT-2 (gpt2), GPT-4 (cl100k_base) |" in text


def test_domain_samples_are_several_kb():
    assert all(len(t.encode()) > 2500 for t in R.domain_texts().values())


def test_the_plot_is_a_png_of_sensible_size(setup):
    _, _, _, root, records, text = setup
    png = (root / "out" / R.PLOT_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(png) < 1_000_000
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (1300, 450)
    assert f"]({R.PLOT_FILE})" in text
    assert [r.path for r in records] == [str(root / "out" / R.REPORT_FILE), str(root / "out" / R.PLOT_FILE)]


def test_the_sample_names_do_not_overlap(setup):
    tok, _, samples, _, _, _ = setup
    rows = R.measure({"ours": tok.enc}, {**R.domain_texts(), **samples})
    fig = R.figure(rows, ["ours"], {"ours": [n for n in tok.token_byte_lengths() if n]})
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in fig.axes[0].get_xticklabels()]
    assert [label.get_text().replace("\n", " ") for label in fig.axes[0].get_xticklabels()] == [r.name for r in rows]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(fig.bbox.contains(box.x0, box.y0) for box in boxes)  # and none is cut off the image


def test_a_missing_baseline_says_which_file_to_add(tmp_path):
    (tmp_path / "gpt2.tiktoken").write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    loaded, notes = R.load_baselines(str(tmp_path))
    assert list(loaded) == ["GPT-2"]
    assert notes == ["GPT-4 (cl100k_base) is left out: --baselines-dir has no cl100k_base.tiktoken. Put its rank "
                     "file there (download https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken) "
                     "to include it."]


def test_token_bytes_are_counted_as_the_consumers_count(tmp_path):
    docs = make_docs(300, seed=6) + EXTRAS * 40 + ["서울의 봄 " * 30, "Größe " * 30, "😀🎉 " * 30]
    tok = RustBPETokenizer.train_from_iterator(docs, 500)
    seed_way = [0 if i in tok.special_ids.values() else len(tok.decode([i]).encode("utf-8")) for i in range(500)]
    exact = [0 if i in tok.special_ids.values() else len(tok.enc.decode_single_token_bytes(i)) for i in range(500)]
    assert tok.token_byte_lengths(exact=False) == seed_way and tok.token_byte_lengths() == exact
    assert seed_way != exact  # partial UTF-8 tokens: U+FFFD is 3 bytes


def test_pretrain_writes_both_token_bytes_and_the_report(tmp_path):
    write_corpus(tmp_path / "parquet", num_files=4)
    (tmp_path / "baselines").mkdir()
    run_step("pretrain", ["--parquet-dir", str(tmp_path / "parquet"), "--num-shards", "4", "--tok-train-shards", "2",
                          "--vocab-size", "320", "--num-workers", "1", "--skip-upload", "--out-dir", str(tmp_path),
                          "--dataset-name", "ds", "--baselines-dir", str(tmp_path / "baselines")])
    out = tmp_path / "ds"
    tok = RustBPETokenizer.from_directory(out / "tokenizer")
    assert torch.load(out / "tokenizer" / "token_bytes.pt").tolist() == tok.token_byte_lengths(exact=False)
    assert torch.load(out / "tokenizer" / "token_bytes_exact.pt").tolist() == tok.token_byte_lengths()
    manifest = (out / "manifest.json").read_text()
    for name in ("tokenizer/token_bytes.pt", "tokenizer/token_bytes_exact.pt", R.REPORT_FILE, R.PLOT_FILE):
        assert f'"path": "{name}"' in manifest
    report = (out / R.REPORT_FILE).read_text()
    assert re.search(r"\| held-out shard \| [\d,]+ \|", report) and "GPT-2 (gpt2) is left out" in report
    # a file of the dataset does not depend on where its inputs were kept
    assert str(tmp_path) not in report and "--baselines-dir has no gpt2.tiktoken" in report

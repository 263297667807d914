import tiktoken

from fixtures import make_docs
from stacks_data import compare
from stacks_data.tokenizer import RustBPETokenizer


def test_table_and_markdown():
    ours = RustBPETokenizer.train_from_iterator(make_docs(200, seed=3), 300).enc
    bigger = RustBPETokenizer.train_from_iterator(make_docs(200, seed=3), 400).enc
    texts = {"prose": " ".join(make_docs(5, seed=9)), "korean": "서울의 봄"}
    rows = compare.compression_table(ours, texts, {"Big": bigger})
    for row, text in zip(rows, texts.values()):
        assert row["bytes"] == len(text.encode())
        assert row["ours"] == len(ours.encode_ordinary(text)) and row["Big"] == len(bigger.encode_ordinary(text))
    prose = rows[0]
    assert prose["Big"] < prose["ours"]  # more merges, fewer tokens
    markdown = compare.to_markdown(rows, ["Big"], ["GPT-2 (gpt2) unavailable: offline"])
    diff = 100 * (prose["Big"] - prose["ours"]) / prose["Big"]
    assert f"| prose | {prose['bytes']} | {prose['Big']} | {prose['bytes'] / prose['Big']:.2f} | {prose['ours']} |" in markdown
    assert f"{diff:+.1f}%" in markdown and diff < 0
    assert "Note: GPT-2 (gpt2) unavailable: offline" in markdown


def test_unavailable_baselines_are_reported(monkeypatch):
    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    loaded, notes = compare.load_baselines()
    assert loaded == {}
    assert len(notes) == 2 and "GPT-2 (gpt2) left out: ConnectionError" in notes[0] and "--baselines-dir" in notes[0]

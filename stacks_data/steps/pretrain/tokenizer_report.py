"""
The tokenizer report: tokenizer_comparison.md and tokenizer_report.png, the page to read to decide
whether a trained tokenizer is good.

It gives the vocab, the fingerprint and what the tokenizer was trained on; bytes and characters per
token on each sample set (built-in domain texts of several KB, documents of a training shard and of the
held-out shard) for ours, GPT-2 and GPT-4 (cl100k_base), with the relative difference in tokens; an
estimate of the corpus's size in tokens; and a plot of bytes/token per sample set and of the token
lengths across the vocab. Every number is a function of the inputs, so the report is too (no timing).

The baselines come from tiktoken, which downloads their rank files; offline, from --baselines-dir,
a folder holding gpt2.tiktoken and cl100k_base.tiktoken in tiktoken's rank-file format (its own cache
checks file hashes under opaque names, so a folder of plain rank files is the honest offline form).
"""

import io
import os
import textwrap
from dataclasses import dataclass, field
from importlib.resources import files

import tiktoken

from stacks_data.encoder import exact_encode
from stacks_data.dataset.files import FileRecord, write_bytes, write_text

REPORT_FILE = "tokenizer_comparison.md"
PLOT_FILE = "tokenizer_report.png"
BASELINES = {"GPT-2": "gpt2", "GPT-4": "cl100k_base"}
# what tiktoken builds these encodings from besides their rank files (tiktoken_ext/openai_public.py)
BASELINE_SPECS = {
    "gpt2": {"pat_str": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
             "special_tokens": {"<|endoftext|>": 50256}},
    "cl100k_base": {"pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
                    "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                       "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}},
}
DOMAINS = ("news", "korean", "code", "math", "science")


def domain_texts() -> dict[str, str]:
    """The built-in sample texts, several KB each (stacks_data/samples/)."""
    return {name: files("stacks_data").joinpath("samples", f"{name}.txt").read_text(encoding="utf-8")
            for name in DOMAINS}


def load_baselines(baselines_dir: str | None = None) -> tuple[dict[str, tiktoken.Encoding], list[str]]:
    """The baseline encodings that can be loaded, and for each one that cannot, how to add it."""
    from tiktoken.load import load_tiktoken_bpe

    loaded, notes = {}, []
    for label, name in BASELINES.items():
        path = os.path.join(baselines_dir, f"{name}.tiktoken") if baselines_dir else None
        source = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        try:
            if path is None:
                loaded[label] = tiktoken.get_encoding(name)
            elif os.path.isfile(path):
                loaded[label] = tiktoken.Encoding(name, mergeable_ranks=load_tiktoken_bpe(path), **BASELINE_SPECS[name])
            else:
                # by its file name: a file of the dataset does not say where the baselines were kept
                notes.append(f"{label} ({name}) is left out: --baselines-dir has no {name}.tiktoken. Put its rank "
                             f"file there (download {source}) to include it.")
        except Exception as e:  # offline: tiktoken cannot fetch the rank file; or a bad rank file
            notes.append(f"{label} ({name}) is left out ({type(e).__name__}). Pass --baselines-dir DIR with "
                         f"{name}.tiktoken in it (download {source}) to include it offline.")
    return loaded, notes


@dataclass
class Row:
    """One sample set: its size, and tokens per tokenizer ("ours" first)."""
    name: str
    bytes: int
    chars: int
    tokens: dict[str, int] = field(default_factory=dict)


def measure(encodings: dict[str, tiktoken.Encoding], texts: dict[str, str]) -> list[Row]:
    """Tokens of each text per encoding, encoded as ordinary text (exactly, whatever the text)."""
    return [Row(name, len(text.encode("utf-8")), len(text),
                {label: len(exact_encode(enc, text)) for label, enc in encodings.items()})
            for name, text in texts.items()]


@dataclass
class Facts:
    """What the report says about the tokenizer besides compression."""
    vocab_size: int
    merges: int
    specials: int
    fingerprint: str
    training: dict          # tokenizer/training.json: docs, chars, train_shards, ...
    estimate: tuple[int, int, int]  # (held-out shard documents, its tokens incl. <|bos|>, shards in the run)


def markdown(facts: Facts, rows: list[Row], baselines: list[str], notes: list[str]) -> str:
    docs, tokens, shards = facts.estimate
    shard_names = [name for name, _ in facts.training.get("train_shards", [])]
    out = [
        "# Tokenizer report", "",
        "| | |", "|---|---|",
        f"| vocab size | {facts.vocab_size:,} ({facts.merges:,} byte-level merges and bytes, {facts.specials} special tokens) |",
        f"| fingerprint | `{facts.fingerprint}` |",
        f"| trained on | {facts.training.get('docs', 0):,} documents, {facts.training.get('chars', 0):,} characters "
        f"of {', '.join(shard_names) or '-'} (each cut to {facts.training.get('doc_cap', 0):,} characters) |",
        f"| baselines | {', '.join(f'{b} ({BASELINES[b]})' for b in baselines) or 'none (see the notes below)'} |",
        f"| corpus size, estimated | about {tokens * shards:,} tokens: the held-out shard has {docs:,} documents, "
        f"{tokens:,} tokens with <|bos|>, times {shards} shards |",
        "",
        "## Compression",
        "",
        "Bytes (UTF-8) and characters per token: higher is better. `vs X`: how many fewer tokens ours needs "
        "than X on the same text, `(X tokens - ours) / X tokens` (positive: ours is better).",
        "",
    ]
    head = ["sample", "bytes", "chars", "ours tokens", "ours bytes/token", "ours chars/token"]
    for b in baselines:
        head += [f"{b} bytes/token", f"vs {b}"]
    out += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        ours = r.tokens["ours"]
        cells = [r.name, f"{r.bytes:,}", f"{r.chars:,}", f"{ours:,}", _ratio(r.bytes, ours), _ratio(r.chars, ours)]
        for b in baselines:
            theirs = r.tokens[b]
            cells += [_ratio(r.bytes, theirs), f"{100 * (theirs - ours) / theirs:+.1f}%" if theirs else "-"]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", f"![bytes per token per sample set, and token lengths across the vocab]({PLOT_FILE})", ""]
    out += [f"Note: {n}" for n in notes]
    return "\n".join(out) + "\n"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def plot(rows: list[Row], labels: list[str], token_lengths: dict[str, list[int]]) -> bytes:
    """The PNG: bytes/token per sample set for each tokenizer; token lengths in bytes across each vocab."""
    import matplotlib.pyplot as plt

    fig = figure(rows, labels, token_lengths)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def figure(rows: list[Row], labels: list[str], token_lengths: dict[str, list[int]]):
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), dpi=100)
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        left.bar([x + i * width for x in range(len(rows))],
                 [r.bytes / r.tokens[label] if r.tokens[label] else 0 for r in rows], width, label=label)
    # sample names are long ("held-out shard"): one word a line, they do not run into each other
    left.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(rows))],
                    [textwrap.fill(r.name, 9) for r in rows])
    left.set_ylabel("bytes per token (higher is better)")
    left.set_title("Compression per sample set")
    left.legend()
    longest = min(max(max(lengths) for lengths in token_lengths.values()), 32)
    bins = list(range(1, longest + 2))
    for label, lengths in token_lengths.items():
        right.hist([min(n, longest) for n in lengths], bins=bins, histtype="step", density=True, label=label)
    right.set_xlabel(f"token length in bytes ({longest}+ in the last bin)")
    right.set_ylabel("share of the vocab")
    right.set_title("Token lengths across the vocab")
    right.legend()
    fig.tight_layout()
    return fig


def write_report(tok, training: dict, samples: dict[str, str], estimate: tuple[int, int, int],
                 baselines_dir: str | None, out_dir: str) -> tuple[list[FileRecord], str]:
    """Write the report and its plot into out_dir; returns their records and the markdown."""
    baselines, notes = load_baselines(baselines_dir)
    encodings = {"ours": tok.enc, **baselines}
    rows = measure(encodings, {**domain_texts(), **samples})
    specials = len(tok.special_ids)
    facts = Facts(tok.get_vocab_size(), tok.get_vocab_size() - specials, specials, tok.fingerprint(), training,
                  estimate)
    text = markdown(facts, rows, list(baselines), notes)
    lengths = {"ours": [n for n in tok.token_byte_lengths() if n]}
    lengths.update({label: [len(t) for t in enc.token_byte_values()] for label, enc in baselines.items()})
    image = plot(rows, list(encodings), lengths)
    records = [write_text(os.path.join(out_dir, REPORT_FILE), text),
               write_bytes(os.path.join(out_dir, PLOT_FILE), [image])]
    return records, text

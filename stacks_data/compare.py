"""
How well the trained tokenizer compresses text, next to GPT-2 and GPT-4 (cl100k_base).

Compression is bytes of UTF-8 per token, on short texts of different kinds and on samples of the
training and held-out shards. Baselines come from tiktoken; offline it needs their files in its cache
(TIKTOKEN_CACHE_DIR); a baseline it cannot load is reported and left out.
"""

import os

import tiktoken

from stacks_data.encoder import exact_encode

BASELINES = {"GPT-2": "gpt2", "GPT-4": "cl100k_base"}

SAMPLE_TEXTS = {
    "news": (
        "(Washington) The city council voted 7-2 on Tuesday to approve a $48 million plan to rebuild the "
        "Riverside bridge, which has been closed to heavy trucks since an inspection in March found corroded "
        "steel beams. Construction is expected to begin next spring and last about two years, officials said. "
        "\"We cannot keep patching a structure that was built in 1962,\" the mayor told reporters."
    ),
    "korean": (
        "서울의 봄은 짧지만 아름답다. 벚꽃이 피면 많은 사람들이 한강 공원으로 나들이를 간다. "
        "올해는 기온이 예년보다 높아서 꽃이 일주일 정도 일찍 피었다고 기상청이 밝혔다."
    ),
    "code": (
        "def merge_sorted(a: list[int], b: list[int]) -> list[int]:\n"
        "    \"\"\"Merge two sorted lists into one sorted list.\"\"\"\n"
        "    out, i, j = [], 0, 0\n"
        "    while i < len(a) and j < len(b):\n"
        "        if a[i] <= b[j]:\n"
        "            out.append(a[i]); i += 1\n"
        "        else:\n"
        "            out.append(b[j]); j += 1\n"
        "    return out + a[i:] + b[j:]\n"
    ),
    "math": (
        "\\begin{theorem}\nFor every $\\varepsilon > 0$ there is $\\delta > 0$ such that\n"
        "\\[ \\left| \\int_0^1 f(x)\\,dx - \\sum_{k=1}^{n} f\\!\\left(\\tfrac{k}{n}\\right)\\frac{1}{n} \\right| "
        "< \\varepsilon \\quad \\text{whenever } \\tfrac{1}{n} < \\delta. \\]\n\\end{theorem}"
    ),
    "science": (
        "Photosynthesis converts light energy into chemical energy stored in glucose. In the light-dependent "
        "reactions, photosystem II oxidizes water, releasing O2 and transferring electrons through the "
        "cytochrome b6f complex, which pumps protons into the thylakoid lumen; ATP synthase then uses the "
        "resulting gradient to phosphorylate ADP."
    ),
}


# what tiktoken builds these encodings from, besides their rank files (tiktoken_ext/openai_public.py)
BASELINE_SPECS = {
    "gpt2": {"pat_str": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
             "special_tokens": {"<|endoftext|>": 50256}},
    "cl100k_base": {"pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
                    "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                       "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}},
}


def load_baselines(baselines_dir: str | None = None) -> tuple[dict[str, tiktoken.Encoding], list[str]]:
    """The baseline encodings that can be loaded, and a note for each one that cannot.

    With baselines_dir, from the rank files <dir>/gpt2.tiktoken and <dir>/cl100k_base.tiktoken (the
    format of tiktoken's load_tiktoken_bpe) and nothing else: the offline form. Without, tiktoken
    fetches them (and caches them).
    """
    from tiktoken.load import load_tiktoken_bpe

    loaded, notes = {}, []
    for label, name in BASELINES.items():
        path = os.path.join(baselines_dir, f"{name}.tiktoken") if baselines_dir else None
        try:
            if path is None:
                loaded[label] = tiktoken.get_encoding(name)
            elif os.path.isfile(path):
                loaded[label] = tiktoken.Encoding(name, mergeable_ranks=load_tiktoken_bpe(path), **BASELINE_SPECS[name])
            else:
                notes.append(f"{label} ({name}) left out: no {path}. Add its rank file there (tiktoken downloads it "
                             f"from openaipublic.blob.core.windows.net/encodings/{name}.tiktoken) to include it.")
        except Exception as e:  # offline: tiktoken cannot fetch the rank file; or a bad rank file
            notes.append(f"{label} ({name}) left out: {type(e).__name__}. Pass --baselines-dir DIR with "
                         f"{name}.tiktoken in it (the rank file tiktoken downloads) to include it offline.")
    return loaded, notes


def compression_table(ours: tiktoken.Encoding, texts: dict[str, str],
                      baselines: dict[str, tiktoken.Encoding]) -> list[dict]:
    """One row per text: bytes, and tokens per encoding (encoded as ordinary text)."""
    rows = []
    for name, text in texts.items():
        row = {"text": name, "bytes": len(text.encode("utf-8")), "ours": len(exact_encode(ours, text))}
        for label, enc in baselines.items():
            row[label] = len(exact_encode(enc, text))
        rows.append(row)
    return rows


def to_markdown(rows: list[dict], baselines: list[str], notes: list[str]) -> str:
    """A table per baseline: its tokens and ours, bytes/token, and how many fewer tokens we need (%)."""
    out = ["# Tokenizer comparison", "",
           "Bytes per token (higher is better) and relative difference "
           "`(baseline tokens - ours) / baseline tokens` (positive: ours is better).", ""]
    if not baselines:
        out += ["| Text | Bytes | Ours tokens | Ours bytes/token |", "|---|---:|---:|---:|"]
        out += [f"| {r['text']} | {r['bytes']} | {r['ours']} | {r['bytes'] / r['ours']:.2f} |" for r in rows]
        out.append("")
    for label in baselines:
        out += [f"## vs {label}", "",
                f"| Text | Bytes | {label} tokens | {label} bytes/token | Ours tokens | Ours bytes/token | Relative diff |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            diff = 100 * (r[label] - r["ours"]) / r[label] if r[label] else 0.0
            out.append(f"| {r['text']} | {r['bytes']} | {r[label]} | {r['bytes'] / r[label]:.2f} | {r['ours']} | "
                       f"{r['bytes'] / r['ours']:.2f} | {diff:+.1f}% |")
        out.append("")
    out += [f"Note: {n}" for n in notes]
    return "\n".join(out) + "\n"

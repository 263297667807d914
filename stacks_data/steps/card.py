"""Write the dataset card, DIR/README.md: what the Hub page of the dataset shows.

YAML metadata (license, language, task categories, size, source datasets, tags, name), then what the
dataset is, the commands that made each step, its inputs, the tokenizer, every step's files and
counts, and how to download, verify and read it. Built only from the folder's configs and manifests
(no clock, no local paths), so the same folder always gives the same bytes. `upload` writes it and
uploads it with the files.

  stacks-data card data/fineweb_edu_32k_8_370
"""

import argparse
import json
import os
import re

import yaml

from stacks_data import __version__, flags
from stacks_data.errors import InputError
from stacks_data.dataset.binfile import TOKEN_DTYPES
from stacks_data.dataset.files import human_bytes, write_text
from stacks_data.dataset.manifest import CONFIG_FILE, find_manifests, read_config, read_manifest
from stacks_data.steps.pretrain.tokenizer_report import PLOT_FILE, REPORT_FILE

CARD_FILE = "README.md"
# the hub datasets the steps read, as their own cards declare them: repo -> (license, languages)
SOURCE_CARDS = {
    "karpathy/fineweb-edu-100b-shuffle": ("odc-by", ["en"]),  # FineWeb-Edu's license (HuggingFaceFW/fineweb-edu)
    "HuggingFaceTB/smol-smoltalk": ("apache-2.0", ["en"]),
    "cais/mmlu": ("mit", ["en"]),
    "openai/gsm8k": ("mit", ["en"]),
    "allenai/ai2_arc": ("cc-by-sa-4.0", ["en"]),
}
STEP_NAMES = {"core-eval": "the CORE eval tasks", "sft": "the SFT conversation mixture (tokens and loss mask)",
              "chat-eval": "the chat eval sets"}
SFT_SOURCES = {"SmolTalk": "HuggingFaceTB/smol-smoltalk", "MMLU": "cais/mmlu", "GSM8K": "openai/gsm8k"}
CHAT_EVAL_SOURCES = {"MMLU": "cais/mmlu", "ARC-Easy": "allenai/ai2_arc", "ARC-Challenge": "allenai/ai2_arc"}
STEP_TITLES = {"pretrain": "1. Pretraining shards and tokenizer", "core-eval": "2. CORE eval",
               "sft": "3. SFT conversation mixture", "chat-eval": "4. Chat eval"}
# the Hub's size categories, by number of examples
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
         (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_dir", metavar="DIR", help="the dataset folder")


def check_args(args: argparse.Namespace) -> None:
    flags.check_input_dir(args.dataset_dir, "DIR")


def run(settings: flags.Frozen) -> None:
    record = write_card(settings.dataset_dir)
    print(f"wrote {record.path} ({human_bytes(record.size)})")


def write_card(dataset_dir: str):
    """Write DIR/README.md from the folder's manifests and configs; returns its FileRecord."""
    return write_text(os.path.join(dataset_dir, CARD_FILE), card(dataset_dir))


# ------------------------------------------------------------------------------------ reading


def read_steps(dataset_dir: str) -> dict[str, tuple[dict, dict]]:
    """{step: (manifest, config)} of the steps finished in the folder, in pipeline order."""
    steps = {}
    for path in find_manifests(dataset_dir):
        manifest = read_manifest(path)
        # beside its manifest, where every step writes it (not where a stranger's manifest points)
        steps[manifest.get("step", "?")] = (manifest, read_config(os.path.join(os.path.dirname(path), CONFIG_FILE)))
    if "pretrain" not in steps:
        raise InputError("no step 1 (pretrain) manifest: the card describes a dataset that has a tokenizer",
                         dataset_dir, "run step 1 first, or pass the dataset folder")
    order = list(STEP_TITLES)
    return dict(sorted(steps.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def _text(dataset_dir: str, manifest: dict, name: str) -> str | None:
    """A file the manifest lists, as text (None when it does not list it)."""
    if name not in {f["path"] for f in manifest["files"]}:
        return None
    with open(os.path.join(dataset_dir, name), encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------------------------------ the card


def card(dataset_dir: str) -> str:
    steps = read_steps(dataset_dir)
    manifest, config = steps["pretrain"]
    source = config.get("source", {})
    name = config.get("dataset_name") or os.path.basename(os.path.abspath(dataset_dir))
    repos = [source.get("repo_id")] if source.get("repo_id") else []
    if "sft" in steps:
        repos += [SFT_SOURCES[s] for s in steps["sft"][1].get("train_source_counts", {}) if s in SFT_SOURCES]
    if "chat-eval" in steps:
        repos += [CHAT_EVAL_SOURCES[t["label"]] for t in steps["chat-eval"][1].get("tasks", [])
                  if t.get("label") in CHAT_EVAL_SOURCES]
    repos = list(dict.fromkeys(repos))
    license, languages = SOURCE_CARDS.get(source.get("repo_id"), ("unknown", []))
    documents = config.get("train_documents", 0) + config.get("val_documents", 0)
    meta = {
        "license": license,
        "language": languages,
        "task_categories": ["text-generation"],
        "size_categories": [next((label for limit, label in SIZES if documents < limit), "n>1T")],
        "source_datasets": repos,
        "tags": ["stacks-data", "pretokenized", "tokenizer", "nanochat"] + (["sft"] if "sft" in steps else []),
        "pretty_name": name,
    }
    out = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
           f"# {name}", "",
           f"Pre-tokenized data for training a small GPT from scratch (nanochat / modded-nanogpt style), made by "
           f"stacks-data {manifest.get('stacks_data_version', __version__)} from "
           f"`{source.get('repo_id', source.get('corpus', '?'))}`: a BPE tokenizer of {config['vocab_size']:,} tokens "
           f"trained on that corpus, and the corpus as `.bin` token shards a training script loads directly"
           + _with(steps) + ".", "",
           *_license_lines(source, repos, license), "",
           "## Contents", "",
           "| step | files | size | tokens | documents / examples |", "|---|---:|---:|---:|---:|"]
    for step, (m, c) in steps.items():
        files = m["files"]
        tokens = sum(c.get(f"{s}_tokens", 0) for s in ("train", "val"))
        docs = sum(c.get(f"{s}_documents", c.get(f"{s}_conversations", 0)) for s in ("train", "val"))
        if "tasks" in c:
            docs = sum(t.get("num_examples", 0) for t in c["tasks"])
        out.append(f"| {step} | {len(files)} | {human_bytes(sum(f['size'] for f in files))} | "
                   f"{tokens:,} | {docs:,} |" if tokens else
                   f"| {step} | {len(files)} | {human_bytes(sum(f['size'] for f in files))} | - | {docs:,} examples |")
    out += ["", "## How it was made", "",
            "Each step's command, from the flags its `config.json` records (flags that do not change the bytes, "
            "such as `--num-workers`, `--executor` or `--encoder`, are left out; local folders are shown by "
            "their flag, e.g. `PARQUET_DIR`):", ""]
    for step, (m, c) in steps.items():
        out += [f"```bash", command(step, c, name), "```", ""]
    out += tokenizer_section(dataset_dir, manifest, config)
    for step, (m, c) in steps.items():
        out += step_section(dataset_dir, step, m, c)
    out += usage_section(name, config)
    return "\n".join(out).rstrip() + "\n"


def _with(steps: dict) -> str:
    others = [STEP_NAMES[s] for s in steps if s in STEP_NAMES]
    if not others:
        return ""
    return ", with " + (" and ".join(others) if len(others) < 3 else ", ".join(others[:-1]) + " and " + others[-1])


def _license_lines(source: dict, repos: list[str], license: str) -> list[str]:
    lines = ["**License.** " + (f"`{license}`, the license of the source corpus `{source.get('repo_id')}`."
                                if license != "unknown" else
                                f"unknown: the source corpus `{source.get('repo_id')}` is not one whose license "
                                "stacks-data knows; check its card before use.")]
    others = [r for r in repos if r != source.get("repo_id")]
    if others:
        lines.append("The other sources keep their own licenses: " + ", ".join(
            f"`{r}` ({SOURCE_CARDS.get(r, ('unknown',))[0]})" for r in others) + ".")
    return lines


def command(step: str, c: dict, name: str) -> str:
    """The command line that made a step, from its config.json."""
    source = c.get("source", {})
    parts = [f"stacks-data {step}", f"--dataset-name {name}"]
    if step == "pretrain":
        parts += [f"--corpus {source.get('corpus')}", f"--vocab-size {c.get('vocab_size')}",
                  f"--num-shards {source.get('num_shards')}",
                  f"--tok-train-shards {len(source.get('tokenizer_train_files', [])) + 1}",
                  f"--shard-size {c.get('shard_size')}", f"--max-chars {source.get('max_chars')}",
                  f"--doc-cap {source.get('doc_cap')}", f"--text-column {source.get('text_column')}"]
        if c.get("bin_subdir"):
            parts.append(f"--bin-subdir {c['bin_subdir']}")
        parts.append("--parquet-dir PARQUET_DIR")
    elif step == "core-eval":
        parts.append(f"--max-seq-len {c.get('max_seq_len')}")
        bundle = source.get("eval_bundle", "")
        parts.append(f"--eval-bundle-url {bundle}" if bundle.startswith(("http://", "https://"))
                     else "--eval-bundle EVAL_BUNDLE_DIR")
    elif step in ("sft", "chat-eval"):
        parts.append(f"--max-seq-len {c.get('max_seq_len')}")
        if step == "sft":
            counts = c.get("train_source_counts", {})
            parts += [f"--shard-size {c.get('shard_size')}",
                      f"--simple-spelling-size {counts.get('SimpleSpelling', 0)}",
                      f"--spelling-bee-size {counts.get('SpellingBee', 0)}"]
            if any(c.get(f"{s}_invalid_counts") for s in ("train", "val")):
                parts.append("--skip-invalid")
        if "hf_mirror" in source:
            parts.append("--hf-mirror HF_MIRROR_DIR")
    return " \\\n    ".join(parts)


def tokenizer_section(dataset_dir: str, manifest: dict, config: dict) -> list[str]:
    training = json.loads(_text(dataset_dir, manifest, "tokenizer/training.json") or "{}")
    source = config.get("source", {})
    out = ["## Inputs", "",
           f"- Corpus: `{source.get('repo_id')}` (`--corpus {source.get('corpus')}`), column "
           f"`{source.get('text_column')}`, from `{_public(source.get('base_url', ''))}`.",
           f"- Validation: {', '.join(f'`{n}`' for n in source.get('val_files', []))}; train: "
           f"{_span(source.get('train_files', []))}."]
    shards = training.get("train_shards", [])
    if shards:
        out.append("- Tokenizer training files, with their size and parquet footer hash (`size:md5`): " +
                   ", ".join(f"`{n}` `{h}`" for n, h in shards) + ".")
    out += ["", "## Tokenizer", "",
            "| | |", "|---|---|",
            f"| vocab size | {config['vocab_size']:,} (special tokens: "
            + ", ".join(f"`{k}` {v}" for k, v in config.get("special_tokens", {}).items()) + ") |",
            f"| `<|bos|>` id | {config.get('bos_id')} |",
            f"| fingerprint | `{config.get('tokenizer_fingerprint')}` (sha256 of pattern, ranks and special tokens) |",
            f"| `tokenizer/tokenizer.pkl` sha256 | `{config.get('tokenizer_sha256')}` |",
            f"| trained on | {training.get('docs', 0):,} documents, {training.get('chars', 0):,} characters, each cut "
            f"to {training.get('doc_cap', 0):,} |", ""]
    report = _text(dataset_dir, manifest, REPORT_FILE)
    if report:
        lines = report.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("| sample |")), None)
        if start is not None:
            end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
            out += ["Compression against GPT-2 / GPT-4 (from `tokenizer_comparison.md`; bytes per token, "
                    "higher is better):", "", *lines[start:end], ""]
    if PLOT_FILE in {f["path"] for f in manifest["files"]}:
        out += [f"![bytes per token per sample set, and token lengths across the vocab]({PLOT_FILE})", ""]
    return out


def step_section(dataset_dir: str, step: str, manifest: dict, c: dict) -> list[str]:
    out = [f"## {STEP_TITLES.get(step, step)}", "", "| files | count | size |", "|---|---:|---:|"]
    groups: dict[str, list[int]] = {}
    for f in manifest["files"]:
        groups.setdefault(re.sub(r"\d{6}", "??????", f["path"]), []).append(f["size"])
    for pattern, sizes in groups.items():
        out.append(f"| `{pattern}` | {len(sizes)} | {human_bytes(sum(sizes))} |")
    out.append("")
    if step in ("pretrain", "sft"):
        unit = "documents" if step == "pretrain" else "conversations"
        out += [f"| split | shards | tokens | {unit} |", "|---|---:|---:|---:|"]
        for split in ("train", "val"):
            out.append(f"| {split} | {c.get(f'{split}_shards', 0):,} | {c.get(f'{split}_tokens', 0):,} | "
                       f"{c.get(f'{split}_{unit}', 0):,} |")
        out.append("")
    if step == "pretrain":
        out.append(f"Shards of exactly {c.get('shard_size', 0):,} tokens (the last val shard shorter); "
                   f"{c.get('train_dropped_tokens', 0):,} tokens of the last, partial train shard were dropped.")
        out.append("")
    if step in ("pretrain", "sft"):
        out += _document_statistics(c)
    if step == "sft":
        counts = c.get("train_source_counts", {})
        out += [f"Truncated to {c.get('max_seq_len')} tokens: {c.get('train_truncated', 0):,} train and "
                f"{c.get('val_truncated', 0):,} val conversations. Train mixture: "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ". Each token shard has a `_mask.bin` "
                "twin (1 where the loss applies).", ""]
    elif "tasks" in c:
        keys = [k for k in ("task_type", "num_examples", "num_sequences", "random_baseline", "num_skipped")
                if any(k in t for t in c["tasks"])]
        out += ["| task | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        out += ["| " + " | ".join([str(t.get("label"))] + [_cell(t.get(k, "-")) for k in keys]) + " |"
                for t in c["tasks"]]
        out.append("")
    return out


def usage_section(name: str, config: dict) -> list[str]:
    folder = f"{config['bin_subdir']}/" if config.get("bin_subdir") else ""
    token_dtype = config.get("token_dtype") if config.get("token_dtype") in TOKEN_DTYPES else "uint16"
    magic, version, dtype = TOKEN_DTYPES[token_dtype]
    return [
        "## Download, verify, read", "",
        "```bash",
        f"python data/download_dataset.py --hf-user USER --dataset-name {name}   # or: stacks-data download ...",
        f"stacks-data verify data/{name}                 # every file against the manifests (size, sha256)",
        f"stacks-data inspect data/{name} --doc 0        # the first val document, decoded",
        "```", "",
        f"A `.bin` shard is a header of 256 little-endian int32 (`[0]` = {magic} magic, `[1]` = {version} version, "
        f"`[2]` = token count), then the tokens as {token_dtype}; every document starts with `<|bos|>`:", "",
        "```python",
        "import numpy as np",
        f'path = "data/{name}/{folder}val_000000.bin"',
        'header = np.fromfile(path, dtype="<i4", count=256)',
        f"assert header[0] == {magic} and header[1] == {version}",
        f'tokens = np.memmap(path, dtype="{dtype.str}", mode="r", offset=1024, shape=(int(header[2]),))',
        f"starts = np.flatnonzero(tokens == {config.get('bos_id')})  # <|bos|>: where each document starts",
        "print(len(tokens), 'tokens,', len(starts), 'documents; the first:', tokens[starts[0]:starts[1]][:20])",
        "```", "",
        "`tokenizer/tokenizer.pkl` is a pickled `tiktoken.Encoding`; stacks-data loads it with a restricted "
        "unpickler (`RustBPETokenizer.from_directory`) and checks its sha256 against `config.json`.", "",
    ]


def _public(url: str) -> str:
    return url if url.startswith(("http://", "https://")) else "a local folder"


def _span(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(f"`{n}`" for n in names) or "-"
    return f"`{names[0]}` ... `{names[-1]}` ({len(names)} files)"


CARD_WINDOWS = ("1024", "2048", "4096", "8192")  # the window sizes the card shows (config.json has more)


def _document_statistics(c: dict) -> list[str]:
    """The `documents` statistics of config.json, a row per split (none for a folder made before them)."""
    documents = c.get("documents")
    if not isinstance(documents, dict):
        return []
    windows = " / ".join(f"{int(t):,}" for t in CARD_WINDOWS)
    out = ["Document statistics (`documents` in `config.json`; lengths in tokens, `<|bos|>` included):", "",
           f"| split's documents | count | length min / p50 / p90 / p99 / max | most documents in a window of "
           f"{windows} tokens (any start / at a BOS) |", "|---|---:|---:|---:|"]
    for split, d in documents.items():
        if not isinstance(d, dict):
            continue
        length = " / ".join(_cell(d.get("length", {}).get(k)) for k in ("min", "p50", "p90", "p99", "max"))
        window = " / ".join(f"{_cell(d.get('max_docs_in_window', {}).get(t))} "
                            f"({_cell(d.get('max_docs_in_bos_window', {}).get(t))})" for t in CARD_WINDOWS)
        out.append(f"| `{split}` | {_cell(d.get('count'))} | {length} | {window} |")
    unsupervised = {split: d["unsupervised"] for split, d in documents.items()
                    if isinstance(d, dict) and isinstance(d.get("unsupervised"), dict)}
    if unsupervised:
        out += ["", "Conversations with no supervised token after truncation: " + ", ".join(
            f"{split} {_cell(u.get('count'))} ({'left out' if u.get('dropped') else 'in the shards'})"
            for split, u in unsupervised.items()) + "."]
    return out + [""]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)

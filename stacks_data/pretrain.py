"""
Train the BPE tokenizer on FineWeb-Edu and pre-tokenize the corpus into .bin shards.

Steps, each resumable: (1) download the tokenizer-training shards and train the tokenizer (reused if
already there), (2) check it and write token_bytes.pt, (3) compare it with GPT-2/GPT-4, (4) download
all shards and tokenize them into val_*.bin / train_*.bin, (5) write config.json, (6) upload.
"""

import argparse
import hashlib
import json
import os
import time

import torch

from stacks_data import compare, fineweb
from stacks_data.files import torch_save, write_json, write_text
from stacks_data.flags import (add_output_flags, add_workers_flag, check_upload_flags, dataset_dir, hub_repo_id,
                               tokenizer_dir)
from stacks_data.hub import upload_folder
from stacks_data.parquet import iter_texts
from stacks_data.pretokenize import STATE_FILE, pretokenize
from stacks_data.tokenizer import SPECIAL_TOKENS, RustBPETokenizer, capped_texts, check_vocab_size

TRAINING_FILE = "training.json"  # how the tokenizer in tokenizer/ was trained


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab-size", type=int, default=32768, help="vocab size, special tokens included")
    parser.add_argument("--num-shards", type=int, default=370, help="parquet shards to pre-tokenize (last = val)")
    parser.add_argument("--tok-train-shards", type=int, default=8,
                        help="shards 0..N-1 for the tokenizer: trains on all but the last (held out)")
    parser.add_argument("--max-chars", type=int, default=2_000_000_000, help="characters fed to tokenizer training")
    parser.add_argument("--doc-cap", type=int, default=10_000, help="characters kept per training document")
    parser.add_argument("--shard-size", type=int, default=100_000_000, help="tokens per .bin shard")
    parser.add_argument("--keep-partial", action="store_true", help="also write the last, incomplete train shard")
    parser.add_argument("--bin-subdir", default=None, metavar="NAME",
                        help="write .bin shards to <out>/<dataset-name>/NAME/ (e.g. fineweb_edu)")
    parser.add_argument("--base-url", default=fineweb.BASE_URL, help="where parquet shards are downloaded from")
    parser.add_argument("--parquet-dir", default=None,
                        help="local shard folder (default $NANOCHAT_BASE_DIR/base_data or ~/.cache/nanochat/base_data)")
    add_workers_flag(parser, default=4)
    add_output_flags(parser)


def run(args: argparse.Namespace) -> None:
    check_upload_flags(args)
    check_vocab_size(args.vocab_size)
    if args.tok_train_shards < 2 or args.num_shards < 2:
        raise SystemExit("error: --tok-train-shards and --num-shards must be at least 2 (one is held out / val)")
    started = time.time()
    out = dataset_dir(args)
    parquet_dir = args.parquet_dir or fineweb.default_parquet_dir()
    os.makedirs(out, exist_ok=True)

    tok_paths = fineweb.ensure_shards(list(range(args.tok_train_shards)), parquet_dir, args.base_url)
    tok = train_or_load_tokenizer(tokenizer_dir(args), tok_paths[:-1], args)
    # real documents for the checks: the first 100 of a training shard and of the held-out shard
    samples = {name: next(iter_texts(path))[1][:100] for name, path in
               (("fwe-train", tok_paths[0]), ("fwe-val", tok_paths[-1]))}
    check_round_trip(tok, [text for docs in samples.values() for text in docs])
    write_token_bytes(tok, os.path.join(tokenizer_dir(args), "token_bytes.pt"))
    report = compare_with_baselines(tok, samples)
    write_text(os.path.join(out, "tokenizer_comparison.md"), report)

    paths = fineweb.ensure_shards(list(range(args.num_shards)), parquet_dir, args.base_url)
    bin_dir = os.path.join(out, args.bin_subdir) if args.bin_subdir else out
    stats = pretokenize(tok, tokenizer_dir(args), paths, bin_dir, args.shard_size,
                        args.num_workers, args.keep_partial, state_path=os.path.join(out, STATE_FILE))
    write_json(os.path.join(out, "config.json"), make_config(tok, args, stats))

    elapsed = time.time() - started
    splits = ", ".join(f"{s}: {stats[s]['shards']} shards, {stats[s]['tokens']:,} tokens" for s in ("val", "train"))
    print(f"done in {elapsed:.0f}s: {out} ({splits})")
    if not args.skip_upload:
        # this step's files only: the folder also holds the other steps' outputs, which they upload
        shards = f"{args.bin_subdir}/" if args.bin_subdir else ""
        upload_folder(out, hub_repo_id(args), allow_patterns=[
            "config.json", "tokenizer_comparison.md", "tokenizer/*", f"{shards}train_*.bin", f"{shards}val_*.bin"])


# ------------------------------------------------------------------------------------ 1. training

def training_texts(paths: list[str], doc_cap: int, max_chars: int):
    """The texts the tokenizer trains on: documents of `paths` in order, capped."""
    def documents():
        for path in paths:
            for _, texts in iter_texts(path):
                yield from texts
    return capped_texts(documents(), doc_cap, max_chars)


def train_or_load_tokenizer(tokenizer_dir: str, paths: list[str], args) -> RustBPETokenizer:
    wanted = {"vocab_size": args.vocab_size, "train_shards": [os.path.basename(p) for p in paths],
              "max_chars": args.max_chars, "doc_cap": args.doc_cap}
    training_path = os.path.join(tokenizer_dir, TRAINING_FILE)
    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.pkl")):
        tok = RustBPETokenizer.from_directory(tokenizer_dir)
        trained = json.load(open(training_path)) if os.path.exists(training_path) else {}
        differing = {k: (trained.get(k), v) for k, v in wanted.items() if k in trained and trained[k] != v}
        if tok.get_vocab_size() != args.vocab_size or differing:
            raise SystemExit(f"error: the tokenizer in {tokenizer_dir} was trained differently ({differing or 'vocab size'}"
                             f" {tok.get_vocab_size()}): remove that folder to retrain, or pick another --dataset-name")
        print(f"reusing tokenizer {tokenizer_dir} (vocab {tok.get_vocab_size():,})")
        return tok

    counted = {"docs": 0, "chars": 0}

    def counting(texts):
        for text in texts:
            counted["docs"] += 1
            counted["chars"] += len(text)
            yield text

    print(f"training tokenizer: vocab {args.vocab_size:,} on {len(paths)} shards, up to {args.max_chars:,} chars")
    t0 = time.time()
    tok = RustBPETokenizer.train_from_iterator(counting(training_texts(paths, args.doc_cap, args.max_chars)),
                                               args.vocab_size)
    seconds = time.time() - t0
    # the pickle is renamed into place last: a crash before it leaves nothing to reuse
    os.makedirs(tokenizer_dir, exist_ok=True)
    write_json(training_path, {**wanted, "docs": counted["docs"], "chars": counted["chars"],
                               "seconds": round(seconds, 1), "fingerprint": tok.fingerprint()})
    tok.save(tokenizer_dir)
    print(f"trained in {seconds:.1f}s on {counted['docs']:,} docs, {counted['chars']:,} chars "
          f"({counted['chars'] / max(seconds, 1e-9) / 1e6:.1f} M chars/s)")
    return tok


# ---------------------------------------------------------------------------- 2. checks, 3. compare

def check_round_trip(tok: RustBPETokenizer, documents: list[str]) -> None:
    """decode(encode(x)) == x on the sample texts and on real documents."""
    for text in list(compare.SAMPLE_TEXTS.values()) + documents:
        if tok.decode(tok.encode(text)) != text:
            raise RuntimeError(f"tokenizer round trip failed on: {text[:80]!r}")


def write_token_bytes(tok: RustBPETokenizer, path: str) -> None:
    torch_save(torch.tensor(tok.token_byte_lengths(), dtype=torch.int32), path)


def compare_with_baselines(tok: RustBPETokenizer, samples: dict[str, list[str]]) -> str:
    """The comparison on the sample texts and on each list of real documents, joined."""
    texts = {**compare.SAMPLE_TEXTS, **{name: "\n".join(docs) for name, docs in samples.items()}}
    baselines, notes = compare.load_baselines()
    rows = compare.compression_table(tok.enc, texts, baselines)
    report = compare.to_markdown(rows, list(baselines), notes)
    print(report)
    return report


# ------------------------------------------------------------------------------------ 5. config

def make_config(tok: RustBPETokenizer, args, stats: dict) -> dict:
    with open(os.path.join(tokenizer_dir(args), "tokenizer.pkl"), "rb") as f:
        pkl_sha256 = hashlib.sha256(f.read()).hexdigest()
    config = {
        "vocab_size": tok.get_vocab_size(),
        "bos_id": tok.get_bos_token_id(),
        "special_tokens": {name: tok.encode_special(name) for name in SPECIAL_TOKENS},
        "dataset_name": args.dataset_name,
        "shard_size": args.shard_size,
        "bin_subdir": args.bin_subdir or "",
        "tokenizer_sha256": pkl_sha256,
        "tokenizer_fingerprint": tok.fingerprint(),
        "source": {"base_url": args.base_url, "num_shards": args.num_shards,
                   "val_files": [fineweb.shard_name(args.num_shards - 1)],
                   "train_files": f"{fineweb.shard_name(0)} .. {fineweb.shard_name(args.num_shards - 2)}",
                   "tokenizer_train_files": [fineweb.shard_name(i) for i in range(args.tok_train_shards - 1)],
                   "max_chars": args.max_chars, "doc_cap": args.doc_cap},
    }
    for split in ("train", "val"):
        s = stats[split]
        config.update({f"{split}_shards": s["shards"], f"{split}_tokens": s["tokens"],
                       f"{split}_documents": s["documents"], f"{split}_dropped_tokens": s["dropped_tokens"]})
    return config

"""
Train the BPE tokenizer on a pretraining corpus and pre-tokenize it into .bin shards.

Steps, each resumable:
  1. download the tokenizer-training shards; train the tokenizer (reused when already trained the same way)
  2. check it (round trip) and write token_bytes.pt
  3. report on it, next to GPT-2 / GPT-4: tokenizer_comparison.md and tokenizer_report.png
  4. download every shard and tokenize it into val_*.bin / train_*.bin (val = the last shard)
  5. write config.json, then manifest.json (last: the step's commit mark, as for every step)
  6. upload, with --hf-user

A rerun with the same flags resumes (or, every file checked, says the dataset is complete), and makes
again what it finds damaged or missing; a rerun with flags that would replace what is in the folder
stops and says what differs, unless --overwrite.
"""

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass

from stacks_data import flags
from stacks_data.remote import hub
from stacks_data.steps.pretrain import tokenizer_report
from stacks_data.sources.corpus import (PRESETS, Corpus, Shards, ShardStream, default_parquet_dir, get_corpus,
                                        parquet_dir_lock, shard_names)
from stacks_data.encoder import checked_encoder_name
from stacks_data.interrupts import import_torch
from stacks_data.errors import FlagError
from stacks_data.dataset.files import FileRecord, hash_file, human_bytes, read_json, torch_save, write_json
from stacks_data.dataset.manifest import CONFIG_FILE, MANIFEST_FILE, write_manifest
from stacks_data.dataset import layout
from stacks_data.dataset.folder import DatasetLock, check_output_folders
from stacks_data.sources.parquet import file_identity, iter_texts
from stacks_data.executors import Executor, in_a_worker
from stacks_data.progress import bar, say
from stacks_data.steps.pretrain.pretokenize import pretokenize, tokenize_row_group, worker_setup
from stacks_data.steps.pretrain.resume import (STATE_FILE, TRAINING_FILE, ResumeState, checked_stream, claim_folder,
                                              claim_tokenizer_inputs, mark_incomplete, reading_order)
from stacks_data.dataset.binfile import vocab_limit
from stacks_data.tokenizer import (MAX_VOCAB, MIN_VOCAB, SPECIAL_TOKENS, TOKENIZER_FILE, RustBPETokenizer,
                                   capped_texts)

STEP = layout.PRETRAIN
MAX_DOC_CAP = 100_000
SHARD_BYTES_PER_PARQUET_BYTE = 1.1  # FineWeb-Edu: ~100 MB of zstd parquet -> ~110 MB of uint16 tokens
TYPICAL_SHARD_BYTES = 100e6  # a FineWeb-Edu / ClimbMix shard, when none is on disk to measure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", default="fineweb-edu",
                        help=f"{' | '.join(PRESETS)} | hf:OWNER/NAME (any parquet dataset on the hub)")
    parser.add_argument("--files", default=None, metavar="PATTERN",
                        help="hf: corpora: the repo's files to use, in name order, e.g. 'data/*.parquet' "
                             "(default: every *.parquet)")
    parser.add_argument("--text-column", default="text", help="the column holding one document per row")
    parser.add_argument("--vocab-size", type=int, default=32768, help="vocab size, special tokens included")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="parquet shards to pre-tokenize, the last one is val (default: 370 for "
                             "fineweb-edu, 170 for climbmix, every file for hf:)")
    parser.add_argument("--tok-train-shards", type=int, default=8,
                        help="shards 0..N-1 for the tokenizer: trains on all but the last (held out)")
    parser.add_argument("--max-chars", type=int, default=2_000_000_000, help="characters fed to tokenizer training")
    parser.add_argument("--doc-cap", type=int, default=10_000, help="characters kept per training document")
    parser.add_argument("--shard-size", type=int, default=100_000_000, help="tokens per .bin shard")
    parser.add_argument("--keep-partial", action="store_true", help="also write the last, incomplete train shard")
    flags.add_window_flag(parser)
    flags.add_token_dtype_flag(parser)
    parser.add_argument("--bin-subdir", default=None, metavar="NAME",
                        help="write .bin shards to <out>/<dataset-name>/NAME/ (default: climbmix/ for "
                             "climbmix, else the dataset folder itself)")
    parser.add_argument("--base-url", default=None,
                        help="where parquet shards are downloaded from (default: the corpus's hub repo)")
    parser.add_argument("--parquet-dir", default=None,
                        help="local shard folder; must exist (default: a cache folder per corpus under "
                             "$NANOCHAT_BASE_DIR or ~/.cache/nanochat, e.g. base_data/)")
    parser.add_argument("--baselines-dir", default=None, metavar="DIR",
                        help="offline tokenizer comparison: DIR/gpt2.tiktoken and DIR/cl100k_base.tiktoken "
                             "(tiktoken rank files; default: tiktoken downloads them)")
    parser.add_argument("--max-cached-shards", type=int, default=None, metavar="N",
                        help="keep at most N of the run's parquet shards on disk, deleting each once tokenized "
                             "(default: keep them all, in --parquet-dir)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a tokenizer and shards made with other flags (default: refuse)")
    flags.add_workers_flag(parser)
    flags.add_encoder_flag(parser)
    flags.add_output_flags(parser, default_name=None, name_help=(
        " (default: <corpus>_<vocab/1024>k_<tok-train-shards>_<num-shards>, e.g. fineweb_edu_32k_8_370)"))


def check_args(args: argparse.Namespace) -> None:
    corpus = get_corpus(args.corpus)
    if args.num_shards is None:
        args.num_shards = corpus.default_num_shards
    if args.dataset_name is None:
        args.dataset_name = corpus.default_dataset_name(args.vocab_size, args.tok_train_shards, args.num_shards)
    flags.check_common(args)
    if args.vocab_size <= MAX_VOCAB:  # a vocab uint32 holds: an error names --token-dtype if uint16 does not
        flags.check_token_dtype(args, args.vocab_size, "--vocab-size")
    flags.check_at_least(args, "--vocab-size", MIN_VOCAB, vocab_limit(args.token_dtype))
    if args.num_shards is not None:
        flags.check_at_least(args, "--num-shards", 2, corpus.num_available)
        flags.check_at_least(args, "--tok-train-shards", 2, args.num_shards)
    else:
        flags.check_at_least(args, "--tok-train-shards", 2)
    flags.check_at_least(args, "--max-chars", 1)
    # rustbpe's regex engine overflows (a Rust panic) on ~1M-character whitespace runs: a cap keeps
    # every training document far below that, whatever the corpus holds
    flags.check_at_least(args, "--doc-cap", 1, MAX_DOC_CAP)
    flags.check_at_least(args, "--shard-size", 1, 2**31 - 1)  # the header's count is an int32
    if args.files is not None and corpus.num_available is not None:
        raise FlagError(f"--files selects the files of hf: corpora, not of {corpus.name}", "--files",
                        "drop it, or pass --corpus hf:OWNER/NAME")
    args.files = args.files or "*.parquet"
    if args.max_cached_shards is not None:  # the tokenizer trains on its shards all at once
        flags.check_at_least(args, "--max-cached-shards", max(2, args.tok_train_shards))
    if args.parquet_dir is not None:
        flags.check_input_dir(args.parquet_dir, "--parquet-dir")
    if args.baselines_dir is not None:
        flags.check_input_dir(args.baselines_dir, "--baselines-dir")
    if args.base_url is not None and not args.base_url.startswith(("http://", "https://")):
        raise FlagError(f"{args.base_url!r} is not an http(s) URL", "--base-url", "pass a URL")
    if args.bin_subdir is not None and (os.path.isabs(args.bin_subdir) or ".." in args.bin_subdir.split("/")
                                        or args.bin_subdir.split("/")[0] in layout.RESERVED_FOLDERS
                                        or args.bin_subdir.startswith(".")):
        raise FlagError(f"{args.bin_subdir!r} is not a folder name of its own inside the dataset folder "
                        f"({', '.join(layout.RESERVED_FOLDERS)} belong to other outputs)", "--bin-subdir",
                        "pass another plain name, e.g. fineweb_edu")
    check_output_folders(os.path.join(flags.dataset_dir(args), args.bin_subdir or corpus.bin_subdir))
    return Settings(
        corpus=args.corpus, files=args.files, text_column=args.text_column, vocab_size=args.vocab_size,
        num_shards=args.num_shards, tok_train_shards=args.tok_train_shards, max_chars=args.max_chars,
        doc_cap=args.doc_cap, shard_size=args.shard_size, keep_partial=args.keep_partial,
        bin_subdir=args.bin_subdir, base_url=args.base_url, parquet_dir=args.parquet_dir,
        baselines_dir=args.baselines_dir, max_cached_shards=args.max_cached_shards, overwrite=args.overwrite,
        encoder=args.encoder, windows=flags.windows(args), token_dtype=args.token_dtype, dataset_name=args.dataset_name, out=flags.dataset_dir(args),
        tok_dir=flags.tokenizer_dir(args), executor=flags.executor(args),
        upload_to=None if args.skip_upload else flags.hub_repo_id(args))


@dataclass(frozen=True)
class Settings:
    """The run's flags, checked (check_args builds it once; nothing below the command line sees `args`)."""
    corpus: str
    files: str
    text_column: str
    vocab_size: int
    num_shards: int
    tok_train_shards: int
    max_chars: int
    doc_cap: int
    shard_size: int
    keep_partial: bool
    bin_subdir: str | None  # None: the corpus's
    base_url: str | None  # None: the corpus's
    parquet_dir: str | None  # None: the corpus's cache folder (and shards may be downloaded)
    baselines_dir: str | None
    max_cached_shards: int | None
    overwrite: bool
    encoder: str  # as asked for: the tokenizer may need another (checked_encoder_name)
    windows: tuple[int, ...]  # the window sizes of the document statistics
    token_dtype: str  # the shards' format: "uint16" or "uint32" (binfile.TOKEN_DTYPES)
    dataset_name: str
    out: str  # the dataset folder
    tok_dir: str
    executor: Executor
    upload_to: str | None  # the hub repo, with --hf-user


@dataclass(frozen=True)
class Plan:
    """What this run works on, found before anything in the dataset folder changes."""
    corpus: Corpus
    out: str
    shards: Shards
    bin_subdir: str
    bin_dir: str
    tok_dir: str
    tok_paths: list[str]  # the tokenizer's shards: it trains on all but the last (held out)
    training: dict
    progress: ResumeState  # what is done (it changes as the run goes; the plan does not)


def run(settings: Settings) -> None:
    started = time.time()
    corpus = get_corpus(settings.corpus)
    parquet_dir = settings.parquet_dir or default_parquet_dir(corpus)
    deleting = settings.max_cached_shards is not None  # shards in the parquet folder
    with parquet_dir_lock(parquet_dir, deleting), DatasetLock(settings.out, STEP.name):
        plan = make_plan(settings, corpus, parquet_dir)
        if claim(plan, settings.overwrite):
            print(f"{plan.out} is complete (same flags and inputs): nothing to do")
        else:
            plan = fetch_tokenizer_shards(plan, settings)
            build(plan, settings)
            print(f"done in {time.time() - started:.0f}s: {plan.out}")
        if settings.upload_to:
            hub.upload_dataset(plan.out, settings.upload_to, [os.path.join(plan.out, MANIFEST_FILE)])


def make_plan(settings: Settings, corpus: Corpus, parquet_dir: str) -> Plan:
    """The run's shards and settings (every local shard checked; nothing downloaded yet: a complete
    dataset is recognized offline)."""
    out = settings.out
    names = shard_names(corpus, settings.num_shards, settings.files, parquet_dir, local_only=settings.parquet_dir is not None)
    if settings.tok_train_shards > len(names):
        raise FlagError(f"must be at most the {len(names)} shards of the run", "--tok-train-shards",
                        f"pass at most {len(names)}")
    shards = Shards(names, parquet_dir, settings.base_url or corpus.default_base_url(), settings.text_column,
                    capped=settings.max_cached_shards is not None)
    bin_subdir = corpus.bin_subdir if settings.bin_subdir is None else settings.bin_subdir
    shards.check_local()
    warn_if_short_of_disk(shards, out, settings.max_cached_shards)
    tok_paths = shards.paths(names[:settings.tok_train_shards])
    training = training_settings(settings, tok_paths[:-1])
    # the shards' key: the tokenizer's settings, not its shards' content (the fingerprint covers that)
    tokenizer = {**training, "train_shards": [name for name, _ in training["train_shards"]]}
    key = {"corpus": corpus.name, "files": names, "text_column": settings.text_column, "shard_size": settings.shard_size,
           "keep_partial": settings.keep_partial, "bin_subdir": bin_subdir, "tokenizer": tokenizer}
    return Plan(corpus, out, shards, bin_subdir, os.path.join(out, bin_subdir) if bin_subdir else out,
                settings.tok_dir, tok_paths, training, ResumeState(os.path.join(out, STATE_FILE), key))


def warn_if_short_of_disk(shards: Shards, out: str, max_cached: int | None) -> None:
    """Warn (estimates are rough) when the disks may not hold the shards to download and the tokens."""
    sizes = [os.path.getsize(p) for p in shards.paths() if os.path.exists(p)]
    typical = sum(sizes) / len(sizes) if sizes else TYPICAL_SHARD_BYTES
    missing = len(shards.names) - len(sizes)
    flags.warn_if_short_of_disk(out, int(SHARD_BYTES_PER_PARQUET_BYTE * (sum(sizes) + typical * missing)),
                                f"the tokens of {len(shards.names)} shards")
    flags.warn_if_short_of_disk(shards.parquet_dir, int(typical * min(missing, max_cached or missing)),
                                f"downloading {missing} shards" + (f", {max_cached} at a time" if max_cached else ""))


def fetch_tokenizer_shards(plan: Plan, settings: Settings) -> Plan:
    """Download the tokenizer's shards, then check the folder again with their content known: the plan
    with the tokenizer's training settings complete."""
    plan.shards.fetch_all(plan.shards.names[:settings.tok_train_shards])
    plan = dataclasses.replace(plan, training=training_settings(settings, plan.tok_paths[:-1]))
    claim_tokenizer_inputs(plan.progress, plan.out, plan.tok_dir, plan.training, plan.bin_dir,
                           settings.overwrite).apply()
    return plan


def claim(plan: Plan, overwrite: bool) -> bool:
    """The folder held against this plan (resume.claim_folder), and what must change changed once the run
    knows it can go on (the shards it must download can be: found out now, not after the folder lost
    finished work or the tokenizer trained): True when the folder already holds this exact run, complete."""
    found = claim_folder(plan.progress, plan.out, plan.tok_dir, plan.bin_dir, plan.training, plan.shards.paths(),
                         overwrite)
    if not found.complete:
        plan.shards.check_downloadable()
        found.apply()
    return found.complete


def build(plan: Plan, settings: Settings) -> None:
    """Steps 1-5 of the module docstring, the shards downloading all along."""
    mark_incomplete(plan.out)
    order = reading_order(plan.progress, plan.shards.paths())
    stream = ShardStream(plan.shards, order, settings.max_cached_shards, pinned=plan.tok_paths)
    try:
        tok, records = train_or_load_tokenizer(plan.tok_dir, plan.tok_paths[:-1], plan.training, settings)
        if plan.progress.fingerprint(tok.fingerprint()) != tok.fingerprint():
            print("the tokenizer differs from the one the shards were made with: redoing every shard")
            plan.progress.start_over(plan.bin_dir)
        plan.progress.made_with(tok.fingerprint())
        plan.progress.tokenizer_made(records)
        encoder = checked_encoder_name(tok.spec, settings.encoder)
        tok.use_encoder(encoder)
        with workers(settings.executor, plan, encoder) as executor:  # starting while the report is made
            records += check_and_report(tok, plan, settings)

            stream.unpin()  # the tokenizer's shards are read: with a cap, they may go (and make room)
            stream = checked_stream(plan.progress, plan.shards, plan.bin_dir, stream, settings.max_cached_shards)
            stats, shard_records = pretokenize(plan.tok_dir, plan.shards.paths(), plan.bin_dir, settings.shard_size,
                                               executor, settings.keep_partial, settings.text_column, encoder,
                                               plan.progress, stream, tok.get_bos_token_id(), settings.windows,
                                               settings.token_dtype)
    finally:
        stream.close()
    config = make_config(tok, settings, plan, stats)
    config_record = write_json(os.path.join(plan.out, CONFIG_FILE), config)
    # the manifest last: a folder with one is complete (mark_incomplete removes it first)
    write_manifest(plan.out, plan.out, STEP.name, records + [FileRecord(*r) for r in shard_records] + [config_record])
    for path, why in plan.progress.damaged.items():
        print(f"repaired: {path} ({why})")
    for split in ("val", "train"):
        say(f"{split}: {stats[split]['shards']} shards, {stats[split]['tokens']:,} tokens "
            f"({human_bytes(stats[split]['bytes'])})")
    if not stats["train"]["shards"]:  # a complete folder, but nothing for a training script to read
        print(f"warning: no train shards: the train split's {stats['train']['dropped_tokens']:,} tokens are fewer "
              f"than --shard-size {settings.shard_size:,}: pass a smaller --shard-size, more --num-shards, or "
              f"--keep-partial", file=sys.stderr)


def workers(executor: Executor, plan: Plan, encoder: str):
    """The executor, with its workers for the shards starting now when there are shards to make (or
    repair): their start-up (the tokenizer loaded and self-checked in each) then overlaps the report."""
    if plan.progress.complete() and not any(plan.progress.repairs.values()):
        return contextlib.nullcontext(executor)
    setup = worker_setup(plan.tok_dir, encoder)
    return executor.started(tokenize_row_group, setup)


def check_and_report(tok: RustBPETokenizer, plan: Plan, settings: Settings) -> list[FileRecord]:
    """Steps 2 and 3: the round trip, token_bytes.pt, the tokenizer report."""
    estimate = held_out_estimate(tok, plan.tok_paths[-1], settings.text_column, len(plan.shards.names))
    # real documents: the first 100 of a training shard and of the held-out shard
    samples = {name: next(iter_texts(path, settings.text_column))[1][:100] for name, path in
               (("training shard", plan.tok_paths[0]), ("held-out shard", plan.tok_paths[-1]))}
    trained = read_json(os.path.join(plan.tok_dir, TRAINING_FILE), dict) or {}
    check_round_trip(tok, [text for docs in samples.values() for text in docs])
    records = write_token_bytes(tok, plan.tok_dir)
    report_records, report = tokenizer_report.write_report(
        tok, trained, {name: "\n".join(docs) for name, docs in samples.items()}, estimate, settings.baselines_dir,
        plan.out)
    say(report)
    return records + report_records


# ------------------------------------------------------------------------------------ what is in the folder


def training_settings(settings: Settings, train_paths: list[str]) -> dict:
    """What defines the tokenizer: the same settings and inputs train the same tokenizer. A shard not
    on disk (yet) has an unknown identity: None."""
    return {"vocab_size": settings.vocab_size, "max_chars": settings.max_chars, "doc_cap": settings.doc_cap,
            "text_column": settings.text_column,
            "train_shards": [[os.path.basename(p), file_identity(p) if os.path.exists(p) else None]
                             for p in train_paths]}


# ------------------------------------------------------------------------------------ 1. training


def training_texts(paths: list[str], doc_cap: int, max_chars: int, text_column: str = "text"):
    """The texts the tokenizer trains on: documents of `paths` in order, capped."""
    def documents():
        for path in paths:
            for _, texts in iter_texts(path, text_column):
                yield from texts
    return capped_texts(documents(), doc_cap, max_chars)


def train_or_load_tokenizer(tok_dir: str, paths: list[str], training: dict,
                            settings: Settings) -> tuple[RustBPETokenizer, list[FileRecord]]:
    """The tokenizer in tok_dir (claim_folder checked it was trained this way), else a new one."""
    pkl, training_path = os.path.join(tok_dir, TOKENIZER_FILE), os.path.join(tok_dir, TRAINING_FILE)
    if os.path.exists(pkl):
        tok = RustBPETokenizer.from_directory(tok_dir)
        print(f"reusing tokenizer {tok_dir} (vocab {tok.get_vocab_size():,})")
        return tok, [hash_file(pkl), hash_file(training_path)]

    shutil.rmtree(tok_dir, ignore_errors=True)  # what a killed training left
    t0 = time.time()
    task = (paths, settings.doc_cap, settings.max_chars, settings.text_column, settings.vocab_size)
    spec, docs, chars = in_a_worker(train_tokenizer, task, describe=lambda task: "the tokenizer's training")
    tok = RustBPETokenizer.from_spec(spec)
    seconds = time.time() - t0
    os.makedirs(tok_dir, exist_ok=True)
    # no timing in it: every file of the dataset is a function of the inputs and flags (the time is printed)
    records = [write_json(training_path, {**training, "docs": docs, "chars": chars, "fingerprint": tok.fingerprint()})]
    records.insert(0, tok.save(tok_dir))  # the pickle goes last: a crash before it leaves nothing to reuse
    print(f"trained in {seconds:.1f}s on {docs:,} docs, {chars:,} chars "
          f"({chars / max(seconds, 1e-9) / 1e6:.1f} M chars/s)")
    return tok, records


def train_tokenizer(task: tuple[list[str], int, int, str, int]) -> tuple[dict, int, int]:
    """The tokenizer trained on the documents of `paths`, capped (training_texts): its spec, and the
    documents and characters it read. Run in a worker process of its own (executors.in_a_worker):
    rustbpe holds the GIL for most of a training, a minute and more on a real corpus, and the main
    process must stay free to end the run on a signal."""
    paths, doc_cap, max_chars, text_column, vocab_size = task
    counted = {"docs": 0, "chars": 0}
    progress = bar(total=max_chars, desc="tokenizer: reading text", unit="char", unit_scale=True)

    def counting(texts):
        for text in texts:
            counted["docs"] += 1
            counted["chars"] += len(text)
            progress.update(len(text))
            yield text
        progress.close()
        print(f"tokenizer: computing {vocab_size - len(SPECIAL_TOKENS) - 256:,} merges...", file=sys.stderr)

    tok = RustBPETokenizer.train_from_iterator(counting(training_texts(paths, doc_cap, max_chars, text_column)),
                                               vocab_size)
    progress.close()
    return tok.spec, counted["docs"], counted["chars"]


# ---------------------------------------------------------------------------- 2. checks, 3. report


def check_round_trip(tok: RustBPETokenizer, documents: list[str]) -> None:
    """decode(encode(x)) == x on the sample texts and on real documents."""
    for text in list(tokenizer_report.domain_texts().values()) + documents:
        if tok.decode(tok.encode(text)) != text:
            raise RuntimeError(f"tokenizer round trip failed on: {text[:80]!r}")


def write_token_bytes(tok: RustBPETokenizer, tok_dir: str) -> list[FileRecord]:
    """token_bytes.pt as the consumers count (UTF-8 length of each token's decoded string, as nanochat's
    bits-per-byte does), and token_bytes_exact.pt (the raw bytes each token stands for)."""
    torch = import_torch()
    lengths = {name: torch.tensor(tok.token_byte_lengths(exact=exact), dtype=torch.int32)
               for name, exact in (("token_bytes.pt", False), ("token_bytes_exact.pt", True))}
    return [torch_save(tensor, os.path.join(tok_dir, name)) for name, tensor in lengths.items()]


def held_out_estimate(tok: RustBPETokenizer, path: str, column: str, num_shards: int) -> tuple[int, int, int]:
    """(documents, tokens with <|bos|>) of the held-out shard, and the number of shards of the run."""
    docs = tokens = 0
    for first_row, texts in iter_texts(path, column):
        ids, _ = tok.encoder.encode_batch(texts, first_row)
        docs, tokens = docs + len(texts), tokens + len(ids) + len(texts)
    return docs, tokens, num_shards


# ------------------------------------------------------------------------------------ 5. config


def make_config(tok: RustBPETokenizer, settings: Settings, plan: Plan, stats: dict) -> dict:
    corpus, shards, bin_subdir, training, tok_dir = plan.corpus, plan.shards, plan.bin_subdir, plan.training, plan.tok_dir
    config = {
        "vocab_size": tok.get_vocab_size(),
        "bos_id": tok.get_bos_token_id(),
        "special_tokens": {name: tok.encode_special(name) for name in SPECIAL_TOKENS},
        "dataset_name": settings.dataset_name,
        "shard_size": settings.shard_size,
        "token_dtype": settings.token_dtype,
        "bin_subdir": bin_subdir,
        "tokenizer_sha256": hash_file(os.path.join(tok_dir, TOKENIZER_FILE)).sha256,
        "tokenizer_fingerprint": tok.fingerprint(),
        "source": {"corpus": corpus.name, "repo_id": corpus.repo_id, "base_url": shards.base_url,
                   "parquet_dir": os.path.abspath(shards.parquet_dir), "text_column": settings.text_column,
                   "num_shards": len(shards.names), "val_files": shards.names[-1:], "train_files": shards.names[:-1],
                   "tokenizer_train_files": [name for name, _ in training["train_shards"]],
                   "max_chars": settings.max_chars, "doc_cap": settings.doc_cap},
    }
    for split in ("train", "val"):
        s = stats[split]
        config.update({f"{split}_shards": s["shards"], f"{split}_tokens": s["tokens"],
                       f"{split}_documents": s["documents"], f"{split}_dropped_tokens": s["dropped_tokens"]})
    # documents the fast encoder got wrong (their row groups were encoded with tiktoken): 0, or a bug to report
    config["encoder_mismatches"] = sum(stats[split].get("encoder_mismatches", 0) for split in ("train", "val"))
    config["documents"] = {split: stats[split]["doc_stats"] for split in ("train", "val")}
    return config

"""Pre-tokenize the SFT conversation mixture into token + mask shards.

train: SmolTalk train + MMLU auxiliary_train + GSM8K train x2 + identity conversations x2 +
SimpleSpelling + SpellingBee; val: SmolTalk test + MMLU test (first 5200) + GSM8K test (first 420).
Each split is shuffled with random.Random(42), every conversation rendered with the chat format
(truncated to --max-seq-len tokens) and the tokens and their loss mask packed into
<out>/<name>/sft/sft_<split>_NNNNNN.bin and sft_<split>_NNNNNN_mask.bin.
"""

import argparse
import contextlib
import os
import random
import time

import numpy as np

from stacks_data import flags
from stacks_data.remote import hub
from stacks_data.sources import sft as sources
from stacks_data.dataset.binfile import ShardWriter
from stacks_data.dataset.doc_stats import DocStats
from stacks_data.errors import InputError
from stacks_data.dataset.files import human_bytes
from stacks_data.dataset import layout
from stacks_data.dataset.folder import DatasetLock, StagedFolder
from stacks_data.executors import worker_state
from stacks_data.progress import bar
from stacks_data.tokenizer import RustBPETokenizer

STEP = layout.SFT
VAL_MMLU = 5200
VAL_GSM8K = 420


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_output_flags(parser)
    flags.add_mirror_flag(parser)
    flags.add_workers_flag(parser)
    flags.add_encoder_flag(parser)
    parser.add_argument("--max-seq-len", type=int, default=2048,
                        help="conversations are truncated to this many tokens")
    parser.add_argument("--shard-size", type=int, default=10_000_000, help="tokens per shard")
    parser.add_argument("--identity-file", default=None,
                        help="identity conversations (JSONL); default data/identity_conversations.jsonl, "
                             "then <out-dir>/<dataset-name>/identity_conversations.jsonl; none found: skipped")
    parser.add_argument("--words-file", default=None,
                        help="word list for the spelling tasks (default: download --words-url once, cached)")
    parser.add_argument("--words-url", default=sources.WORDS_URL, help="where to download the word list from")
    parser.add_argument("--simple-spelling-size", type=int, default=200_000, help="SimpleSpelling items (train)")
    parser.add_argument("--spelling-bee-size", type=int, default=80_000, help="SpellingBee items (train)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip invalid conversations (counted in config.json) instead of stopping")
    parser.add_argument("--drop-unsupervised", action="store_true",
                        help="leave out conversations with no supervised token (the reply cut by --max-seq-len): "
                             "a micro-batch of only such conversations has a NaN loss; counted in config.json")
    flags.add_window_flag(parser)
    flags.add_token_dtype_flag(parser)
    parser.add_argument("--chunk-size", type=int, default=1024,
                        help="conversations per work item (does not change the output)")


def check_args(args: argparse.Namespace) -> None:
    flags.check_common(args)
    for flag in ("--max-seq-len", "--shard-size", "--chunk-size"):
        flags.check_at_least(args, flag, 1)
    for flag in ("--simple-spelling-size", "--spelling-bee-size"):
        flags.check_at_least(args, flag, 0, sources.VAL_SEED_OFFSET)
    if args.hf_mirror:
        flags.check_input_dir(args.hf_mirror, "--hf-mirror")
    if args.identity_file:
        flags.check_input_file(args.identity_file, "--identity-file")
    if args.words_file:
        flags.check_input_file(args.words_file, "--words-file")
    flags.windows(args)
    flags.check_tokenizer_exists(args)


def run(settings: flags.Frozen) -> None:
    t0 = time.time()
    dataset = flags.dataset_dir(settings)
    with DatasetLock(dataset, STEP.name):
        tokenizer = flags.load_tokenizer(settings)
        flags.check_token_dtype(settings, tokenizer.get_vocab_size(), "the dataset's tokenizer")
        # every source of both splits is loaded (and checked) before anything is written
        splits = {split: mixture_sources(split, settings) for split in ("val", "train")}
        config = {
            "max_seq_len": settings.max_seq_len,
            "shard_size": settings.shard_size,
            "bos_id": tokenizer.get_bos_token_id(),
            "vocab_size": tokenizer.get_vocab_size(),
            "token_dtype": settings.token_dtype,
            "tokenizer_fingerprint": tokenizer.fingerprint(),
            "source": hub.source_of(settings.hf_mirror),
        }
        with StagedFolder(dataset, STEP.folder) as folder:
            records = []
            for split, (mixture, words) in splits.items():
                stats, documents, split_records = write_split(split, mixture, words, flags.tokenizer_dir(settings),
                                                              tokenizer.encoder.name, folder.path, settings)
                config.update({f"{split}_{key}": value for key, value in stats.items()})
                config.setdefault("documents", {})[split] = documents
                records += split_records
            manifest = folder.publish(STEP.name, config, records)
        print(f"wrote {folder.final}: " + ", ".join(
            f"{split} {config[f'{split}_conversations']:,} conversations / {config[f'{split}_tokens']:,} tokens "
            f"in {config[f'{split}_shards']} shard(s)" for split in ("val", "train"))
              + f"; {human_bytes(sum(r.size for r in records))} in {time.time() - t0:.1f}s")
        if not settings.skip_upload:
            hub.upload_dataset(dataset, flags.hub_repo_id(settings), [manifest])


def identity_file(settings: flags.Frozen) -> str | None:
    if settings.identity_file:
        return settings.identity_file
    candidates = ["data/identity_conversations.jsonl",
                  os.path.join(flags.dataset_dir(settings), "identity_conversations.jsonl")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    print(f"no identity conversations ({' or '.join(candidates)}): CustomJSON skipped")
    return None


def mixture_sources(split: str, settings: flags.Frozen):
    """The sources of a split in mixture order (GSM8K and CustomJSON twice in train), and the words
    the spelling tasks need (None when there are none)."""
    mirror = settings.hf_mirror
    if split == "val":
        return [sources.smoltalk("test", mirror), sources.mmlu("test", mirror, limit=VAL_MMLU),
                sources.gsm8k("test", mirror, limit=VAL_GSM8K)], None
    gsm8k = sources.gsm8k("train", mirror)
    path = identity_file(settings)
    identity = [sources.custom_json(path)] * 2 if path else []
    words = None
    if settings.simple_spelling_size or settings.spelling_bee_size:
        words = sources.spelling_words(sources.load_words(sources.words_path(settings.words_file, settings.words_url)))
    return [sources.smoltalk("train", mirror), sources.mmlu("auxiliary_train", mirror), gsm8k, gsm8k,
            *identity, sources.simple_spelling(settings.simple_spelling_size, "train"),
            sources.spelling_bee(settings.spelling_bee_size, "train")], words


def mixture_order(sizes: list[int]) -> np.ndarray:
    """Index into the concatenated sources at each mixture position: the permutation that
    random.Random(42).shuffle applies to the concatenated list of conversations."""
    order = list(range(sum(sizes)))
    random.Random(42).shuffle(order)
    return np.array(order, dtype=np.int64)


def chunks(mixture: list, order: np.ndarray, chunk_size: int):
    """Work items: for each run of chunk_size mixture positions, per source the rows and their payload.

    Only raw rows travel (compact Arrow slices, small dicts or synthetic seeds), never rendered
    conversations, so memory stays bounded.
    """
    starts = np.cumsum([0] + [s.n for s in mixture])
    for begin in range(0, len(order), chunk_size):
        index = order[begin:begin + chunk_size]
        which = np.searchsorted(starts, index, side="right") - 1
        groups = []
        for k in np.unique(which):
            slots = np.nonzero(which == k)[0]
            rows = mixture[k].rows_at(index[slots] - starts[k])
            groups.append((int(k), mixture[k].render, slots, rows, mixture[k].payload(rows)))
        yield len(index), groups


def worker_setup(tokenizer_dir: str, encoder: str, words, max_seq_len: int, drop_unsupervised: bool):
    """Once per worker process: what render_chunk needs besides its chunk."""
    return RustBPETokenizer.for_work(tokenizer_dir, encoder), words, max_seq_len, drop_unsupervised


def render_chunk(chunk):
    """-> (tokens, mask, conversations, truncated, invalid [(slot, source index, row, message)], where the
    conversations start (their <|bos|>), (conversations, tokens) with no supervised token)."""
    tokenizer, words, max_seq_len, drop_unsupervised = worker_state()
    n, groups = chunk
    conversations = [None] * n
    invalid = []
    for k, render, slots, rows, payload in groups:
        for slot, row, conversation in zip(slots, rows, sources.conversations(render, payload, words)):
            if isinstance(conversation, sources.Invalid):
                invalid.append((int(slot), k, int(row), str(conversation)))
            else:
                conversations[slot] = conversation
    valid = [c for c in conversations if c is not None]
    ids, mask, starts, truncated, kept = [], [], [], 0, 0
    unsupervised = [0, 0]  # conversations that teach nothing (no token whose mask is 1: the reply was cut), tokens
    # the chunk's texts are encoded in this worker; parallelism comes from the worker processes
    for conversation_ids, conversation_mask in tokenizer.render_conversations(valid, max_tokens=max_seq_len):
        if not any(conversation_mask):
            unsupervised[0] += 1
            unsupervised[1] += len(conversation_ids)
            if drop_unsupervised:
                continue
        starts.append(len(ids))
        ids += conversation_ids
        mask += conversation_mask
        truncated += len(conversation_ids) >= max_seq_len
        kept += 1
    invalid.sort()
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32  # the shard writer's format holds it
    return (np.array(ids, dtype=dtype), np.array(mask, dtype=np.uint8), kept, truncated, invalid,
            np.array(starts, dtype=np.int64), tuple(unsupervised))


def write_split(split: str, mixture: list, words, tokenizer_dir: str, encoder: str, out_dir: str,
                settings: flags.Frozen) -> tuple[dict, list]:
    """Render, tokenize and pack one split; returns its config.json entries and its files' records."""
    source_counts, invalid_counts = {}, {}
    for source in mixture:
        source_counts[source.name] = source_counts.get(source.name, 0) + source.n
    order = mixture_order([s.n for s in mixture])
    doc_stats = DocStats(flags.windows(settings))
    writer = ShardWriter(out_dir, [f"sft_{split}_{{:06d}}.bin", f"sft_{split}_{{:06d}}_mask.bin"], settings.shard_size,
                         stats=doc_stats, token_dtype=settings.token_dtype)
    conversations = truncated = supervised = 0
    unsupervised = [0, 0]
    chunk_list = chunks(mixture, order, settings.chunk_size)
    results = flags.executor(settings).map(render_chunk, chunk_list,
                                       setup=(worker_setup, (tokenizer_dir, encoder, words, settings.max_seq_len,
                                                             settings.drop_unsupervised)),
                                       describe=lambda chunk: describe_chunk(split, mixture, chunk))
    with bar(total=len(order), desc=f"sft {split}", unit="conv") as progress, _abandoned_on_error(writer):
        for ids, mask, n_valid, n_truncated, invalid, starts, (n_unsupervised, unsupervised_tokens) in results:
            for _, k, row, message in invalid:
                if not settings.skip_invalid:
                    raise InputError(f"invalid conversation in the {split} mixture: {message}",
                                     mixture[k].where(row), "fix it, or pass --skip-invalid to skip such conversations")
                invalid_counts[mixture[k].name] = invalid_counts.get(mixture[k].name, 0) + 1
            writer.add(ids, mask, bos=starts)
            conversations += n_valid
            truncated += n_truncated
            supervised += int(np.count_nonzero(mask))
            unsupervised[0] += n_unsupervised
            unsupervised[1] += unsupervised_tokens
            progress.update(n_valid + len(invalid) + (n_unsupervised if settings.drop_unsupervised else 0))
    writer.close()
    stats = {
        "conversations": conversations,
        "tokens": writer.tokens_written,
        "shards": len(writer.records) // 2,
        "truncated": truncated,
        "source_counts": source_counts,
        "invalid_counts": invalid_counts,
    }
    documents = {**doc_stats.result(), "supervised_tokens": supervised,
                 # with --drop-unsupervised they were left out (counted here), else they are in the shards
                 "unsupervised": {"count": unsupervised[0], "tokens": unsupervised[1],
                                  "dropped": settings.drop_unsupervised}}
    return stats, documents, writer.records


@contextlib.contextmanager
def _abandoned_on_error(writer: ShardWriter):
    try:
        yield
    except BaseException:
        writer.abandon()
        raise


def describe_chunk(split: str, mixture: list, chunk) -> str:
    """Where a chunk's conversations come from, for an error in a worker."""
    _, groups = chunk
    return f"a chunk of the {split} mixture with " + ", ".join(
        f"{mixture[k].where(int(rows[0]))}{f' and {len(rows) - 1} more' if len(rows) > 1 else ''}"
        for k, _, _, rows, _ in groups)

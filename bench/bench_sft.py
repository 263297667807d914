"""
SFT step speed against plain tiktoken batch encoding of the same texts, in the same run.

    python bench/bench_sft.py [--num-workers N] [--smoltalk-rows 46000] [--tokenizer-dir DIR]

Inputs: MMLU and GSM8K from the --hub mirror (../shared/data/hub), the word list
(../shared/data/words/words_alpha.txt), and a synthetic SmolTalk (messages built from corpus text, a
third with a system message) written into a temporary mirror next to them. The SmolTalk and spelling
sizes default to about a tenth of the real mixture.

Pipeline: the whole `sft` step (loading, mixing, rendering, writing the shards), --num-workers N, once
with each bulk encoder (--encoder tiktoken, the reference, and fastokens: the fast encoder's before/after).
Baseline: `enc.encode_ordinary_batch(texts, num_threads=N)` over every text the step encodes (the
message contents and assistant parts of every conversation, in mixture order), nothing else.
Reported: tokens/s of both and their ratio (target >= 0.5). For context also the floor: the same
texts split over N processes, each a plain `encode_ordinary` loop (compute time of the slowest only,
no IPC, no files). Without --tokenizer-dir, a vocab-4096 tokenizer is trained on
corpus/shard_00000.parquet first.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stacks_data.steps import sft
from stacks_data.sources import sft as sft_sources  # noqa: E402
from stacks_data.executors import ordered_map, worker_state  # noqa: E402
from stacks_data.flags import Frozen  # noqa: E402
from stacks_data.sources.parquet import iter_texts  # noqa: E402
from stacks_data.tokenizer import RustBPETokenizer, capped_texts, conversation_plan  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def corpus_texts(path):
    return [text for _, texts in iter_texts(path) for text in texts]


def synthetic_smoltalk(texts, n, seed):
    """SmolTalk-shaped conversations: optional system message, 1-3 user/assistant turns."""
    rng = random.Random(seed)

    def cut(lo, hi):
        text = rng.choice(texts)
        start = rng.randrange(max(1, len(text) - lo))
        return text[start:start + rng.randint(lo, hi)]

    rows = []
    for _ in range(n):
        messages = [{"role": "system", "content": cut(50, 300)}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 3)):
            messages += [{"role": "user", "content": cut(40, 800)},
                         {"role": "assistant", "content": cut(200, 3000)}]
        rows.append(messages)
    return rows


def build_mirror(work, hub, texts, rows):
    mirror = os.path.join(work, "hub")
    for repo in ("cais/mmlu", "openai/gsm8k"):
        os.makedirs(os.path.join(mirror, os.path.dirname(repo)), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(hub, repo)), os.path.join(mirror, repo))
    folder = os.path.join(mirror, sft_sources.SMOLTALK_REPO, "data")
    os.makedirs(folder)
    train = synthetic_smoltalk(texts, rows, seed=1)
    half = len(train) // 2
    for name, part in [("train-00000-of-00002", train[:half]), ("train-00001-of-00002", train[half:]),
                       ("test-00000-of-00001", synthetic_smoltalk(texts, max(1, rows // 20), seed=2))]:
        pq.write_table(pa.table({"messages": part}), os.path.join(folder, f"{name}.parquet"))
    return mirror


def step_args(out_dir, mirror, args, encoder="tiktoken"):
    """The step's settings, as the command line builds them (checked, then frozen)."""
    parser = argparse.ArgumentParser()
    sft.add_arguments(parser)
    parsed = parser.parse_args([
        "--out-dir", out_dir, "--dataset-name", "bench", "--skip-upload", "--hf-mirror", mirror,
        "--words-file", args.words, "--num-workers", str(args.num_workers),
        "--simple-spelling-size", str(args.simple_spelling_size),
        "--spelling-bee-size", str(args.spelling_bee_size), "--encoder", encoder,
    ])
    sft.check_args(parsed)
    return Frozen(parsed)


def mixture_texts(step):
    """Every text the step encodes, split by split, in mixture order (what the baseline encodes)."""
    texts = []
    for split in ("val", "train"):
        mixture, words = sft.mixture_sources(split, step)
        order = sft.mixture_order([s.n for s in mixture])
        for n, groups in sft.chunks(mixture, order, 4096):
            for _, render, _, _, payload in groups:
                for conversation in sft_sources.conversations(render, payload, words):
                    texts += [item for item, _ in conversation_plan(conversation) if isinstance(item, str)]
    return texts


def _encode_part(texts):
    enc = worker_state().enc
    t0 = time.perf_counter()
    tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
    return tokens, time.perf_counter() - t0


def floor_rate(tok_dir, texts, num_workers):
    """tokens/s of encode_ordinary over num_workers processes, counting compute time only."""
    size = -(-len(texts) // num_workers)
    parts = [texts[i:i + size] for i in range(0, len(texts), size)]
    results = list(ordered_map(_encode_part, parts, num_workers, setup=(RustBPETokenizer.from_directory, (tok_dir,))))
    return sum(t for t, _ in results) / max(s for _, s in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", default=os.path.join(SHARED, "hub"), help="hub mirror with cais/mmlu, openai/gsm8k")
    parser.add_argument("--words", default=os.path.join(SHARED, "words", "words_alpha.txt"))
    parser.add_argument("--corpus", default=os.path.join(SHARED, "corpus", "shard_00000.parquet"))
    parser.add_argument("--tokenizer-dir", default=None, help="use this tokenizer instead of training one")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoltalk-rows", type=int, default=46_000, help="synthetic SmolTalk train rows")
    parser.add_argument("--simple-spelling-size", type=int, default=20_000)
    parser.add_argument("--spelling-bee-size", type=int, default=8_000)
    args = parser.parse_args()

    texts = corpus_texts(args.corpus)
    with tempfile.TemporaryDirectory() as work:
        tok_dir = os.path.join(work, "out", "bench", "tokenizer")
        if args.tokenizer_dir:
            tok = RustBPETokenizer.from_directory(args.tokenizer_dir)
        else:
            t0 = time.perf_counter()
            tok = RustBPETokenizer.train_from_iterator(capped_texts(texts, 10_000, 20_000_000), 4096)
            print(f"trained a vocab-4096 tokenizer in {time.perf_counter() - t0:.1f}s")
        tok.save(tok_dir)
        mirror = build_mirror(work, args.hub, texts, args.smoltalk_rows)
        step = step_args(os.path.join(work, "out"), mirror, args)  # for mixture_texts

        step_times, main_cpu = {}, {}
        for encoder in ("tiktoken", "fastokens"):
            t0, cpu0 = time.perf_counter(), time.thread_time()
            sft.run(step_args(os.path.join(work, "out"), mirror, args, encoder))
            step_times[encoder], main_cpu[encoder] = time.perf_counter() - t0, time.thread_time() - cpu0
        config = json.load(open(os.path.join(work, "out", "bench", "sft", "config.json")))
        step_tokens = config["val_tokens"] + config["train_tokens"]
        conversations = config["val_conversations"] + config["train_conversations"]

        all_texts = mixture_texts(step)
        t0 = time.perf_counter()
        encoded = tok.enc.encode_ordinary_batch(all_texts, num_threads=args.num_workers)
        base_time = time.perf_counter() - t0
        base_tokens = sum(map(len, encoded))
        floor = floor_rate(tok_dir, all_texts, args.num_workers)

    base_rate = base_tokens / base_time
    print(f"\n{conversations:,} conversations, {len(all_texts):,} texts, {args.num_workers} worker(s)/thread(s)")
    print(f"baseline encode_ordinary_batch: {base_tokens:,} tokens in {base_time:.2f}s = {base_rate / 1e6:.2f} M tok/s")
    print(f"floor, encode_ordinary loop in {args.num_workers} process(es), compute only: {floor / 1e6:.2f} M tok/s")
    for encoder, seconds in step_times.items():
        rate = step_tokens / seconds
        print(f"sft step --encoder {encoder:9} (load+render+write): {step_tokens:,} tokens in {seconds:.2f}s = "
              f"{rate / 1e6:.2f} M tok/s: {rate / base_rate:.2f}x encode_ordinary_batch (target >= 0.5x), "
              f"{rate / floor:.2f}x the floor, {step_times['tiktoken'] / seconds:.2f}x the tiktoken step")
        # the serial part: what the main thread spends per token (loading, mixing, ordering, packing) caps the
        # step at 1e9 / ns tokens/s whatever the workers (the whole step, not only its shard writing)
        ns = main_cpu[encoder] / step_tokens * 1e9
        print(f"        main thread {ns:.1f} ns/token of CPU: at most {1e3 / ns:.0f} M tok/s, "
              f"{1e9 / ns / (rate / args.num_workers):.0f} workers at this run's rate per worker")


if __name__ == "__main__":
    main()

"""
Benchmark: CORE eval pre-tokenization of a full bundle, stacks_data.steps.core_eval vs a naive implementation.

The naive one is the issue's definition written out per example, as a straightforward port would do it:
build the few-shot population list, sample it, render the few-shot prompts again for every example,
encode one prompt per call, in a single process, and torch.save each task. Both write the same files
(checked byte for byte), so the ratio is for the same work. The step runs with each bulk encoder
(--encoder tiktoken, the reference, and fastokens): the before/after of the fast encoder.

    python bench/bench_core_eval.py                      # real bundle in ../shared/data, 4096-token vocab
    python bench/bench_core_eval.py --tokenizer-dir data/<name>/tokenizer --bundle DIR
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stacks_data.steps import core_eval  # noqa: E402
from stacks_data.cli import run_step  # noqa: E402
from stacks_data.dataset.files import torch_save  # noqa: E402
from stacks_data.sources.parquet import iter_texts  # noqa: E402
from stacks_data.tokenizer import RustBPETokenizer  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def naive_task(task, tok, max_seq_len):
    rows = [json.loads(line) for line in open(task.path, encoding="utf-8") if line.strip()]
    random.Random(1337).shuffle(rows)
    d, k, bos = task.delimiter, task.num_fewshot, tok.get_bos_token_id()
    sequences, num_seqs, gold = [], {}, {}
    for idx, row in enumerate(rows):
        shots = [rows[i] for i in random.Random(1234 + idx).sample([i for i in range(len(rows)) if i != idx], k)]
        if task.task_type == "multiple_choice":
            few = "".join(f"{e['query']}{d}{e['choices'][e['gold']]}\n\n" for e in shots)
            toks = [tok.encode(f"{few}{row['query']}{d}{c}", prepend=bos) for c in row["choices"]]
            p = 0
            while p < min(map(len, toks)) and all(t[p] == toks[0][p] for t in toks):
                p += 1
            spans = [(p, len(t)) for t in toks]
        elif task.task_type == "schema":
            few = "".join(f"{e['context_options'][e['gold']]}{d}{e['continuation']}\n\n" for e in shots)
            toks = [tok.encode(f"{few}{o}{d}{row['continuation']}", prepend=bos) for o in row["context_options"]]
            s = 0
            while s < min(map(len, toks)) and all(t[-s - 1] == toks[0][-s - 1] for t in toks):
                s += 1
            spans = [(len(t) - s, len(t)) for t in toks]
        else:
            few = "".join(f"{str(e['context']).strip()}{d}{e['continuation']}\n\n" for e in shots)
            ctx = str(row["context"]).strip()
            without = tok.encode((few + ctx + d).strip(), prepend=bos)
            toks = [tok.encode(f"{few}{ctx}{d}{row['continuation']}", prepend=bos)]
            assert toks[0][:len(without)] == without and len(without) < len(toks[0])
            spans = [(len(without), len(toks[0]))]
        for j, (t, (s, e)) in enumerate(zip(toks, spans)):
            n = max(0, len(t) - max_seq_len)
            assert s - n >= 0
            sequences.append({"tokens": t[n:], "start_idx": s - n, "end_idx": e - n, "example_idx": idx, "seq_idx": j})
        num_seqs[idx] = len(toks)
        if task.task_type != "language_modeling":
            gold[idx] = row["gold"]
    return {"task_type": task.task_type, "label": task.label, "random_baseline": task.random_baseline,
            "num_examples": len(rows), "sequences": sequences, "num_seqs_per_example": num_seqs,
            "gold_labels": gold}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=os.path.join(SHARED, "eval_bundle"))
    parser.add_argument("--tokenizer-dir", default=None, help="default: train a 4096-token vocab on one corpus shard")
    parser.add_argument("--corpus-shard", default=os.path.join(SHARED, "corpus", "shard_00000.parquet"))
    parser.add_argument("--work-dir", default=None, help="default: a temp folder")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count())
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--skip-naive", action="store_true", help="only the step, with each encoder")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_core_eval.")

    if args.tokenizer_dir:
        tok = RustBPETokenizer.from_directory(args.tokenizer_dir)
    else:
        t0 = time.time()
        texts = [t for _, batch in iter_texts(args.corpus_shard) for t in batch]
        tok = RustBPETokenizer.train_from_iterator(texts, 4096)
        print(f"trained a 4096-token vocab on {args.corpus_shard} in {time.time() - t0:.1f}s")
    tok.save(os.path.join(work, "ds", "tokenizer"))
    tasks = core_eval.load_bundle(args.bundle)
    print(f"bundle {args.bundle}: {len(tasks)} tasks; {os.cpu_count()} CPUs")

    common = ["--eval-bundle", args.bundle, "--dataset-name", "ds", "--skip-upload",
              "--max-seq-len", str(args.max_seq_len)]
    times = {}
    for encoder in ("tiktoken", "fastokens"):
        for workers in sorted({1, args.num_workers}):
            t0, cpu0 = time.time(), time.thread_time()
            run_step("core-eval", common + ["--out-dir", work, "--num-workers", str(workers), "--encoder", encoder])
            times[encoder, workers] = time.time() - t0
            if workers > 1:  # the serial part: the main thread's CPU (tasks are whole: it only orders and saves)
                print(f"core_eval --encoder {encoder} --num-workers {workers}: main thread {time.thread_time() - cpu0:.1f}s "
                      f"of CPU in {times[encoder, workers]:.1f}s", flush=True)
    if args.skip_naive:
        for (encoder, workers), seconds in times.items():
            print(f"core_eval --encoder {encoder:9} --num-workers {workers}: {seconds:6.1f}s "
                  f"({times['tiktoken', workers] / seconds:.2f}x tiktoken's)")
        return

    naive_dir = os.path.join(work, "naive")
    os.makedirs(naive_dir, exist_ok=True)
    t0 = time.time()
    for task in tasks:
        t1 = time.time()
        torch_save(naive_task(task, tok, args.max_seq_len), os.path.join(naive_dir, f"{task.label}.pt"))
        print(f"  naive {task.label}: {time.time() - t1:.1f}s", flush=True)
    naive = time.time() - t0

    fast_dir = os.path.join(work, "ds", "core_eval")
    same = all(open(os.path.join(naive_dir, f"{t.label}.pt"), "rb").read()
               == open(os.path.join(fast_dir, f"{t.label}.pt"), "rb").read() for t in tasks)
    print(f"\noutputs identical to the naive implementation's: {same}")
    print(f"naive (per example, single process):  {naive:7.1f}s")
    for (encoder, workers), seconds in times.items():
        print(f"core_eval --encoder {encoder:9} --num-workers {workers}: {seconds:7.1f}s   {naive / seconds:5.1f}x "
              f"the naive one, {times['tiktoken', workers] / seconds:.2f}x tiktoken's")
    if not same:
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()

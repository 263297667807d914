"""
Chat eval step speed (MMLU test + ARC-Easy/Challenge tests), against a per-item loop in the same run.

    python bench/bench_chat_eval.py [--hub ../shared/data/hub] [--tokenizer-dir DIR] [--repeat 3]

Baseline: the obvious loop, `render_for_completion(conversation)` and one encode per letter for every
item. Step: `tokenize_task` (one render per item, letter ids looked up once per letter). Both get the
same loaded, shuffled items and must produce the same sequences; the floor is tiktoken
`encode_ordinary` over the user messages alone. Also reported: the whole step (`chat_eval.run`: loading,
tokenizing, writing the .pt files) end to end. Target: the full step in a few seconds.
Without --tokenizer-dir, a vocab-4096 tokenizer is trained on corpus/shard_00000.parquet first.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stacks_data.steps import chat_eval  # noqa: E402
from stacks_data.sources.parquet import iter_texts  # noqa: E402
from stacks_data.tokenizer import RustBPETokenizer, capped_texts  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def naive_task(tok, items, max_seq_len):
    """Per-item loop: one render_for_completion and one encode per letter for every item."""
    sequences = []
    for idx, item in enumerate(items):
        ids = tok.render_for_completion(chat_eval.conversation(item))
        if len(ids) > max_seq_len:
            continue
        letter_ids = [tok.encode(letter) for letter in item["letters"]]
        assert all(len(x) == 1 for x in letter_ids)
        sequences.append({"tokens": ids, "answer_pos": len(ids) - 1, "letter_token_ids": [x[0] for x in letter_ids],
                          "gold": item["gold"], "example_idx": idx})
    return sequences


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", default=os.path.join(SHARED, "hub"), help="hub mirror with cais/mmlu, allenai/ai2_arc")
    parser.add_argument("--corpus", default=os.path.join(SHARED, "corpus", "shard_00000.parquet"))
    parser.add_argument("--tokenizer-dir", default=None, help="use this tokenizer instead of training one")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        if args.tokenizer_dir:
            tok = RustBPETokenizer.from_directory(args.tokenizer_dir)
        else:
            t0 = time.perf_counter()
            texts = (t for _, batch in iter_texts(args.corpus) for t in batch)
            tok = RustBPETokenizer.train_from_iterator(capped_texts(texts, 10_000, 20_000_000), 4096)
            print(f"trained a vocab-4096 tokenizer on {args.corpus} in {time.perf_counter() - t0:.1f}s")
        print(f"tokenizer: vocab {tok.get_vocab_size()}, {os.cpu_count()} CPUs\n")

        rows = []
        for label in chat_eval.TASKS:
            items = chat_eval.load_task(label, args.hub)
            texts = [chat_eval.conversation(item)["messages"][0]["content"] for item in items]
            floor, _ = best_of(args.repeat, lambda: [tok.enc.encode_ordinary(t) for t in texts])
            step, (payload, _) = best_of(args.repeat, lambda: chat_eval.tokenize_task(tok, label, items, 2048))
            naive, sequences = best_of(args.repeat, lambda: naive_task(tok, items, 2048))
            assert sequences == payload["sequences"], f"{label}: step and per-item outputs differ"
            rows.append((label, len(items), floor, naive, step))

        print(f"{'task':<14} {'items':>7} {'raw encode':>11} {'per-item':>9} {'step':>9} {'speed-up':>9}")
        for label, n, floor, naive, step in rows:
            print(f"{label:<14} {n:>7,} {floor:>10.2f}s {naive:>8.2f}s {step:>8.2f}s {naive / step:>8.1f}x")
        n, floor, naive, step = (sum(r[i] for r in rows) for i in range(1, 5))
        print(f"{'all':<14} {n:>7,} {floor:>10.2f}s {naive:>8.2f}s {step:>8.2f}s {naive / step:>8.1f}x")
        print(f"(step / raw encode of the questions: {step / floor:.2f}x; outputs identical)\n")

        tok.save(os.path.join(work, "ds", "tokenizer"))
        for encoder in ("tiktoken", "fastokens"):
            step = argparse.Namespace(out_dir=work, dataset_name="ds", hf_user=None, skip_upload=True,
                                      hf_mirror=args.hub, max_seq_len=2048, encoder=encoder)
            seconds, _ = best_of(args.repeat, lambda: chat_eval.run(step))
            print(f"whole step --encoder {encoder:9} (load + tokenize + write, 3 tasks, {n:,} items): {seconds:.2f}s")


if __name__ == "__main__":
    main()

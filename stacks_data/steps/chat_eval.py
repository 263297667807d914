"""Pre-tokenize MMLU, ARC-Easy and ARC-Challenge for categorical chat eval (one answer-letter logit per item).

Each test item becomes a chat prompt: the user asks the multiple-choice question (render_mc, the same text
the SFT mixture trains on) and an assistant reply is opened. The evaluator runs the model once over
`tokens`, reads the logits at `answer_pos` (the <|assistant_start|> token), restricts them to the item's
`letter_token_ids` and checks whether the largest is at `gold`.

Writes <out-dir>/<dataset-name>/chat_eval/{MMLU,ARC-Easy,ARC-Challenge}.pt and config.json, then uploads
the folder to <hf-user>/<dataset-name> under chat_eval/ unless --skip-upload.
"""

import argparse
import os
import time

from stacks_data import flags
from stacks_data.remote import hub
from stacks_data.errors import FlagError, InputError
from stacks_data.dataset.files import human_bytes, torch_save
from stacks_data.sources.multiple_choice import arc_gold, check_mmlu_row, load_arc, load_mmlu, render_mc, shuffled
from stacks_data.dataset import layout
from stacks_data.dataset.folder import DatasetLock, StagedFolder
from stacks_data.tokenizer import RustBPETokenizer

STEP = layout.CHAT_EVAL
TASKS = ("MMLU", "ARC-Easy", "ARC-Challenge")
MMLU_LETTERS = ("A", "B", "C", "D")


# ---------------------------------------------------------------- items

def mmlu_items(rows: list[dict]) -> list[dict]:
    """MMLU rows -> items {name, question, letters, choices, gold}, checked."""
    items = []
    for i, row in enumerate(rows):
        name = f"MMLU test row {i} (subject {row.get('subject')!r})"
        try:
            check_mmlu_row(row)
        except ValueError as e:
            raise InputError(str(e), name) from None
        items.append({"name": name, "question": row["question"], "letters": list(MMLU_LETTERS),
                      "choices": row["choices"], "gold": row["answer"]})
    return items


def arc_items(rows: list[dict]) -> list[dict]:
    """ARC rows -> items; the letters are the item's own labels (A-D, A-C, A-E or 1-4)."""
    items = []
    for i, row in enumerate(rows):
        name = f"ARC item {row.get('id') or f'in row {i}'}"
        choices = row.get("choices")
        texts, labels = (choices.get("text"), choices.get("label")) if isinstance(choices, dict) else (None, None)
        if not isinstance(texts, list) or not isinstance(labels, list) or not all(isinstance(t, str) for t in texts) \
                or not isinstance(row.get("question"), str):
            raise InputError("expected a question and choices {text: [...], label: [...]} of strings", name)
        if len(texts) != len(labels):
            raise InputError(f"{len(texts)} choice texts but {len(labels)} labels {labels}", name)
        items.append({"name": name, "question": row["question"], "letters": labels,
                      "choices": texts, "gold": arc_gold(row)})
    return items


def load_task(label: str, mirror: str | None) -> list[dict]:
    """A task's test items in the order `datasets`' shuffle(seed=42) gives, as nanochat evaluates them."""
    if label == "MMLU":
        items = mmlu_items(load_mmlu("test", mirror))
    else:
        items = arc_items(load_arc(label, "test", mirror))
    return shuffled(items)


# ---------------------------------------------------------------- tokenization

def conversation(item: dict) -> dict:
    question = render_mc(item["question"], item["letters"], item["choices"])
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": item["letters"][item["gold"]]}]}


def letter_token_id(tok: RustBPETokenizer, letter: str, item_name: str) -> int:
    """The single token the assistant's answer `letter` is; scoring compares one logit per letter."""
    ids = tok.encode(letter)
    if len(ids) != 1:
        raise InputError(f"answer letter {letter!r} encodes to {len(ids)} tokens {ids}, expected exactly 1 "
                         "(categorical eval reads one logit per letter)", item_name,
                         "train the tokenizer with a vocabulary that has each letter as a token")
    return ids[0]


def random_baseline(letter_lists: list[list[str]]) -> float:
    """Expected accuracy of a uniform guess over the kept items."""
    sizes = {len(letters) for letters in letter_lists}
    if len(sizes) == 1:
        return 1 / sizes.pop()
    return sum(1 / len(letters) for letters in letter_lists) / len(letter_lists)


def tokenize_task(tok: RustBPETokenizer, label: str, items: list[dict], max_seq_len: int) -> tuple[dict, int]:
    """The task's .pt payload and the number of items skipped as longer than max_seq_len."""
    prompts = tok.render_for_completions([conversation(item) for item in items])  # one bulk encode
    letter_ids: dict[str, int] = {}
    sequences, kept_letters = [], []
    for idx, (item, ids) in enumerate(zip(items, prompts)):
        if len(ids) > max_seq_len:
            continue
        for letter in item["letters"]:
            if letter not in letter_ids:
                letter_ids[letter] = letter_token_id(tok, letter, item["name"])
        sequences.append({
            "tokens": ids,
            "answer_pos": len(ids) - 1,  # the <|assistant_start|> token: its logits predict the letter
            "letter_token_ids": [letter_ids[letter] for letter in item["letters"]],
            "gold": item["gold"],
            "example_idx": idx,  # position after the shuffle
        })
        kept_letters.append(item["letters"])
    if not sequences:
        raise FlagError(f"all {len(items)} {label} items are longer than {max_seq_len} tokens", "--max-seq-len",
                        "raise it")
    payload = {
        "task_type": "categorical",
        "label": label,
        "num_examples": len(sequences),
        "random_baseline": random_baseline(kept_letters),
        "sequences": sequences,
    }
    return payload, len(items) - len(sequences)


# ---------------------------------------------------------------- step

def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_output_flags(parser)
    flags.add_mirror_flag(parser)
    flags.add_encoder_flag(parser)
    parser.add_argument("--max-seq-len", type=int, default=2048,
                        help="items whose prompt is longer than this many tokens are skipped (and counted)")


def check_args(args: argparse.Namespace) -> None:
    flags.check_eval_step(args, "--hf-mirror")


def run(settings: flags.Frozen) -> None:
    t0 = time.time()
    dataset = flags.dataset_dir(settings)
    with DatasetLock(dataset, STEP.name):
        tok = flags.load_tokenizer(settings)
        tasks = {label: load_task(label, settings.hf_mirror) for label in TASKS}  # all inputs checked first
        with StagedFolder(dataset, STEP.folder) as folder:
            records, entries = [], []
            for label, items in tasks.items():
                t = time.time()
                payload, skipped = tokenize_task(tok, label, items, settings.max_seq_len)
                records.append(torch_save(payload, os.path.join(folder.path, f"{label}.pt")))
                entries.append({"label": label, "file": f"{label}.pt", "task_type": "categorical",
                                "num_examples": payload["num_examples"],
                                "random_baseline": payload["random_baseline"], "num_skipped": skipped})
                print(f"{label}: {len(items):,} items, {payload['num_examples']:,} kept, {skipped:,} skipped "
                      f"(> {settings.max_seq_len} tokens), random baseline {payload['random_baseline']:.4f}, "
                      f"{human_bytes(records[-1].size)}, {time.time() - t:.1f}s")
            config = {"max_seq_len": settings.max_seq_len, "bos_id": tok.get_bos_token_id(),
                      "tokenizer_fingerprint": tok.fingerprint(), "source": hub.source_of(settings.hf_mirror),
                      "tasks": entries}
            manifest = folder.publish(STEP.name, config, records)
        total = sum(task["num_examples"] for task in entries)
        print(f"wrote {total:,} sequences in {len(entries)} tasks to {folder.final} in {time.time() - t0:.1f}s")
        if not settings.skip_upload:
            hub.upload_dataset(dataset, flags.hub_repo_id(settings), [manifest])

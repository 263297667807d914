"""
Multiple-choice datasets (MMLU, ARC) and their rendering as a chat question.

Shared by the SFT mixture and the chat eval, so both see the exact same prompt text.
"""

import numpy as np

from stacks_data.errors import InputError
from stacks_data.remote.hub import dataset_files
from stacks_data.sources.parquet import read_rows

MMLU_REPO = "cais/mmlu"
ARC_REPO = "allenai/ai2_arc"


def render_mc(question: str, letters, choices) -> str:
    """The user message of a multiple-choice question."""
    lines = "".join(f"- {c}={l}\n" for l, c in zip(letters, choices))
    return f"Multiple Choice question: {question}\n{lines}\nRespond only with the letter of the correct answer."


def hf_shuffle_order(n: int, seed: int = 42) -> np.ndarray:
    """The row order `datasets.Dataset.shuffle(seed=seed)` gives: row p[i] at position i."""
    return np.random.default_rng(seed).permutation(n)


def shuffled(rows: list, seed: int = 42) -> list:
    return [rows[i] for i in hf_shuffle_order(len(rows), seed)]


def load_mmlu(split: str, mirror: str | None = None) -> list[dict]:
    """MMLU rows {question, subject, choices, answer} in file order.

    split "auxiliary_train" reads auxiliary_train/train-*.parquet (one struct column `train`);
    other splits ("test", "validation", "dev") read all/<split>-*.parquet.
    """
    if split == "auxiliary_train":
        paths = dataset_files(MMLU_REPO, "auxiliary_train/train-*.parquet", mirror=mirror)
        return [row["train"] for path in paths for row in read_rows(path, ["train"])]
    paths = dataset_files(MMLU_REPO, f"all/{split}-*.parquet", mirror=mirror)
    columns = ["question", "subject", "choices", "answer"]
    return [row for path in paths for row in read_rows(path, columns)]


def check_mmlu_row(row) -> None:
    """Raise ValueError (saying why) unless the row is a question with 4 string choices and an answer 0-3."""
    if not isinstance(row, dict):
        raise ValueError("row is empty")
    question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
    if not isinstance(question, str):
        raise ValueError("question must be a string")
    if not isinstance(choices, list) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"expected exactly 4 string choices, got {choices!r}")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < 4:
        raise ValueError(f"answer must be an int 0-3, got {answer!r}")


def load_arc(subset: str, split: str, mirror: str | None = None) -> list[dict]:
    """ARC rows {id, question, choices: {text, label}, answerKey} in file order; subset ARC-Easy/ARC-Challenge."""
    if subset not in ("ARC-Easy", "ARC-Challenge"):
        raise ValueError(f"unknown ARC subset {subset!r}")
    paths = dataset_files(ARC_REPO, f"{subset}/{split}-*.parquet", mirror=mirror)
    return [row for path in paths for row in read_rows(path, ["id", "question", "choices", "answerKey"])]


def arc_gold(row: dict) -> int:
    """Index of the answer key among the item's labels."""
    labels = row["choices"]["label"]
    if row["answerKey"] not in labels:
        raise InputError(f"answerKey {row['answerKey']!r} is not one of the labels {labels}", f"ARC item {row['id']}")
    return labels.index(row["answerKey"])

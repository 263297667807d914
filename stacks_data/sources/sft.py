"""
The sources of the SFT mixture and the tasks that turn their rows into conversations.

Two halves, because they run in different processes:
- loading (main process): a `Source` holds the raw rows of one dataset split (an Arrow array for
  SmolTalk, small lists for the others, nothing for the synthetic tasks), its shuffle order, and
  can say where a row came from. `Source.payload(rows)` is what is shipped to a worker.
- rendering (workers): `conversations(source.render, payload, words)` turns a payload back into
  {"messages": [...]} conversations, an `Invalid` for each row that breaks the format. A source's
  loader names its renderer (`render=`), so one source is defined by those two functions.
"""

import json
import os
import random
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from stacks_data.remote.http import download
from stacks_data.errors import InputError
from stacks_data.dataset.files import read_text
from stacks_data.remote.hub import cache_root, dataset_files
from stacks_data.sources.multiple_choice import check_mmlu_row, hf_shuffle_order, load_mmlu, render_mc
from stacks_data.sources.parquet import open_parquet, read_rows
from stacks_data.tokenizer import conversation_plan

SMOLTALK_REPO = "HuggingFaceTB/smol-smoltalk"
GSM8K_REPO = "openai/gsm8k"
WORDS_URL = "https://raw.githubusercontent.com/dwyl/english-words/refs/heads/master/words_alpha.txt"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
VAL_SEED_OFFSET = 10_000_000  # above the word count, so train and val items never share a seed


class Invalid(ValueError):
    """A row that does not make a valid conversation (the message says why)."""


# ---------------------------------------------------------------------------------------------- loading

@dataclass
class Source:
    """One dataset split as it enters the mixture: n items, item i is row order[i]."""

    name: str            # "SmolTalk", ... : the key in config.json and in error messages
    render: Callable     # (payload item, words) -> conversation; raises Invalid
    n: int
    order: np.ndarray | None = None   # position -> row; None = file order
    rows: list | None = None          # raw rows (small sources)
    arrays: list = field(default_factory=list)  # Arrow arrays (big sources), rows concatenated
    files: list = field(default_factory=list)   # (path, first row) to name a row's file
    line_numbers: list | None = None  # CustomJSON: the file line of each row
    seed_offset: int = 0              # synthetic tasks: item i uses seed seed_offset + i

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.order is None else self.order[positions]

    def payload(self, rows: np.ndarray):
        """What a worker needs to build the conversations of `rows` (picklable, compact)."""
        if self.arrays:
            return _arrow_take(self.arrays, rows)
        if self.rows is not None:
            return [self.rows[r] for r in rows]
        return [int(self.seed_offset + r) for r in rows]

    def where(self, row: int) -> str:
        """Human description of a row, for error messages."""
        if self.line_numbers is not None:
            return f"{self.name} row {row} ({self.files[0][0]} line {self.line_numbers[row]})"
        for path, first in reversed(self.files):
            if row >= first:
                return f"{self.name} row {row} ({path} row {row - first})"
        return f"{self.name} item {row}"


def _arrow_take(arrays: list[pa.Array], rows: np.ndarray) -> pa.Array:
    """Rows of the concatenation of `arrays`, in the given order, as one small Arrow array.

    Taken array by array (never concatenating the big ones: a string column over 2 GB would not
    fit one array), then put back into the requested order.
    """
    starts = np.cumsum([0] + [len(a) for a in arrays])
    which = np.searchsorted(starts, rows, side="right") - 1
    by_array = np.argsort(which, kind="stable")
    parts = []
    for k in np.unique(which):
        local = rows[by_array][which[by_array] == k] - starts[k]
        parts.append(arrays[k].take(pa.array(local)))
    grouped = pa.concat_arrays(parts)
    back = np.empty_like(by_array)
    back[by_array] = np.arange(len(by_array))
    return grouped.take(pa.array(back))


def _file_starts(paths: list[str], counts: list[int]) -> list[tuple[str, int]]:
    starts = np.cumsum([0] + counts)
    return [(path, int(start)) for path, start in zip(paths, starts)]


def smoltalk(split: str, mirror: str | None = None) -> Source:
    """SmolTalk `split` ("train" / "test"), shuffled; rows stay in Arrow memory."""
    paths = dataset_files(SMOLTALK_REPO, f"data/{split}-*.parquet", mirror=mirror)
    arrays, counts, first_type = [], [], None
    for path in paths:
        column = open_parquet(path, ["messages"]).read(columns=["messages"]).column("messages")
        if first_type is None:
            first_type = column.type
        if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
            raise InputError(f"column 'messages' has type {column.type}, expected a list of {{role, content}}", path)
        if column.type != first_type:
            raise InputError(f"column 'messages' has type {column.type}, unlike {paths[0]} ({first_type})", path)
        arrays += [chunk for chunk in column.chunks if len(chunk)]
        counts.append(len(column))
    n = sum(counts)
    return Source("SmolTalk", smoltalk_conversation, n, order=hf_shuffle_order(n), arrays=arrays,
                  files=_file_starts(paths, counts))


def mmlu(split: str, mirror: str | None = None, limit: int | None = None) -> Source:
    """MMLU `split` ("auxiliary_train" or "test", ...), shuffled, optionally its first `limit` items."""
    rows = load_mmlu(split, mirror)
    n = len(rows) if limit is None else min(limit, len(rows))
    name = "auxiliary_train/train" if split == "auxiliary_train" else f"all/{split}"
    return Source("MMLU", mmlu_conversation, n, order=hf_shuffle_order(len(rows))[:n], rows=rows,
                  files=[(f"cais/mmlu {name}-*.parquet", 0)])


def gsm8k(split: str, mirror: str | None = None, limit: int | None = None) -> Source:
    """GSM8K main `split`, shuffled, optionally its first `limit` items."""
    paths = dataset_files(GSM8K_REPO, f"main/{split}-*.parquet", mirror=mirror)
    per_file = [read_rows(path, ["question", "answer"]) for path in paths]
    rows = [row for file_rows in per_file for row in file_rows]
    n = len(rows) if limit is None else min(limit, len(rows))
    return Source("GSM8K", gsm8k_conversation, n, order=hf_shuffle_order(len(rows))[:n], rows=rows,
                  files=_file_starts(paths, [len(r) for r in per_file]))


def custom_json(path: str) -> Source:
    """A JSONL file of conversations (one JSON list of messages per line), in file order.

    Lines are parsed by the workers, so a bad line is reported (or skipped) like any invalid row.
    """
    lines = read_text(path).split("\n")
    # keep the 1-based line number of every non-blank line for error messages
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    return Source("CustomJSON", custom_json_conversation, len(numbered), rows=[line for _, line in numbered],
                  files=[(path, 0)], line_numbers=[number for number, _ in numbered])


def simple_spelling(size: int, split: str = "train") -> Source:
    return Source("SimpleSpelling", simple_spelling_conversation, size,
                  seed_offset=0 if split == "train" else VAL_SEED_OFFSET)


def spelling_bee(size: int, split: str = "train") -> Source:
    return Source("SpellingBee", spelling_bee_conversation, size,
                  seed_offset=0 if split == "train" else VAL_SEED_OFFSET)


def words_path(words_file: str | None, url: str = WORDS_URL) -> str:
    """The word list: `words_file`, else downloaded once into the cache."""
    if words_file:
        return words_file
    return download(url, os.path.join(cache_root(), "words", os.path.basename(url)),
                    offline="download the word list elsewhere and pass --words-file FILE")


def load_words(path: str) -> list[str]:
    """One word per line, stripped (CRLF files too), blank lines dropped, file order kept."""
    words = [line.strip() for line in read_text(path).split("\n")]
    words = [w for w in words if w]
    if not words:
        raise InputError("the word list is empty", path, "pass a word list, one word per line")
    return words


def spelling_words(words: list[str]) -> tuple[list[str], list[str]]:
    """(SpellingBee words: file order, SimpleSpelling words: shuffled once with Random(42))."""
    shuffled_words = list(words)
    random.Random(42).shuffle(shuffled_words)
    return words, shuffled_words


# ---------------------------------------------------------------------------------------------- rendering

def conversations(render: Callable, payload, words: tuple[list[str], list[str]] | None):
    """Yield a conversation or an Invalid exception (not raised) per item of a payload, in order."""
    for item in payload.to_pylist() if isinstance(payload, pa.Array) else payload:
        try:
            yield render(item, words)
        except Invalid as e:
            yield e


def check_messages(messages, allow_system: bool) -> None:
    """A row's messages as a source must give them: a list of {role, content} with string contents, at
    least one user/assistant exchange (after an optional leading system message), in the roles' order
    that rendering checks (tokenizer.conversation_plan: one check, not two)."""
    if not isinstance(messages, list):
        raise Invalid(f"expected a list of messages, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise Invalid(f"message {i}: expected {{role, content}} with a string content")
    if not allow_system and messages and messages[0].get("role") == "system":
        raise Invalid("message 0: expected role 'user', got 'system'")
    try:
        conversation_plan({"messages": messages})
    except ValueError as e:
        raise Invalid(str(e)) from None
    turns = len(messages) - (messages[0].get("role") == "system" if messages else 0)
    if turns < 2:
        raise Invalid(f"expected at least 2 user/assistant messages, got {turns}")


def smoltalk_conversation(messages, words=None) -> dict:
    check_messages(messages, allow_system=True)
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def mmlu_conversation(row, words=None) -> dict:
    try:
        check_mmlu_row(row)
    except ValueError as e:
        raise Invalid(str(e)) from None
    return {"messages": [
        {"role": "user", "content": render_mc(row["question"], "ABCD", row["choices"])},
        {"role": "assistant", "content": "ABCD"[row["answer"]]},
    ]}


GSM8K_CALL = re.compile(r"(<<[^>]+>>)")


def gsm8k_parts(answer: str) -> list[dict]:
    """The answer as assistant parts: each <<expr=result>> calculator call becomes a python part and
    its python_output; the text around them (empty pieces included) becomes text parts."""
    parts = []
    for piece in GSM8K_CALL.split(answer):
        if piece.startswith("<<") and piece.endswith(">>"):
            inner = piece[2:-2]
            expr, _, result = inner.rpartition("=") if "=" in inner else (inner, "", "")
            parts += [{"type": "python", "text": expr}, {"type": "python_output", "text": result}]
        else:
            parts.append({"type": "text", "text": piece})
    return parts


def gsm8k_conversation(row, words=None) -> dict:
    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise Invalid("question and answer must be strings")
    return {"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": gsm8k_parts(answer)},
    ]}


def custom_json_conversation(line: str, words=None) -> dict:
    try:
        messages = json.loads(line)
    except json.JSONDecodeError as e:
        raise Invalid(f"not valid JSON ({e})") from None
    check_messages(messages, allow_system=False)
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def simple_spelling_conversation(seed: int, words: tuple[list[str], list[str]]) -> dict:
    """Spell a word of the shuffled list (see spelling_words)."""
    word = random.Random(seed).choice(words[1])
    return {"messages": [
        {"role": "user", "content": f"Spell the word: {word}"},
        {"role": "assistant", "content": f"{word}:{','.join(word)}"},
    ]}


# Questions asking for a letter count, {letter} and {word} filled in (quoted or not); no trailing
# "?": one is added half the time. Several languages, so the skill is not tied to English wording.
SPELLING_BEE_QUESTIONS = [
    # English
    "How many {letter} are in {word}",
    "How many times does {letter} appear in {word}",
    "Count the {letter} in {word}",
    "How many letters {letter} does {word} have",
    "In {word}, how many {letter} are there",
    "Number of {letter} in {word}",
    "What is the number of {letter} in the word {word}",
    "How often does the letter {letter} occur in {word}",
    "Can you tell me how many {letter} the word {word} contains",
    "Please count the occurrences of {letter} in {word}",
    "{word}: how many {letter}",
    "Tell me how many times {letter} shows up in {word}",
    "How many {letter}'s does {word} contain",
    "Give me the count of the letter {letter} in {word}",
    "Count how many times the letter {letter} is used in {word}",
    "I need the number of {letter} in {word}",
    "Quick question: how many {letter} in {word}",
    "What's the {letter} count of {word}",
    "Spell {word} and count the {letter}",
    "How many occurrences of {letter} does the word {word} have",
    "Find the number of times {letter} appears in {word}",
    "Letter {letter} in {word}: how many times",
    "Check how many {letter} there are in {word}",
    "If you spell {word}, how many {letter} do you get",
    # Spanish
    "Cuántas {letter} hay en {word}",
    "Cuántas veces aparece la letra {letter} en {word}",
    "Cuenta las {letter} en la palabra {word}",
    "Cuál es el número de {letter} en {word}",
    "En la palabra {word}, cuántas {letter} hay",
    # French
    "Combien de {letter} y a-t-il dans {word}",
    "Combien de fois la lettre {letter} apparaît-elle dans {word}",
    "Compte les {letter} dans le mot {word}",
    "Dans {word}, combien de {letter}",
    "Quel est le nombre de {letter} dans {word}",
    # German
    "Wie viele {letter} hat das Wort {word}",
    "Wie oft kommt {letter} in {word} vor",
    "Zähle die {letter} in {word}",
    "Wie viele Buchstaben {letter} enthält {word}",
    # Italian
    "Quante {letter} ci sono in {word}",
    "Quante volte compare la lettera {letter} in {word}",
    "Conta le {letter} nella parola {word}",
    # Portuguese
    "Quantos {letter} tem a palavra {word}",
    "Quantas vezes a letra {letter} aparece em {word}",
    "Conte os {letter} em {word}",
    # Dutch
    "Hoeveel {letter} zitten er in {word}",
    "Hoe vaak komt de letter {letter} voor in {word}",
    # Polish
    "Ile liter {letter} jest w słowie {word}",
    # Chinese
    "{word}中有几个{letter}",
    "单词{word}里字母{letter}出现了几次",
    # Japanese
    "{word}に{letter}はいくつありますか",
]
QUOTES = ["", "'", '"']
_PLACEHOLDER = re.compile(r"(\{letter\}|\{word\})")


def _recase(template: str, case) -> str:
    """Apply a str method to the template's words but not to its placeholders."""
    return "".join(p if _PLACEHOLDER.fullmatch(p) else case(p) for p in _PLACEHOLDER.split(template))


def spelling_bee_conversation(seed: int, words: tuple[list[str], list[str]]) -> dict:
    """How many <letter> in <word>: counted by hand letter by letter, then checked with Python.

    All randomness comes from Random(seed), drawn in this order: word, letter, question, casing,
    quotes, question mark.
    """
    rng = random.Random(seed)
    word = rng.choice(words[0])
    # mostly a letter of the word; sometimes any letter, so that 0 is a possible answer
    letter = rng.choice(word) if rng.random() < 0.9 else rng.choice(LETTERS)
    template = rng.choice(SPELLING_BEE_QUESTIONS)
    casing = rng.random()
    if casing < 0.3:
        template = _recase(template, str.lower)  # people who skip the shift key
    elif casing < 0.4:
        template = _recase(template, str.upper)
    letter_quote, word_quote = rng.choice(QUOTES), rng.choice(QUOTES)
    question = template.format(letter=f"{letter_quote}{letter}{letter_quote}", word=f"{word_quote}{word}{word_quote}")
    if rng.random() < 0.5:
        question += "?"

    count, lines = 0, []
    for i, ch in enumerate(word, 1):
        count += ch == letter
        lines.append(f"{i}:{ch} ({count})")
    spelled = (f"Let me spell '{word}' letter by letter, keeping a running count of '{letter}':\n"
               + "\n".join(lines) + f"\n\nThat gives {count} by hand. Let me check with Python:\n\n")
    final = f"\n\nPython agrees: '{letter}' appears {count} time{'' if count == 1 else 's'} in '{word}'.\n\n#### {count}"
    return {"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [
            {"type": "text", "text": spelled},
            {"type": "python", "text": f"'{word}'.count('{letter}')"},
            {"type": "python_output", "text": str(count)},
            {"type": "text", "text": final},
        ]},
    ]}

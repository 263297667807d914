"""Chat categorical eval: MMLU / ARC items -> one completion prompt each, on hand-checked fixtures."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fixtures import published_files, repo_files
from stacks_data import cli
from stacks_data.steps import chat_eval
from stacks_data.errors import FlagError, InputError
from stacks_data.tokenizer import RustBPETokenizer

VOCAB = 400
NAME = "ds"

# numpy.random.default_rng(42).permutation(n), i.e. datasets' shuffle(seed=42), worked out once:
# n=4 -> [3, 2, 1, 0], n=5 -> [4, 2, 3, 1, 0], n=3 -> [2, 1, 0]

MMLU_ROWS = [  # file order
    {"question": "What is 2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1},
    {"question": "Capital of France?", "subject": "geo", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": 0},
    {"question": "Color of the sky?", "subject": "sci", "choices": ["red", "green", "blue", "black"], "answer": 2},
    {"question": "Largest planet?", "subject": "sci", "choices": ["Mars", "Venus", "Earth", "Jupiter"], "answer": 3},
]


def arc(id, question, texts, labels, key):
    return {"id": id, "question": question, "choices": {"text": texts, "label": labels}, "answerKey": key}


ARC_EASY_ROWS = [  # one 4-choice, 3-choice, 5-choice and numeric-label item each
    arc("e0", "Which is a mammal?", ["shark", "whale", "trout", "eel"], ["A", "B", "C", "D"], "B"),
    arc("e1", "Ice is?", ["gas", "liquid", "solid"], ["A", "B", "C"], "C"),
    arc("e2", "Which is warm?", ["snow", "ice", "hail", "sleet", "sun"], ["A", "B", "C", "D", "E"], "E"),
    arc("e3", "How many legs has a cat?", ["two", "three", "four", "six"], ["1", "2", "3", "4"], "3"),
    arc("e4", "Plants need?", ["light", "rock", "glass", "iron"], ["A", "B", "C", "D"], "A"),
]

ARC_CHALLENGE_ROWS = [  # every item has 4 choices (one with numeric labels): baseline exactly 1/4
    arc("c0", "Rain comes from?", ["clouds", "soil", "trees", "rocks"], ["A", "B", "C", "D"], "A"),
    arc("c1", "Sound travels through?", ["vacuum", "air", "nothing", "light"], ["1", "2", "3", "4"], "2"),
    arc("c2", "The moon orbits?", ["Mars", "the Sun", "Earth", "Venus"], ["A", "B", "C", "D"], "C"),
]

TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. Which planet is the largest? Jupiter is larger than Mars.\n"
    "Multiple choice questions ask for the letter of the correct answer. Plants need light and water.\n"
    "Whales are mammals; sharks and trout are fish. Ice is solid water, steam is a gas.\n"
)


@pytest.fixture(scope="module")
def tok():
    return RustBPETokenizer.train_from_iterator([TRAIN_TEXT] * 20, VOCAB)


def write_parquet(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def make_hub(root, mmlu=MMLU_ROWS, easy=ARC_EASY_ROWS, challenge=ARC_CHALLENGE_ROWS):
    """The three test splits in the hub mirror layout <root>/<owner>/<name>/<path>."""
    write_parquet(os.path.join(root, "cais/mmlu/all/test-00000-of-00001.parquet"), mmlu)
    write_parquet(os.path.join(root, "allenai/ai2_arc/ARC-Easy/test-00000-of-00001.parquet"), easy)
    write_parquet(os.path.join(root, "allenai/ai2_arc/ARC-Challenge/test-00000-of-00001.parquet"), challenge)
    return str(root)


def run_step(tmp_path, tok, *extra, out="out"):
    out_dir = tmp_path / out
    tok.save(str(out_dir / NAME / "tokenizer"))
    cli.run_step("chat-eval", ["--out-dir", str(out_dir), "--dataset-name", NAME, *extra])
    return out_dir / NAME / "chat_eval"


def load(folder, label):
    return torch.load(folder / f"{label}.pt")


def expected_prompt(tok, text):
    """The completion prompt of a user message, spelled out by hand."""
    special = tok.encode_special
    return ([special("<|bos|>"), special("<|user_start|>")] + tok.encode(text)
            + [special("<|user_end|>"), special("<|assistant_start|>")])


TAIL = "\nRespond only with the letter of the correct answer."
ABCD = [65, 66, 67, 68]  # byte tokens of "A".."D": single letters are never merged away
DIGITS = [49, 50, 51, 52]  # "1".."4"


def test_mmlu_four_choices(tmp_path, tok):
    out = run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "hub"), "--skip-upload")
    task = load(out, "MMLU")
    assert task["task_type"] == "categorical" and task["label"] == "MMLU"
    assert task["num_examples"] == 4 and task["random_baseline"] == 0.25
    seqs = task["sequences"]
    # shuffled order: file rows 3, 2, 1, 0
    first = expected_prompt(tok, "Multiple Choice question: Largest planet?\n"
                                 "- Mars=A\n- Venus=B\n- Earth=C\n- Jupiter=D\n" + TAIL)
    assert seqs[0]["tokens"] == first
    assert seqs[0]["answer_pos"] == len(first) - 1
    assert seqs[0]["tokens"][seqs[0]["answer_pos"]] == tok.encode_special("<|assistant_start|>")
    last = expected_prompt(tok, "Multiple Choice question: What is 2+2?\n- 3=A\n- 4=B\n- 5=C\n- 6=D\n" + TAIL)
    assert seqs[3]["tokens"] == last
    assert [s["gold"] for s in seqs] == [3, 2, 0, 1]
    assert [s["example_idx"] for s in seqs] == [0, 1, 2, 3]
    assert all(s["letter_token_ids"] == ABCD for s in seqs)


def test_arc_three_five_choices_and_numeric_labels(tmp_path, tok):
    out = run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "hub"), "--skip-upload")
    task = load(out, "ARC-Easy")
    seqs = task["sequences"]
    # shuffled order: e4, e2, e3, e1, e0
    assert [s["letter_token_ids"] for s in seqs] == [ABCD, ABCD + [69], DIGITS, ABCD[:3], ABCD]
    assert [s["gold"] for s in seqs] == [0, 4, 2, 2, 1]
    assert [s["example_idx"] for s in seqs] == [0, 1, 2, 3, 4]
    assert seqs[1]["tokens"] == expected_prompt(
        tok, "Multiple Choice question: Which is warm?\n- snow=A\n- ice=B\n- hail=C\n- sleet=D\n- sun=E\n" + TAIL)
    assert seqs[2]["tokens"] == expected_prompt(
        tok, "Multiple Choice question: How many legs has a cat?\n- two=1\n- three=2\n- four=3\n- six=4\n" + TAIL)
    assert seqs[3]["tokens"] == expected_prompt(
        tok, "Multiple Choice question: Ice is?\n- gas=A\n- liquid=B\n- solid=C\n" + TAIL)
    assert all(s["answer_pos"] == len(s["tokens"]) - 1 for s in seqs)
    # mixed choice counts: mean of 1/k over the items, in order
    assert task["random_baseline"] == (1 / 4 + 1 / 5 + 1 / 4 + 1 / 3 + 1 / 4) / 5
    assert task["random_baseline"] == pytest.approx(77 / 300)
    # every item has 4 choices (A-D or 1-4): exactly 1/4
    challenge = load(out, "ARC-Challenge")
    assert challenge["random_baseline"] == 0.25 and challenge["num_examples"] == 3
    assert [s["letter_token_ids"] for s in challenge["sequences"]] == [ABCD, DIGITS, ABCD]
    assert [s["gold"] for s in challenge["sequences"]] == [2, 1, 0]


def test_config_json(tmp_path, tok):
    out = run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "hub"), "--skip-upload")
    config = json.loads((out / "config.json").read_text())
    assert config == {
        "max_seq_len": 2048,
        "bos_id": VOCAB - 9,  # the specials come after the 391 byte/merge tokens
        "tokenizer_fingerprint": tok.fingerprint(),
        "source": {"hf_mirror": str(tmp_path / "hub")},
        "tasks": [
            {"label": "MMLU", "file": "MMLU.pt", "task_type": "categorical", "num_examples": 4,
             "random_baseline": 0.25, "num_skipped": 0},
            {"label": "ARC-Easy", "file": "ARC-Easy.pt", "task_type": "categorical", "num_examples": 5,
             "random_baseline": (1 / 4 + 1 / 5 + 1 / 4 + 1 / 3 + 1 / 4) / 5, "num_skipped": 0},
            {"label": "ARC-Challenge", "file": "ARC-Challenge.pt", "task_type": "categorical", "num_examples": 3,
             "random_baseline": 0.25, "num_skipped": 0},
        ],
    }
    assert sorted(os.listdir(out)) == ["ARC-Challenge.pt", "ARC-Easy.pt", "MMLU.pt", "config.json", "manifest.json"]


def test_over_long_items_are_skipped_and_counted(tmp_path, tok, capsys):
    long_question = "Which of these long words " + "Jupiter and Mars " * 200 + "?"
    easy = [dict(row) for row in ARC_EASY_ROWS]
    easy[1] = arc("e1", long_question, ["gas", "liquid", "solid"], ["A", "B", "C"], "C")  # the 3-choice item
    easy[2] = arc("e2", long_question, ["a", "b", "c", "d", "e"], ["A", "B", "C", "D", "E"], "E")  # the 5-choice
    # an over-long item's letters are never used, so a multi-token label there is no error
    easy.append(arc("e5", long_question, ["x", "y"], ["A1", "B1"], "A1"))
    out = run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "hub", easy=easy), "--skip-upload",
                   "--max-seq-len", "300")
    task = load(out, "ARC-Easy")
    # permutation(6) = [3, 2, 5, 4, 1, 0]: e3, e2 (skip), e5 (skip), e4, e1 (skip), e0
    assert task["num_examples"] == 3
    assert [s["example_idx"] for s in task["sequences"]] == [0, 3, 5]
    assert [s["gold"] for s in task["sequences"]] == [2, 0, 1]
    # the kept items all have 4 choices: the baseline is over kept items only
    assert task["random_baseline"] == 0.25
    assert "ARC-Easy: 6 items, 3 kept, 3 skipped" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["max_seq_len"] == 300 and config["tasks"][1]["num_skipped"] == 3


def test_max_seq_len_boundary(tok):
    items = chat_eval.arc_items([ARC_CHALLENGE_ROWS[0]])
    n = len(chat_eval.tokenize_task(tok, "T", items, 10_000)[0]["sequences"][0]["tokens"])
    payload, skipped = chat_eval.tokenize_task(tok, "T", items + items, n)  # exactly max_seq_len: kept
    assert (payload["num_examples"], skipped) == (2, 0)
    with pytest.raises(FlagError, match=rf"all 2 T items are longer than {n - 1} tokens \(--max-seq-len\)"):
        chat_eval.tokenize_task(tok, "T", items + items, n - 1)


def test_conversation_is_the_question_then_the_gold_letter():
    items = chat_eval.mmlu_items(MMLU_ROWS) + chat_eval.arc_items(ARC_EASY_ROWS)
    conversations = [chat_eval.conversation(item) for item in items]
    assert conversations[0]["messages"] == [
        {"role": "user", "content": "Multiple Choice question: What is 2+2?\n- 3=A\n- 4=B\n- 5=C\n- 6=D\n\n"
                                    "Respond only with the letter of the correct answer."},
        {"role": "assistant", "content": "B"}]
    assert conversations[7]["messages"][1] == {"role": "assistant", "content": "3"}  # ARC e3, numeric labels


def test_multi_token_letter_is_an_error(tmp_path, tok):
    easy = ARC_EASY_ROWS + [arc("bad-label", "Odd labels?", ["yes", "no"], ["A", "B1"], "A")]
    with pytest.raises(InputError, match=r"answer letter 'B1' encodes to 2 tokens.* \(ARC item bad-label\)"):
        run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "hub", easy=easy), "--skip-upload")


def test_wrong_answer_key_is_an_error(tmp_path, tok):
    challenge = ARC_CHALLENGE_ROWS + [arc("Mercury_123", "Which?", ["a", "b", "c", "d"], ["A", "B", "C", "D"], "E")]
    with pytest.raises(InputError, match=r"answerKey 'E' is not one of the labels .* \(ARC item Mercury_123\)"):
        run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "hub", challenge=challenge), "--skip-upload")


def test_bad_mmlu_rows_are_errors():
    bad_answer = MMLU_ROWS[:2] + [dict(MMLU_ROWS[2], answer=4)]
    with pytest.raises(InputError, match=r"answer must be an int 0-3, got 4 \(MMLU test row 2 \(subject 'sci'\)\)"):
        chat_eval.mmlu_items(bad_answer)
    with pytest.raises(InputError, match=r"expected exactly 4 string choices.* \(MMLU test row 0 "):
        chat_eval.mmlu_items([dict(MMLU_ROWS[0], choices=["3", "4", "5"])])
    with pytest.raises(InputError, match=r"3 choice texts but 2 labels .*\(ARC item e9\)"):
        chat_eval.arc_items([arc("e9", "?", ["a", "b", "c"], ["A", "B"], "A")])


def test_loads_through_the_hub(tmp_path, tok, file_server, monkeypatch):
    mirror_out = run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "hub"), "--skip-upload")
    make_hub(tmp_path / "served")
    monkeypatch.setenv("HF_ENDPOINT", file_server.url)
    monkeypatch.setenv("STACKS_DATA_CACHE", str(tmp_path / "cache"))
    hub_out = run_step(tmp_path, tok, "--skip-upload", out="hub_out")
    assert "/api/datasets/allenai/ai2_arc/tree/main/ARC-Challenge" in file_server.requests
    assert "/datasets/cais/mmlu/resolve/main/all/test-00000-of-00001.parquet" in file_server.requests
    assert (tmp_path / "cache/hub/allenai/ai2_arc/ARC-Easy/test-00000-of-00001.parquet").is_file()
    for name in ["MMLU.pt", "ARC-Easy.pt", "ARC-Challenge.pt"]:
        assert (hub_out / name).read_bytes() == (mirror_out / name).read_bytes(), name
    hub_config, mirror_config = (json.loads((o / "config.json").read_text()) for o in (hub_out, mirror_out))
    assert hub_config.pop("source") == {"hub": file_server.url}  # where the inputs came from
    assert mirror_config.pop("source") == {"hf_mirror": str(tmp_path / "hub")}
    assert hub_config == mirror_config


def test_upload(tmp_path, tok, hub):
    out = run_step(tmp_path, tok, "--hf-mirror", make_hub(tmp_path / "mirror"), "--hf-user", "me")
    # this step's files and its manifest, not the tokenizer or lock files beside them
    assert sorted(repo_files(hub, "me/ds")) == [f"chat_eval/{n}" for n in (
        "ARC-Challenge.pt", "ARC-Easy.pt", "MMLU.pt", "config.json", "manifest.json")]
    assert repo_files(hub, "me/ds") == published_files(out.parent)


def test_upload_without_user_fails_before_work(tmp_path, tok, monkeypatch):
    monkeypatch.delenv("HF_USER", raising=False)
    with pytest.raises(FlagError, match="--hf-user"):
        run_step(tmp_path, tok, "--hf-mirror", str(tmp_path / "nothing-here"))
    assert not (tmp_path / "out" / NAME / "chat_eval").exists()

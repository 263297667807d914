"""SFT sources: each task's conversation (hand-written expected values) and its tokens and mask."""

import random
import re

import pyarrow as pa
import pytest

from stacks_data.sources import sft as S
from stacks_data.errors import InputError
from stacks_data.tokenizer import RustBPETokenizer

TEXT = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether? Multiple Choice question: Respond only with the letter. "
        "Spell the word: banana. Let me spell it letter by letter, keeping a running count. Python agrees. ") * 20


@pytest.fixture(scope="module")
def tok():
    return RustBPETokenizer.train_from_iterator([TEXT], 400)


def expected(tok, segments):
    """(ids, mask) of hand-listed segments: a special token name or a text, with its mask value."""
    ids, mask = [], []
    for item, m in segments:
        piece = [tok.encode_special(item)] if item.startswith("<|") else tok.encode(item)
        ids += piece
        mask += [m] * len(piece)
    return ids, mask


# ---------------------------------------------------------------------------------------------- SmolTalk

def test_smoltalk_with_system_message_renders_and_masks(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Sum 2+2"},
        {"role": "assistant", "content": "4"},
    ]
    conversation = S.smoltalk_conversation(messages)
    assert conversation == {"messages": messages}
    assert tok.render_conversation(conversation) == expected(tok, [
        ("<|bos|>", 0), ("<|user_start|>", 0), ("Be brief.\n\nHi", 0), ("<|user_end|>", 0),
        ("<|assistant_start|>", 0), ("Hello!", 1), ("<|assistant_end|>", 1),
        ("<|user_start|>", 0), ("Sum 2+2", 0), ("<|user_end|>", 0),
        ("<|assistant_start|>", 0), ("4", 1), ("<|assistant_end|>", 1),
    ])


def test_smoltalk_from_arrow_payload(tok):
    """The payload shipped to workers is an Arrow slice of list<struct{role, content}>."""
    array = pa.array([[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                      [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]])
    out = list(S.conversations(S.smoltalk_conversation, array, None))
    assert out == [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                   {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}]


@pytest.mark.parametrize("messages, why", [
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "message 0: expected role 'user'"),
    ([{"role": "user", "content": "a"}], "at least 2"),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "a"}], "at least 2"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": None}], "message 1: expected"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "message 1: expected role 'assistant'"),
    ([{"role": "system", "content": "s"}, {"role": "system", "content": "t"}, {"role": "user", "content": "a"},
      {"role": "assistant", "content": "b"}], "message 1: expected role 'user'"),
    (None, "expected a list"),
])
def test_smoltalk_invalid(messages, why):
    with pytest.raises(S.Invalid, match=re.escape(why)):
        S.smoltalk_conversation(messages)


# ---------------------------------------------------------------------------------------------- MMLU

def test_mmlu_conversation_and_mask(tok):
    row = {"question": "2+2?", "subject": "", "choices": ["3", "4", "5", "6"], "answer": 1}
    conversation = S.mmlu_conversation(row)
    user = "Multiple Choice question: 2+2?\n- 3=A\n- 4=B\n- 5=C\n- 6=D\n\nRespond only with the letter of the correct answer."
    assert conversation == {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "B"}]}
    assert tok.render_conversation(conversation) == expected(tok, [
        ("<|bos|>", 0), ("<|user_start|>", 0), (user, 0), ("<|user_end|>", 0),
        ("<|assistant_start|>", 0), ("B", 1), ("<|assistant_end|>", 1),
    ])


@pytest.mark.parametrize("row, why", [
    ({"question": "q", "choices": ["a", "b", "c"], "answer": 0}, "exactly 4"),
    ({"question": "q", "choices": ["a", "b", "c", "d", "e"], "answer": 0}, "exactly 4"),
    ({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 4}, "answer must be an int 0-3"),
    ({"question": None, "choices": ["a", "b", "c", "d"], "answer": 0}, "question"),
    (None, "empty"),
])
def test_mmlu_invalid(row, why):
    with pytest.raises(S.Invalid, match=why):
        S.mmlu_conversation(row)


# ---------------------------------------------------------------------------------------------- GSM8K

def test_gsm8k_parts_with_annotations(tok):
    answer = "May: 48/2 = <<48/2=24>>24 clips.\nTotal <<48+24=72>>72\n#### 72"
    assert S.gsm8k_parts(answer) == [
        {"type": "text", "text": "May: 48/2 = "},
        {"type": "python", "text": "48/2"}, {"type": "python_output", "text": "24"},
        {"type": "text", "text": "24 clips.\nTotal "},
        {"type": "python", "text": "48+24"}, {"type": "python_output", "text": "72"},
        {"type": "text", "text": "72\n#### 72"},
    ]
    conversation = S.gsm8k_conversation({"question": "How many?", "answer": answer})
    assert conversation["messages"][0] == {"role": "user", "content": "How many?"}
    assert tok.render_conversation(conversation) == expected(tok, [
        ("<|bos|>", 0), ("<|user_start|>", 0), ("How many?", 0), ("<|user_end|>", 0),
        ("<|assistant_start|>", 0), ("May: 48/2 = ", 1),
        ("<|python_start|>", 1), ("48/2", 1), ("<|python_end|>", 1),
        ("<|output_start|>", 0), ("24", 0), ("<|output_end|>", 0),
        ("24 clips.\nTotal ", 1),
        ("<|python_start|>", 1), ("48+24", 1), ("<|python_end|>", 1),
        ("<|output_start|>", 0), ("72", 0), ("<|output_end|>", 0),
        ("72\n#### 72", 1), ("<|assistant_end|>", 1),
    ])


def test_gsm8k_parts_edge_cases():
    # no annotation: one text part
    assert S.gsm8k_parts("She has 5.\n#### 5") == [{"type": "text", "text": "She has 5.\n#### 5"}]
    # annotation first and last: empty text parts around it are kept; split at the LAST "="
    assert S.gsm8k_parts("<<a=b=3>>") == [
        {"type": "text", "text": ""}, {"type": "python", "text": "a=b"},
        {"type": "python_output", "text": "3"}, {"type": "text", "text": ""},
    ]
    # no "=" inside: the whole inside is the expression, empty result
    assert S.gsm8k_parts("x <<5*3>> y") == [
        {"type": "text", "text": "x "}, {"type": "python", "text": "5*3"},
        {"type": "python_output", "text": ""}, {"type": "text", "text": " y"},
    ]


# ---------------------------------------------------------------------------------------------- CustomJSON

def test_custom_json_file_and_conversation(tmp_path, tok):
    path = tmp_path / "identity.jsonl"
    good = '[{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A small model."}]'
    path.write_text(good + "\n\n" + '[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]\n'
                    + "{not json\n")
    source = S.custom_json(str(path))
    assert source.n == 3  # the blank line is not a row
    out = list(S.conversations(S.custom_json_conversation, source.payload([0, 1, 2]), None))
    assert out[0] == {"messages": [{"role": "user", "content": "Who are you?"},
                                   {"role": "assistant", "content": "A small model."}]}
    assert isinstance(out[1], S.Invalid) and "message 0: expected role 'user'" in str(out[1])
    assert isinstance(out[2], S.Invalid) and "not valid JSON" in str(out[2])
    # rows are named by their line in the file
    assert source.where(1) == f"CustomJSON row 1 ({path} line 3)"
    assert tok.render_conversation(out[0]) == expected(tok, [
        ("<|bos|>", 0), ("<|user_start|>", 0), ("Who are you?", 0), ("<|user_end|>", 0),
        ("<|assistant_start|>", 0), ("A small model.", 1), ("<|assistant_end|>", 1),
    ])


# ---------------------------------------------------------------------------------------------- words, spelling

def test_load_words_strips_crlf_and_drops_blanks(tmp_path):
    path = tmp_path / "words.txt"
    path.write_bytes(b"a\r\naardvark\r\n\r\n  zebra \r\nyak")
    assert S.load_words(str(path)) == ["a", "aardvark", "zebra", "yak"]
    path.write_bytes(b"\r\n\n")
    with pytest.raises(InputError, match="empty"):
        S.load_words(str(path))


def test_spelling_words_shuffle_once_with_seed_42():
    words = [f"w{i}" for i in range(20)]
    bee, simple = S.spelling_words(words)
    reference = list(words)
    random.Random(42).shuffle(reference)
    assert bee == words and simple == reference and simple != words


def test_simple_spelling(tok):
    conversation = S.simple_spelling_conversation(7, (None, ["apple"]))
    assert conversation == {"messages": [{"role": "user", "content": "Spell the word: apple"},
                                         {"role": "assistant", "content": "apple:a,p,p,l,e"}]}
    assert tok.render_conversation(conversation) == expected(tok, [
        ("<|bos|>", 0), ("<|user_start|>", 0), ("Spell the word: apple", 0), ("<|user_end|>", 0),
        ("<|assistant_start|>", 0), ("apple:a,p,p,l,e", 1), ("<|assistant_end|>", 1),
    ])
    # item i: Random(i).choice over the (shuffled) list; val items use seed 10_000_000 + i
    words = [f"word{i}" for i in range(1000)]
    for seed in (0, 1, 5, 10_000_003):
        word = random.Random(seed).choice(words)
        assert S.simple_spelling_conversation(seed, (None, words))["messages"][0]["content"] == f"Spell the word: {word}"
    assert S.simple_spelling(3, "val").payload([0, 2]) == [10_000_000, 10_000_002]
    assert S.simple_spelling(3, "train").payload([0, 2]) == [0, 2]


def test_spelling_bee_hand_checked(tok):
    seed = next(s for s in range(1000)
                if S.spelling_bee_conversation(s, (["banana"], None))["messages"][1]["content"][1]["text"].endswith("('a')"))
    conversation = S.spelling_bee_conversation(seed, (["banana"], None))
    user, assistant = conversation["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert "banana" in user["content"]
    assert assistant["content"] == [
        {"type": "text", "text": "Let me spell 'banana' letter by letter, keeping a running count of 'a':\n"
                                 "1:b (0)\n2:a (1)\n3:n (1)\n4:a (2)\n5:n (2)\n6:a (3)\n\n"
                                 "That gives 3 by hand. Let me check with Python:\n\n"},
        {"type": "python", "text": "'banana'.count('a')"},
        {"type": "python_output", "text": "3"},
        {"type": "text", "text": "\n\nPython agrees: 'a' appears 3 times in 'banana'.\n\n#### 3"},
    ]
    parts = assistant["content"]
    assert tok.render_conversation(conversation) == expected(tok, [
        ("<|bos|>", 0), ("<|user_start|>", 0), (user["content"], 0), ("<|user_end|>", 0),
        ("<|assistant_start|>", 0), (parts[0]["text"], 1),
        ("<|python_start|>", 1), ("'banana'.count('a')", 1), ("<|python_end|>", 1),
        ("<|output_start|>", 0), ("3", 0), ("<|output_end|>", 0),
        (parts[3]["text"], 1), ("<|assistant_end|>", 1),
    ])


def test_spelling_bee_counts_and_variety():
    words = ["strawberry", "kayak", "a", "mississippi", "rhythm"]
    questions, templates_seen = set(), set()
    letters_outside = 0
    for seed in range(600):
        a = S.spelling_bee_conversation(seed, (words, None))
        assert a == S.spelling_bee_conversation(seed, (words, None))  # a pure function of the seed
        user, parts = a["messages"][0]["content"], a["messages"][1]["content"]
        assert [p["type"] for p in parts] == ["text", "python", "python_output", "text"]
        word, letter = re.fullmatch(r"'(\w+)'\.count\('(\w)'\)", parts[1]["text"]).groups()
        assert word in words and word in user and letter in user
        assert parts[2]["text"] == str(word.count(letter))
        assert parts[3]["text"].endswith(f"#### {word.count(letter)}")
        assert parts[0]["text"].count("\n") >= len(word)  # one line per letter
        letters_outside += letter not in word
        questions.add(user)
        templates_seen.update(t for t in S.SPELLING_BEE_QUESTIONS
                              if re.fullmatch(re.escape(t).replace(r"\{letter\}", ".*").replace(r"\{word\}", ".*")
                                              + r"\??", user, re.IGNORECASE | re.DOTALL))
    assert 0 < letters_outside < 150  # mostly letters of the word, sometimes any letter
    assert len(templates_seen) >= 40
    assert any(q.endswith("?") for q in questions) and any(not q.endswith("?") for q in questions)
    assert any('"' in q for q in questions) and any("'" in q for q in questions)
    assert any(q == q.lower() and q != q.upper() for q in questions)  # lowercased questions occur


def test_spelling_bee_questions():
    assert 45 <= len(S.SPELLING_BEE_QUESTIONS) == len(set(S.SPELLING_BEE_QUESTIONS))
    for template in S.SPELLING_BEE_QUESTIONS:
        assert template.count("{letter}") == 1 and template.count("{word}") == 1
        assert not template.endswith("?")
    # several languages: some non-ASCII questions
    assert sum(not t.isascii() for t in S.SPELLING_BEE_QUESTIONS) >= 8
    # casing changes the words but never the placeholders
    assert S._recase("How many {letter} in {word}", str.upper) == "HOW MANY {letter} IN {word}"

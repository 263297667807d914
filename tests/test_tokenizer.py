import copyreg
import hashlib
import pickle

import pytest
import tiktoken

from fixtures import make_docs
from stacks_data.errors import InputError
from stacks_data.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, RustBPETokenizer, capped_texts, check_vocab_size


@pytest.fixture(scope="module")
def tok():
    return RustBPETokenizer.train_from_iterator(make_docs(300, seed=1), 400)


def test_training_layout(tok):
    assert tok.get_vocab_size() == 400
    assert tok.enc.name == "rustbpe"
    ranks = len(tok.spec["mergeable_ranks"])
    assert ranks == 400 - len(SPECIAL_TOKENS)
    # the special tokens take the ids right after the ranks, in the documented order, <|bos|> first
    assert [tok.encode_special(s) for s in SPECIAL_TOKENS] == list(range(ranks, 400))
    assert tok.get_bos_token_id() == ranks
    assert tok.get_special_tokens() == set(SPECIAL_TOKENS)
    assert tok.spec["pat_str"] == SPLIT_PATTERN


def test_training_is_deterministic(tok):
    again = RustBPETokenizer.train_from_iterator(make_docs(300, seed=1), 400)
    assert pickle.dumps(again.enc) == pickle.dumps(tok.enc)
    assert again.fingerprint() == tok.fingerprint()
    other = RustBPETokenizer.train_from_iterator(make_docs(300, seed=2), 400)
    assert other.fingerprint() != tok.fingerprint()


def test_encode_decode(tok):
    text = "Übermut und Größe, 서울의 봄 <|bos|>\n\tcode = [1, 22];"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # special-token strings inside text are ordinary text
    assert tok.get_bos_token_id() not in ids
    bos, end = tok.get_bos_token_id(), tok.encode_special("<|assistant_end|>")
    assert tok.encode("hi", prepend="<|bos|>", append=end) == [bos] + tok.encode("hi") + [end]
    assert tok.encode(["a b", "c"], prepend=bos) == [[bos] + tok.encode("a b"), [bos] + tok.encode("c")]
    assert tok("a b") == tok.encode("a b")
    assert tok.id_to_token(tok.encode("a")[0]) == "a"
    with pytest.raises(TypeError):
        tok.encode(42)


def test_save_and_load(tok, tmp_path):
    tok.save(tmp_path)
    with open(tmp_path / "tokenizer.pkl", "rb") as f:
        assert isinstance(pickle.load(f), tiktoken.Encoding)
    loaded = RustBPETokenizer.from_directory(tmp_path)
    assert loaded.fingerprint() == tok.fingerprint()
    assert loaded.get_bos_token_id() == tok.get_bos_token_id()
    with pytest.raises(InputError, match="run step 1 first"):
        RustBPETokenizer.from_directory(tmp_path / "missing")
    sha = hashlib.sha256((tmp_path / "tokenizer.pkl").read_bytes()).hexdigest()
    assert RustBPETokenizer.from_directory(tmp_path, sha256=sha).fingerprint() == tok.fingerprint()
    with pytest.raises(InputError, match="not the one config.json names"):
        RustBPETokenizer.from_directory(tmp_path, sha256="0" * 64)


class CreatesAFile:
    """A pickle payload that, unpickled the plain way, creates a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("payload", ["reduce", "nested", "registered name", "wrong keys", "not bytes"])
def test_loading_refuses_anything_but_an_encoding_of_plain_data(tok, tmp_path, payload):
    victim = tmp_path / "pwned"
    if payload == "reduce":
        data = pickle.dumps(CreatesAFile(str(victim)))
    elif payload == "nested":  # a real Encoding's state with the payload hidden inside
        data = _encoding_pickle({**tok.spec, "name": CreatesAFile(str(victim))})
    elif payload == "registered name":  # tiktoken pickles its registered encodings by name
        data = _encoding_pickle("gpt2")
    elif payload == "wrong keys":
        data = _encoding_pickle({**tok.spec, "extra": 1})
    else:
        data = _encoding_pickle({**tok.spec, "mergeable_ranks": {"a": 0}})
    (tmp_path / "tokenizer.pkl").write_bytes(data)
    with pytest.raises(InputError) as error:
        RustBPETokenizer.from_directory(tmp_path)
    assert not victim.exists()
    assert "do not load this file" in str(error.value) and str(tmp_path / "tokenizer.pkl") in str(error.value)


def _encoding_pickle(state) -> bytes:
    """The bytes pickle writes for a tiktoken.Encoding whose __getstate__ returns `state`."""
    enc = tiktoken.Encoding("x", pat_str=r"\S+", mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={})
    enc.__reduce_ex__ = lambda protocol: (copyreg.__newobj__, (tiktoken.Encoding,), state)
    return pickle.dumps(enc, protocol=4)


def test_from_pretrained_uses_endoftext(monkeypatch, tok):
    enc = tiktoken.Encoding("fake", pat_str=tok.spec["pat_str"], mergeable_ranks=tok.spec["mergeable_ranks"],
                            special_tokens={"<|endoftext|>": 391})
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: enc if name == "gpt2" else None)
    assert RustBPETokenizer.from_pretrained("gpt2").get_bos_token_id() == 391


def test_token_byte_lengths(tok):
    lengths = tok.token_byte_lengths()
    assert len(lengths) == tok.get_vocab_size()
    for i in range(len(tok.spec["mergeable_ranks"])):
        assert lengths[i] == len(tok.enc.decode_single_token_bytes(i))
    assert all(lengths[tok.encode_special(s)] == 0 for s in SPECIAL_TOKENS)
    # a lone UTF-8 lead byte is one byte, although it decodes to a 3-byte replacement character
    lead = tok.spec["mergeable_ranks"][b"\xe2"]
    assert lengths[lead] == 1 and len(tok.decode([lead]).encode()) == 3


def test_render_conversation(tok):
    conversation = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add 2+3"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Sure: "},
            {"type": "python", "text": "2+3"},
            {"type": "python_output", "text": "5"},
            {"type": "text", "text": "It is 5."},
        ]},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "Welcome"},
    ]}
    s = tok.encode_special
    e = tok.encode
    expected = [
        ([s("<|bos|>"), s("<|user_start|>")], 0), (e("Be brief.\n\nAdd 2+3"), 0), ([s("<|user_end|>")], 0),
        ([s("<|assistant_start|>")], 0), (e("Sure: "), 1), ([s("<|python_start|>")], 1), (e("2+3"), 1),
        ([s("<|python_end|>")], 1), ([s("<|output_start|>")], 0), (e("5"), 0), ([s("<|output_end|>")], 0),
        (e("It is 5."), 1), ([s("<|assistant_end|>")], 1),
        ([s("<|user_start|>")], 0), (e("Thanks"), 0), ([s("<|user_end|>")], 0),
        ([s("<|assistant_start|>")], 0), (e("Welcome"), 1), ([s("<|assistant_end|>")], 1),
    ]
    ids, mask = tok.render_conversation(conversation)
    assert ids == [i for piece, _ in expected for i in piece]
    assert mask == [m for piece, m in expected for _ in piece]
    # truncation cuts both lists
    ids5, mask5 = tok.render_conversation(conversation, max_tokens=5)
    assert ids5 == ids[:5] and mask5 == mask[:5]
    # the batched form gives the same as one at a time
    assert tok.render_conversations([conversation, conversation], max_tokens=5) == [(ids5, mask5)] * 2

    completion = tok.render_for_completion(conversation)
    head, _ = tok.render_conversation({"messages": conversation["messages"][:-1]}, max_tokens=None)
    assert completion == head + [s("<|assistant_start|>")]


def test_render_conversation_errors(tok):
    def render(messages):
        return tok.render_conversation({"messages": messages})

    with pytest.raises(ValueError, match="message 1: expected role 'assistant', got 'user'"):
        render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="message 2: expected role 'assistant'"):
        render([{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="message 0: expected role 'user'"):
        render([{"role": "assistant", "content": "a"}])
    with pytest.raises(ValueError, match="message 1 part 0: unknown part type 'image'"):
        render([{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "image", "text": ""}]}])
    with pytest.raises(ValueError, match="message 0: content must be a string"):
        render([{"role": "user", "content": ["a"]}])
    with pytest.raises(ValueError, match="last message must be the assistant"):
        tok.render_for_completion({"messages": [{"role": "user", "content": "a"}]})


def test_too_little_text_for_the_vocab_is_an_error():
    with pytest.raises(InputError, match="only supports a vocab of"):
        RustBPETokenizer.train_from_iterator(["abab abab"], 1000)


def test_vocab_size_limits():
    check_vocab_size(265)
    check_vocab_size(65536)
    check_vocab_size(65537)  # uint32 shards hold it (--token-dtype uint32)
    with pytest.raises(ValueError, match="below 265"):
        check_vocab_size(264)
    with pytest.raises(ValueError, match="uint32"):
        check_vocab_size(2**32 + 1)


def test_capped_texts():
    assert list(capped_texts(["abcdef", "gh", "ijkl", "mn"], doc_cap=4, max_chars=5)) == ["abcd", "gh"]
    assert list(capped_texts(["ab", "cd"], doc_cap=10, max_chars=100)) == ["ab", "cd"]


def test_seed_style_import():
    # the seed's consumers put data/ on sys.path and import the tokenizer module directly (conftest does)
    from tokenizer import RustBPETokenizer as FromScript
    assert FromScript is RustBPETokenizer

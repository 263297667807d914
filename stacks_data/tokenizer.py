"""
GPT-4-style byte-level BPE tokenizer: trained with rustbpe, encoded with tiktoken.

The tokenizer *is* a tiktoken.Encoding; this module only adds training, saving, the special tokens of
the chat format and conversation rendering. Same API as nanochat's RustBPETokenizer, so code written
against that keeps working.
"""

import hashlib
import io
import os
import pickle
import sys
from typing import Iterable, Iterator

import tiktoken

from stacks_data.dataset import layout, published
from stacks_data.dataset.binfile import MAX_VOCAB
from stacks_data.encoder import TiktokenEncoder, exact_encode, make_encoder
from stacks_data.errors import InputError, UserError
from stacks_data.dataset.files import write_bytes

# GPT-4's split pattern, except numbers are split in groups of 1-2 digits (not 1-3): with a small
# vocab, spending merges on every 3-digit number is wasteful.
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

SPECIAL_TOKENS = [
    "<|bos|>",  # every document starts with this one
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",  # assistant calls the python tool
    "<|output_start|>", "<|output_end|>",  # the tool's output, shown to the assistant
]
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

TOKENIZER_FILE = "tokenizer.pkl"


class RustBPETokenizer:
    """A thin layer over a tiktoken.Encoding.

    `spec` is the plain data the Encoding was built from (name, pat_str, mergeable_ranks,
    special_tokens) when we built it: it identifies the tokenizer (fingerprint) and lets other
    encoders load the same vocabulary, without reaching into tiktoken's private fields.
    """

    def __init__(self, enc: tiktoken.Encoding, bos_token: str, spec: dict | None = None):
        self.enc = enc
        self.spec = spec
        self.bos_token_id = enc.encode_single_token(bos_token)
        self.special_ids = {name: enc.encode_single_token(name) for name in enc.special_tokens_set}
        self.encoder = TiktokenEncoder(enc)  # what encodes texts in bulk: see use_encoder

    def use_encoder(self, name: str) -> "RustBPETokenizer":
        """Encode in bulk with `name` (stacks_data.encoder.ENCODERS): the same ids, another speed."""
        self.encoder = make_encoder(self.spec, name)
        return self

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_spec(cls, spec: dict) -> "RustBPETokenizer":
        return cls(tiktoken.Encoding(**spec), "<|bos|>", spec)

    @classmethod
    def train_from_iterator(cls, texts: Iterable[str], vocab_size: int) -> "RustBPETokenizer":
        """Train on an iterator of texts; vocab_size counts the special tokens too."""
        import rustbpe  # only training needs it

        check_vocab_size(vocab_size)
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(iter(texts), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
        # keep the ranks in the order rustbpe returns them: the pickled Encoding is then a pure
        # function of the training data, so its hash identifies it
        mergeable_ranks = {bytes(k): v for k, v in trainer.get_mergeable_ranks()}
        offset = len(mergeable_ranks)
        if offset + len(SPECIAL_TOKENS) != vocab_size:
            # rustbpe stops when no pair is left to merge: a smaller vocab than asked would break
            # every consumer that trusts --vocab-size (and a later rerun would refuse it)
            raise InputError(f"the training text only supports a vocab of {offset + len(SPECIAL_TOKENS)}, "
                             f"not {vocab_size}", "tokenizer training text",
                             "feed more text (more shards, a larger --max-chars) or lower --vocab-size")
        return cls.from_spec({
            "name": "rustbpe",
            "pat_str": trainer.get_pattern(),
            "mergeable_ranks": mergeable_ranks,
            "special_tokens": {name: offset + i for i, name in enumerate(SPECIAL_TOKENS)},
        })

    @classmethod
    def from_directory(cls, tokenizer_dir: str, sha256: str | None = None) -> "RustBPETokenizer":
        """Load <dir>/tokenizer.pkl safely (see load_encoding_spec); with `sha256`, check the file's hash."""
        path = os.path.join(tokenizer_dir, TOKENIZER_FILE)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise InputError("no tokenizer", path, f"run step 1 first (stacks-data {layout.PRETRAIN.name}): it trains one") from None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise InputError("the tokenizer is not the one config.json names (tokenizer_sha256 differs)", path,
                             "re-download the dataset or rerun step 1")
        spec = load_encoding_spec(data, path)
        return cls(encoding_from_spec(spec, path), "<|bos|>", spec)  # its values checked too

    @classmethod
    def for_work(cls, tokenizer_dir: str, encoder: str) -> "RustBPETokenizer":
        """from_directory with the bulk encoder `encoder`: what a step's worker processes load."""
        return cls.from_directory(tokenizer_dir).use_encoder(encoder)

    @classmethod
    def from_pretrained(cls, tiktoken_name: str) -> "RustBPETokenizer":
        """One of tiktoken's encodings (gpt2, cl100k_base, ...); their BOS is <|endoftext|>."""
        return cls(tiktoken.get_encoding(tiktoken_name), "<|endoftext|>")

    def save(self, tokenizer_dir: str):
        """Pickle the Encoding to <dir>/tokenizer.pkl (atomically); returns its FileRecord."""
        os.makedirs(tokenizer_dir, exist_ok=True)
        return write_bytes(os.path.join(tokenizer_dir, TOKENIZER_FILE), [pickle.dumps(self.enc)])

    # ---------------------------------------------------------------- basic API

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_special_tokens(self) -> set[str]:
        return self.enc.special_tokens_set

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def id_to_token(self, id: int) -> str:
        return self.enc.decode([id])

    def encode_special(self, text: str) -> int:
        return self.enc.encode_single_token(text)

    def _special_id(self, token: str | int) -> int:
        return token if isinstance(token, int) else self.encode_special(token)

    def encode(self, text, prepend=None, append=None):
        """Encode a string (-> list[int]) or a list of strings (-> list[list[int]]) as ordinary text.

        prepend/append: a special token's name or an id, added to every sequence.
        """
        head = [] if prepend is None else [self._special_id(prepend)]
        tail = [] if append is None else [self._special_id(append)]
        if isinstance(text, str):
            return head + exact_encode(self.enc, text) + tail
        if isinstance(text, list):
            return [head + row + tail for row in self.encode_batch(text)]
        raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ordinary-text ids of many texts, by the bulk encoder (one call, one flat buffer)."""
        ids, offsets = self.encoder.encode_batch(texts)
        ids, offsets = ids.tolist(), offsets.tolist()
        return [ids[offsets[i]:offsets[i + 1]] for i in range(len(texts))]

    __call__ = encode

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)

    # ---------------------------------------------------------------- facts about the vocab

    def token_byte_lengths(self, exact: bool = True) -> list[int]:
        """Per token id, how many bytes it stands for (0 for special tokens), for bits-per-byte.

        exact: the raw bytes of the token. Otherwise the UTF-8 length of its decoded string, the way
        nanochat and the seed's training code count (a partial UTF-8 sequence decodes to U+FFFD, 3
        bytes), so that bits-per-byte compares with numbers computed their way.
        """
        special_ids = set(self.special_ids.values())
        return [0 if i in special_ids else
                len(self.enc.decode_single_token_bytes(i)) if exact else len(self.enc.decode([i]).encode("utf-8"))
                for i in range(self.enc.n_vocab)]

    def fingerprint(self) -> str:
        """sha256 of what defines the encoding: pattern, ranks and special tokens."""
        h = hashlib.sha256()
        h.update(self.spec["pat_str"].encode())
        for token, rank in sorted(self.spec["mergeable_ranks"].items(), key=lambda kv: kv[1]):
            h.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
        for name, i in sorted(self.spec["special_tokens"].items(), key=lambda kv: kv[1]):
            h.update(i.to_bytes(4, "little") + name.encode())
        return h.hexdigest()

    # ---------------------------------------------------------------- chat format

    def render_conversation(self, conversation: dict, max_tokens: int | None = 2048):
        """Tokenize one {"messages": [...]} conversation -> (ids, mask); mask 1 = supervised."""
        return self.render_conversations([conversation], max_tokens=max_tokens)[0]

    def render_conversations(self, conversations: list[dict], max_tokens: int | None = 2048):
        """render_conversation for many conversations: all their texts go to the bulk encoder in one call."""
        plans = [conversation_plan(c) for c in conversations]
        ids, offsets = self.encoder.encode_batch([item for plan in plans for item, _ in plan if isinstance(item, str)])
        ids, offsets = ids.tolist(), offsets.tolist()
        out, text = [], 0
        for plan in plans:
            conversation_ids, mask = [], []
            for item, m in plan:
                if isinstance(item, str):
                    piece = ids[offsets[text]:offsets[text + 1]]
                    text += 1
                    conversation_ids += piece
                    mask += [m] * len(piece)
                else:
                    conversation_ids.append(self.special_ids[item.name])
                    mask.append(m)
            if max_tokens is not None:
                conversation_ids, mask = conversation_ids[:max_tokens], mask[:max_tokens]
            out.append((conversation_ids, mask))
        return out

    def render_for_completion(self, conversation: dict) -> list[int]:
        """Prompt for the assistant's reply: drop the last (assistant) message, open a new one."""
        return self.render_for_completions([conversation])[0]

    def render_for_completions(self, conversations: list[dict]) -> list[list[int]]:
        """render_for_completion for many conversations, encoded in one bulk call."""
        prompts = []
        for conversation in conversations:
            messages = conversation["messages"]
            if not messages or messages[-1].get("role") != "assistant":
                raise ValueError("render_for_completion: the last message must be the assistant's")
            prompts.append({"messages": messages[:-1]})
        start = self.encode_special("<|assistant_start|>")
        return [ids + [start] for ids, _ in self.render_conversations(prompts, max_tokens=None)]


class Special:
    """A special token inside a conversation plan (a plain str there is text to encode)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def conversation_plan(conversation: dict) -> list[tuple[str | Special, int]]:
    """The flat list of (text or Special, mask) a conversation renders to, validated: the one check of
    a conversation's roles and contents (the SFT sources use it too, on each row as they read it).

    Kept apart from encoding: what a conversation renders to, apart from how text is encoded.
    """
    messages = conversation.get("messages") if isinstance(conversation, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError("conversation must be a dict with a non-empty 'messages' list")
    if messages[0].get("role") == "system":
        # the chat format has no system role: fold it into the first user message
        if len(messages) < 2 or messages[1].get("role") != "user":
            raise ValueError(f"message 1: expected role 'user' after a system message, got "
                             f"{messages[1].get('role') if len(messages) > 1 else None!r}")
        first = dict(messages[1])
        first["content"] = _string_content(messages[0], 0) + "\n\n" + _string_content(messages[1], 1)
        messages = [first] + messages[2:]
        index_offset = 1  # error messages name indices of the original list
    else:
        index_offset = 0

    plan = [(Special("<|bos|>"), 0)]
    for i, message in enumerate(messages):
        where = i + index_offset
        role = message.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"message {where}: expected role {expected!r}, got {role!r}")
        if role == "user":
            plan += [(Special("<|user_start|>"), 0), (_string_content(message, where), 0),
                     (Special("<|user_end|>"), 0)]
            continue
        plan.append((Special("<|assistant_start|>"), 0))
        content = message.get("content")
        if isinstance(content, str):
            plan.append((content, 1))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                plan += _assistant_part(part, where, j)
        else:
            raise ValueError(f"message {where}: assistant content must be a string or a list of parts")
        plan.append((Special("<|assistant_end|>"), 1))
    return plan


def _string_content(message: dict, index: int) -> str:
    content = message.get("content")
    if not isinstance(content, str):
        raise ValueError(f"message {index}: content must be a string, got {type(content).__name__}")
    return content


def _assistant_part(part, index: int, j: int) -> list[tuple[str | Special, int]]:
    kind = part.get("type") if isinstance(part, dict) else None
    text = part.get("text") if isinstance(part, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"message {index} part {j}: expected a dict with a string 'text'")
    if kind == "text":
        return [(text, 1)]
    if kind == "python":
        return [(Special("<|python_start|>"), 1), (text, 1), (Special("<|python_end|>"), 1)]
    if kind == "python_output":
        # tool output comes from the interpreter at inference time: not supervised
        return [(Special("<|output_start|>"), 0), (text, 0), (Special("<|output_end|>"), 0)]
    raise ValueError(f"message {index} part {j}: unknown part type {kind!r}")


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab size {vocab_size} is below {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    if vocab_size > MAX_VOCAB:
        raise ValueError(f"vocab size {vocab_size} does not fit the uint32 tokens of .bin files (max {MAX_VOCAB})")


# ------------------------------------------------------------------------------------ safe loading

_SPEC_TYPES = {"name": str, "pat_str": str, "mergeable_ranks": dict, "special_tokens": dict}


class _EncodingState:
    """Stands in for tiktoken.core.Encoding while unpickling: it only keeps the state it is given."""

    def __setstate__(self, state):
        self.state = state


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # the only global a pickled Encoding names; everything else (os.system, builtins.eval, ...) is
        # refused here, before it is looked up, so no object of it is ever built
        if (module, name) == ("tiktoken.core", "Encoding"):
            return _EncodingState
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a tokenizer never does")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference, which a tokenizer never does")


def load_encoding_spec(data: bytes, path: str) -> dict:
    """The plain data of a pickled tiktoken.Encoding, read without running anything the pickle says.

    A pickle can call any function on load. This reads one that names no global but
    tiktoken.core.Encoding, captures the state it would have been built from, checks that it is
    plain data of the expected types, and only then is an Encoding built from it (by the caller).
    """
    refuse = "do not load this file: regenerate it with step 1 or re-download the dataset"
    try:
        obj = _SafeUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError...: all mean "not a tokenizer"
        raise InputError(f"not a safe tokenizer pickle: {e}", path, refuse) from None
    state = getattr(obj, "state", None) if isinstance(obj, _EncodingState) else None
    if not isinstance(state, dict) or set(state) != set(_SPEC_TYPES) or not all(
            isinstance(state[k], t) for k, t in _SPEC_TYPES.items()):
        raise InputError("not a pickled tiktoken.Encoding of plain data", path, refuse)
    if not all(isinstance(k, bytes) and isinstance(v, int) for k, v in state["mergeable_ranks"].items()) or \
            not all(isinstance(k, str) and isinstance(v, int) for k, v in state["special_tokens"].items()):
        raise InputError("the tokenizer's ranks or special tokens are not plain bytes/str -> int", path, refuse)
    return state


def capped_texts(texts: Iterable[str], doc_cap: int, max_chars: int) -> Iterator[str]:
    """Training texts: each cut to doc_cap characters, stopping once more than max_chars were fed."""
    fed = 0
    for text in texts:
        text = text[:doc_cap]
        fed += len(text)
        yield text
        if fed > max_chars:
            return


# ------------------------------------------------------------------------------------ a stranger's tokenizer
# what steps 2-4 and verify require of a tokenizer.pkl beyond its plain types (published.py checks the rest)


def check_encoding_spec(spec: dict, path: str) -> None:
    """Plain-typed tokenizer data whose values a tiktoken Encoding of ours cannot take: InputError."""
    shown = published.printable(path)
    ranks, special = spec["mergeable_ranks"], spec["special_tokens"]
    ids = list(ranks.values()) + list(special.values())
    why = None
    if not ranks or len(ranks) < 256:
        why = f"{len(ranks)} mergeable ranks (a byte-level BPE has at least 256)"
    elif any(type(i) is not int or not 0 <= i < MAX_VOCAB for i in ids):
        why = f"a token id outside 0..{MAX_VOCAB - 1}"
    elif len(set(ids)) != len(ids):
        why = "two tokens share an id"
    elif missing := [t for t in SPECIAL_TOKENS if t not in special]:
        why = f"special token(s) {missing} missing"
    if why:
        raise InputError(f"not a usable tokenizer: {why}", shown, published.REFUSE)


def encoding_from_spec(spec: dict, path: str):
    """tiktoken.Encoding(**spec) for a checked spec; InputError naming the file when tiktoken refuses it."""
    check_encoding_spec(spec, path)
    try:
        return tiktoken.Encoding(**spec)
    except Exception as e:  # a bad regex (ValueError), ...
        raise InputError(f"not a usable tokenizer: tiktoken refuses it ({published.printable(str(e))[:200]})",
                         published.printable(path), published.REFUSE) from None


# the sample published.tokenizer_problem has a tokenizer encode, in a child process with a time limit
ENCODE_SAMPLE = "Hello world! 123 naïve café, 서울. <|bos|>\n\n  x = 1"


def encode_sample(path: str) -> None:
    """In the child of tokenizer_problem: load and encode; one line on stderr and exit 1 on failure."""
    try:
        tok = RustBPETokenizer.from_directory(os.path.dirname(path))
        ids = tok.encode(ENCODE_SAMPLE, prepend="<|bos|>")
        if tok.decode(ids[1:]) != ENCODE_SAMPLE:
            raise InputError("does not decode what it encodes", path, published.REFUSE)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # what tiktoken raises on values it cannot take
        print(f"error: not a usable tokenizer: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)

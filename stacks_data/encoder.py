"""
Exact ordinary encoding of many texts at once: tiktoken's encode_ordinary, id for id, on the hot paths.

Two encoders give the same ids:
- `tiktoken`, the reference;
- `fastokens` (pinned), about 3x faster per core (PCRE2 split, Rust BPE, one flat buffer per batch).
  It is trusted only as far as it is checked: a self-check on a torture set before any work, and a
  deterministic sample of documents (1 in SAMPLE_EVERY) re-encoded with tiktoken as it runs; a batch
  with a mismatch is encoded again with tiktoken (the output stays tiktoken's) and counted.

Both survive what tiktoken's regex engine cannot: a run of ~1M whitespace characters overflows its
backtracking stack (a Rust panic, which is a BaseException), fastokens gives up near 10M. There the
exact fallback does the same work another way: the split with the `regex` package and tiktoken's BPE
per piece (tiktoken's own `_encode_only_native_bpe`), identical to tiktoken on real text (tested).
"""

import base64
import os
import sys

# one worker process per core: neither fastokens' BPE pool nor rayon's may start threads of their own
# (read at the first encode, so setting them when this module loads is early enough)
os.environ.setdefault("FASTOKENS_BPE_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import regex  # noqa: E402
import tiktoken  # noqa: E402

ENCODERS = ("fastokens", "tiktoken")
SAMPLE_EVERY = 256
# tiktoken's regex engine overflows on whitespace runs of ~1M characters; documents with a run this
# long go straight to the fallback (a panic would still be caught, but prints a Rust backtrace)
LONG_RUN = 200_000
_LONG_WHITESPACE = regex.compile(r"\s{%d}" % LONG_RUN)


def exact_encode(enc: tiktoken.Encoding, text: str, encode=None):
    """encode(text) (enc.encode_ordinary or a variant of it), for every text: the fallback where
    tiktoken's regex engine cannot."""
    try:
        return _exact_encode(enc, text, encode)
    except UnicodeEncodeError:
        # lone surrogates (JSON can hold them: "\ud83d"): encode_ordinary replaces them, so do we
        return _exact_encode(enc, text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), encode)


def _exact_encode(enc: tiktoken.Encoding, text: str, encode=None):
    if len(text) >= LONG_RUN and _LONG_WHITESPACE.search(text):
        return enc._encode_only_native_bpe(text)
    try:
        return (encode or enc.encode_ordinary)(text)
    except (KeyboardInterrupt, SystemExit):
        raise
    except UnicodeEncodeError:
        raise
    except BaseException:  # pyo3 PanicException / "Max stack size exceeded for backtracking"
        return enc._encode_only_native_bpe(text)


def _flat(parts: list) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    ids = np.concatenate([np.asarray(p, np.uint32) for p in parts]) if parts else np.empty(0, np.uint32)
    return ids, offsets


class TiktokenEncoder:
    name = "tiktoken"

    def __init__(self, enc: tiktoken.Encoding):
        self.enc = enc
        self.mismatches = 0  # never: it is the reference

    def encode_batch(self, texts: list[str], first_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(ids uint32, offsets int64 of len(texts) + 1): text i is ids[offsets[i]:offsets[i + 1]]."""
        return _flat([self._one(t) for t in texts])

    def _one(self, text: str):
        return exact_encode(self.enc, text, self._buffer)

    def _buffer(self, text: str) -> np.ndarray:
        # encode_ordinary, but handing back a buffer: no Python int per token
        return self.enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())


class FastokensEncoder:
    """fastokens, checked against tiktoken as it runs (see the module docstring)."""

    name = "fastokens"

    def __init__(self, spec: dict):
        import fastokens

        self.reference = TiktokenEncoder(tiktoken.Encoding(**spec))
        ranks = "".join(f"{base64.b64encode(token).decode()} {rank}\n"
                        for token, rank in sorted(spec["mergeable_ranks"].items(), key=lambda kv: kv[1]))
        # from_tiktoken reads a rank file: an in-memory one; no special tokens, so no text can become one
        fd = os.memfd_create("ranks")
        try:
            os.write(fd, ranks.encode())
            self.fast = fastokens.Tokenizer.from_tiktoken(f"/proc/self/fd/{fd}", pattern=spec["pat_str"],
                                                          special_tokens={})
        finally:
            os.close(fd)
        self.mismatches = 0

    def encode_batch(self, texts: list[str], first_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """As TiktokenEncoder.encode_batch; texts whose index (first_index + i) is a multiple of
        SAMPLE_EVERY are re-encoded with tiktoken, and a mismatch returns tiktoken's ids for the batch."""
        try:
            ids, offsets = self.fast.encode_batch_flat(texts)
            ids, offsets = np.frombuffer(ids, "<u4"), np.frombuffer(offsets, "<u8").astype(np.int64)
        except ValueError:  # its match limit (a ~10M whitespace run): that batch the reference way
            return self.reference.encode_batch(texts)
        for i in range(-first_index % SAMPLE_EVERY, len(texts), SAMPLE_EVERY):
            if not np.array_equal(ids[offsets[i]:offsets[i + 1]], self.reference._one(texts[i])):
                self.mismatches += 1
                print(f"warning: fastokens and tiktoken encode a document differently ({texts[i][:60]!r}...): "
                      "its batch is encoded with tiktoken; please report it (--encoder tiktoken avoids fastokens)",
                      file=sys.stderr)
                return self.reference.encode_batch(texts)
        return ids, offsets


def make_encoder(spec: dict, name: str):
    """The encoder `name` for the tokenizer `spec` (its plain data: see RustBPETokenizer.spec)."""
    if name == "tiktoken":
        return TiktokenEncoder(tiktoken.Encoding(**spec))
    return FastokensEncoder(spec)


def checked_encoder_name(spec: dict, name: str) -> str:
    """`name`, unless it fails the self-check on this tokenizer: then, loudly, "tiktoken"."""
    failed = self_check(make_encoder(spec, name))
    if failed:
        print(f"warning: {name} encodes {len(failed)} of the self-check texts differently from tiktoken "
              f"(e.g. {failed[0][:40]!r}): using tiktoken for this run; please report it", file=sys.stderr)
        return "tiktoken"
    return name


def torture_texts() -> list[str]:
    """What stresses a split pattern: long runs of each character class and of their boundaries,
    scripts, combining marks, CRLF runs, digit runs, contractions in every case, emoji."""
    runs = [" ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "-", "=", "+-", "0", "7", "a", "é", "中", "😀", "'s",
            "\u0301", "\u200d", "\x0b", "\u2028", "١", "Ⅻ", "x y"]
    texts = [unit * n for unit in runs for n in (1, 2, 3, 7, 100, 5000)]
    texts += [f"{a * 50}{b * 50}" for a in (" ", "\n", "a", "1", "-", "中") for b in (" ", "\n", "a", "1", "-", "中")]
    texts += ["I'M", "i'm", "You'RE", "they'Ve", "it'S", "we'LL", "he'd", "'s'S'd'D", "ľ'S", "İ's", "x’s",
              "e\u0301te\u0301", "\u0301\u0301a", "👩\u200d👩\u200d👧 family", "🇫🇷🇩🇪", "a\r\n\r\n\r\nb",
              "  \n\n  x", "12345678901234567890", "3.14159, 2.71828; 1e-10", "Übermut und Größe, 서울의 봄",
              "<|bos|> <|endoftext|> are plain text here", "def f(x):\n\treturn x  # comment\n", ""]
    return texts


def self_check(encoder) -> list[str]:
    """The torture texts on which `encoder` and tiktoken disagree (none, for a trustworthy encoder)."""
    if isinstance(encoder, TiktokenEncoder):
        return []
    texts = torture_texts()
    ids, offsets = encoder.fast.encode_batch_flat(texts)
    ids, offsets = np.frombuffer(ids, "<u4"), np.frombuffer(offsets, "<u8")
    return [t for i, t in enumerate(texts)
            if not np.array_equal(ids[offsets[i]:offsets[i + 1]], encoder.reference._one(t))]

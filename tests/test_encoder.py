"""The bulk encoders are tiktoken, id for id; documents tiktoken's regex engine cannot take are encoded
exactly anyway; a panic in a worker is one line naming what it was working on."""

import glob
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import test_core_eval
from conftest import ROOT
from fixtures import make_docs, write_corpus
from stacks_data import encoder as E
from stacks_data.dataset.binfile import read_bin
from stacks_data.cli import run_step
from stacks_data.errors import InputError, WorkerError
from stacks_data.executors import ordered_map, run_item
from stacks_data.sources.parquet import iter_texts
from stacks_data.tokenizer import RustBPETokenizer

SHARED_CORPUS = sorted(glob.glob(os.path.join(ROOT, "..", "shared", "data", "corpus", "*.parquet")))
MILLION_SPACES = " " * 1_000_000


def stress_texts(n: int, seed: int) -> list[str]:
    """Generated text that stresses the split pattern: runs of each character class, mixed scripts,
    combining marks, CRLF runs, digit runs, contractions in every case, emoji."""
    rng = random.Random(seed)
    units = [" ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "-", "--", "+-", "=", "0", "12", "345", "a", "The",
             "é", "e\u0301", "\u0301", "中文", "서울", "Ωμέγα", "Привет", "😀", "👩\u200d👩\u200d👧", "'s", "'S", "'ll",
             "'LL", "'Re", "’s", "١٢٣", "Ⅻ", "½", "\x0b", "\u2028", "<|bos|>", "<|endoftext|>", ".", "...", "$", "#"]
    texts = []
    for _ in range(n):
        parts = [rng.choice(units) * rng.choice([1, 1, 1, 2, 3, 8, 40, 300]) for _ in range(rng.randint(1, 60))]
        texts.append("".join(parts))
    return texts


@pytest.fixture(scope="module")
def tok():
    docs = make_docs(400, seed=4) + stress_texts(200, seed=5)
    if SHARED_CORPUS:  # the real thing when it is there: a 4096 vocab on one real shard
        docs = [t for _, texts in iter_texts(SHARED_CORPUS[0]) for t in texts]
        return RustBPETokenizer.train_from_iterator((d[:10_000] for d in docs), 4096)
    return RustBPETokenizer.train_from_iterator(docs, 1000)


def real_texts() -> list[str]:
    """The shared corpus when present (16k real documents), else generated ones."""
    if SHARED_CORPUS:
        return [t for path in SHARED_CORPUS for _, texts in iter_texts(path) for t in texts]
    return make_docs(2000, seed=7)


def split(ids, offsets):
    return [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


def test_fallback_equals_tiktoken_on_real_and_stress_text(tok):
    texts = real_texts()[:4000] + stress_texts(500, seed=1)
    for text in texts:
        assert tok.enc._encode_only_native_bpe(text) == tok.enc.encode_ordinary(text)


@pytest.mark.parametrize("texts", ["real", "stress"])
def test_fastokens_equals_tiktoken(tok, texts):
    texts = real_texts() if texts == "real" else stress_texts(3000, seed=2) + E.torture_texts()
    fast, ref = E.make_encoder(tok.spec, "fastokens"), E.make_encoder(tok.spec, "tiktoken")
    got, want = fast.encode_batch(texts), ref.encode_batch(texts)
    assert split(*got) == split(*want) and fast.mismatches == 0
    assert want[1][-1] > len(texts)  # something was encoded
    assert [t for t in split(*want)][:50] == [tok.enc.encode_ordinary(t) for t in texts[:50]]


@pytest.mark.parametrize("name", E.ENCODERS)
def test_lone_surrogates_are_encoded_as_tiktoken_does(tok, name):
    # JSON inputs (CORE rows, identity conversations) can hold them: "\ud83d"; encode_ordinary replaces them
    texts = ["hello \ud83d world", "plain", "x\udc00" + " " * (E.LONG_RUN + 5) + "y"]
    assert split(*E.make_encoder(tok.spec, name).encode_batch(texts)) == [tok.enc.encode_ordinary(t) for t in texts]


@pytest.mark.parametrize("doc", [MILLION_SPACES, "x" + MILLION_SPACES + "y", "\t" * 1_000_000,
                                 " \n" * 600_000, "-" * 300_000, "7" * 300_000])
def test_pathological_documents_are_encoded_exactly(tok, doc):
    want = tok.enc._encode_only_native_bpe(doc)  # the exact fallback, checked against tiktoken above
    for name in E.ENCODERS:
        ids, offsets = E.make_encoder(tok.spec, name).encode_batch(["hi", doc, "there"])
        assert split(ids, offsets)[1] == want, name
    assert E.exact_encode(tok.enc, doc) == want


@pytest.mark.slow  # a 10-million-character document (~15 s): in CI's slow step, the README's command stays short
def test_beyond_fastokens_match_limit(tok):
    doc = "a" + " " * 10_200_000 + "b"  # fastokens gives up near 10M: its batch goes the exact fallback's way
    ids, offsets = E.make_encoder(tok.spec, "fastokens").encode_batch(["hi", doc])
    assert split(ids, offsets) == [tok.enc.encode_ordinary("hi"), tok.enc._encode_only_native_bpe(doc)]


def test_tiktoken_itself_panics_where_the_fallback_does_not(tok):
    with pytest.raises(BaseException) as panic:
        tok.enc.encode_ordinary(MILLION_SPACES)
    assert not isinstance(panic.value, Exception) or "stack" in str(panic.value).lower()


def test_a_panic_in_a_worker_is_one_line_naming_the_item(tok, tmp_path):
    tok.save(str(tmp_path))
    items = ["fine", MILLION_SPACES, "fine too"]
    with pytest.raises(WorkerError) as error:  # a real pyo3 PanicException, raised in another process
        list(ordered_map(_raw_encode, items, 2, setup=(RustBPETokenizer.from_directory, (str(tmp_path),)),
                         describe=lambda text: f"document of {len(text):,} characters"))
    assert str(error.value).startswith("PanicException: ")
    assert "(while processing document of 1,000,000 characters)" in str(error.value)
    assert "\n" not in str(error.value) and "Traceback" in error.value.traceback


def _raw_encode(text):
    from stacks_data.executors import worker_state
    return worker_state().enc.encode_ordinary(text)  # tiktoken without the fallback


def test_a_worker_killed_is_one_line_naming_the_item():
    # the OOM killer's way: SIGKILL, no exception in the worker, a broken pool in the main process
    with pytest.raises(WorkerError) as error:
        list(ordered_map(_killed_on_two, [1, 2, 3], 2, describe=lambda n: f"item {n}"))
    assert "a worker process died" in str(error.value) and "(while processing item " in str(error.value)
    assert "\n" not in str(error.value) and "--num-workers" in str(error.value)


def test_a_pool_started_right_after_a_failed_one_starts():
    # a failed run kills its forkserver; the next pool must start a new one, not reach the dead one
    for _ in range(3):  # before the fix, 23 pools of 40 failed to start
        with pytest.raises(WorkerError) as error:
            list(ordered_map(_fails_on_two, [1, 2, 3], 2))
        assert "ValueError: two" in str(error.value)


def test_a_ctrl_c_while_the_helpers_start_is_not_lost(monkeypatch):
    # the forkserver starts with SIGINT blocked, not ignored: a Ctrl-C meanwhile reaches the run after
    from multiprocessing import forkserver
    start = forkserver.ensure_running

    def interrupted_start():
        os.kill(os.getpid(), signal.SIGINT)
        start()

    monkeypatch.setattr(forkserver, "ensure_running", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        list(ordered_map(_fails_on_two, [1], 2))


def _fails_on_two(n):
    if n == 2:
        raise ValueError("two")
    return n


def _killed_on_two(n):
    if n == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return n


def test_run_item_turns_a_base_exception_into_a_worker_error():
    class Panic(BaseException):
        pass

    def boom(item):
        raise Panic("called `Result::unwrap()` on an `Err` value")

    with pytest.raises(WorkerError, match=r"Panic: called `Result::unwrap\(\)` on an `Err` value"):
        run_item(boom, "x")


def test_a_mismatch_is_reencoded_with_tiktoken_and_counted(tok, monkeypatch, capsys):
    fast = E.make_encoder(tok.spec, "fastokens")
    texts = make_docs(600, seed=3)
    real = fast.fast

    class Wrong:  # fastokens gone wrong on text 256 (a sampled one)
        def encode_batch_flat(self, batch):
            ids, offsets = real.encode_batch_flat(batch)
            ids, offsets = np.frombuffer(ids, "<u4").copy(), np.frombuffer(offsets, "<u8")
            ids[offsets[256]] += 1
            return ids.tobytes(), offsets.tobytes()

    fast.fast = Wrong()
    got = fast.encode_batch(texts)
    assert split(*got) == [tok.enc.encode_ordinary(t) for t in texts] and fast.mismatches == 1
    assert "fastokens and tiktoken encode a document differently" in capsys.readouterr().err
    fast.encode_batch(texts, first_index=1)  # text 256 is not sampled when the batch starts at 1
    assert fast.mismatches == 1


def test_a_failed_self_check_falls_back_to_tiktoken(tok, monkeypatch, capsys):
    assert E.checked_encoder_name(tok.spec, "fastokens") == "fastokens"
    monkeypatch.setattr(E, "self_check", lambda encoder: ["x"])
    assert E.checked_encoder_name(tok.spec, "fastokens") == "tiktoken"
    assert "using tiktoken for this run" in capsys.readouterr().err


def test_workers_start_no_thread_pools(tok, tmp_path):
    tok.save(str(tmp_path))
    code = ("import os\nfrom stacks_data.tokenizer import RustBPETokenizer\n"
            "def threads(): return [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
            "before = threads()\n"
            f"tok = RustBPETokenizer.for_work({str(tmp_path)!r}, 'fastokens')\n"
            "tok.encoder.encode_batch(['word ' * 100_000] * 4 + ['a b'] * 1000)\n"
            "print(len(before), ' '.join(threads()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after = int(out[0]), out[1:]
    # no fastokens pool; at most rayon's one thread for long documents
    assert not [t for t in after if t.startswith("fastokens")] and len(after) <= before + 1


# ---------------------------------------------------------------- every step, with a million spaces


def test_every_step_survives_a_million_spaces(tmp_path):
    parquet = tmp_path / "parquet"
    docs = write_corpus(parquet, num_files=4, docs_per_file=60)
    for index in (0, 2, 3):  # the tokenizer's training shard, a train shard, the val shard
        rows = docs[index][:10] + ["before" + MILLION_SPACES + "after"] + docs[index][10:]
        os.remove(parquet / f"shard_{index:05d}.parquet")
        pq.write_table(pa.table({"text": rows}), parquet / f"shard_{index:05d}.parquet", row_group_size=25)
        docs[index] = rows
    (tmp_path / "baselines").mkdir()
    common = ["--out-dir", str(tmp_path / "out"), "--dataset-name", "ds", "--skip-upload", "--num-workers", "2"]
    run_step("pretrain", ["--parquet-dir", str(parquet), "--num-shards", "4", "--tok-train-shards", "2",
                          "--vocab-size", "320", "--shard-size", "100000", "--baselines-dir",
                          str(tmp_path / "baselines"), *common])
    out = tmp_path / "out" / "ds"
    tok = RustBPETokenizer.from_directory(out / "tokenizer")
    bos = tok.get_bos_token_id()
    val = read_bin(str(out / "val_000000.bin")).tolist()
    assert val == [t for d in docs[3] for t in [bos] + tok.enc._encode_only_native_bpe(d)]

    # CORE: a row whose context holds a million spaces
    rows = test_core_eval.BUNDLE_FILES["lm.jsonl"] + [{"context": "Far" + MILLION_SPACES + "away", "continuation": "x"}]
    test_core_eval.write_bundle(tmp_path / "bundle", test_core_eval.BUNDLE_TASKS, {**test_core_eval.BUNDLE_FILES,
                                                                                   "lm.jsonl": rows})
    run_step("core-eval", ["--eval-bundle", str(tmp_path / "bundle"), "--max-seq-len", "1000000", *common])
    # SFT: an identity conversation with a million spaces
    import test_sft
    test_sft.make_hub(str(tmp_path / "mirror"))
    (tmp_path / "words.txt").write_text("\n".join(test_sft.WORDS))
    (tmp_path / "identity.jsonl").write_text(
        '[{"role": "user", "content": "hi' + MILLION_SPACES + '"}, {"role": "assistant", "content": "hello"}]\n')
    run_step("sft", ["--hf-mirror", str(tmp_path / "mirror"), "--words-file", str(tmp_path / "words.txt"),
                     "--identity-file", str(tmp_path / "identity.jsonl"), "--simple-spelling-size", "5",
                     "--spelling-bee-size", "5", "--max-seq-len", "1000000", *common])
    assert (out / "core_eval" / "manifest.json").exists() and (out / "sft" / "manifest.json").exists()


def test_a_corrupt_data_page_names_the_file_and_row_group(tmp_path):
    parquet = tmp_path / "parquet"
    write_corpus(parquet, num_files=4, docs_per_file=60)
    path = parquet / "shard_00002.parquet"
    metadata = pq.ParquetFile(path).metadata
    column = metadata.row_group(1).column(0)
    data = bytearray(path.read_bytes())
    start = min(o for o in (column.dictionary_page_offset, column.data_page_offset) if o)  # the chunk's first page
    for i in range(column.data_page_offset + 30, start + column.total_compressed_size):  # page bodies, not the footer
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    (tmp_path / "baselines").mkdir()
    with pytest.raises(InputError) as error:
        run_step("pretrain", ["--parquet-dir", str(parquet), "--num-shards", "4", "--tok-train-shards", "2",
                              "--vocab-size", "320", "--num-workers", "2", "--out-dir", str(tmp_path / "out"),
                              "--skip-upload", "--baselines-dir", str(tmp_path / "baselines")])
    assert f"({path} rows 25+)" in str(error.value) and "cannot read row group 1" in str(error.value)


def _double_where(n):
    return 2 * n, os.getpid()


def test_a_started_pool_serves_every_map_of_its_function_then_stops():
    import multiprocessing
    from stacks_data.executors import Executor
    with Executor(2).started(_double_where) as executor:
        first = list(executor.map(_double_where, range(20)))
        second = list(executor.map(_double_where, range(5)))
        assert [n for n, _ in first] == list(range(0, 40, 2)) and [n for n, _ in second] == [0, 2, 4, 6, 8]
        assert {pid for _, pid in second} <= {pid for _, pid in first} != {os.getpid()}  # the same workers
        assert list(executor.map(_fails_on_two, [1])) == [1]  # another function: a pool of its own
    assert not multiprocessing.active_children()


def test_a_started_pool_that_failed_is_not_used_again():
    import multiprocessing
    from stacks_data.executors import Executor
    with Executor(2).started(_fails_on_two) as executor:
        with pytest.raises(WorkerError, match="ValueError: two"):
            list(executor.map(_fails_on_two, [1, 2, 3]))
        with pytest.raises(WorkerError, match="stopped after an error"):
            list(executor.map(_fails_on_two, [1]))
    assert not multiprocessing.active_children()


def test_one_started_worker_is_this_process_set_up_once():
    from stacks_data.executors import Executor, worker_state
    calls = []
    setup = (calls.append, ("set up",))
    with Executor(1).started(_state_of, setup) as executor:
        assert list(executor.map(_state_of, [1, 2], setup=setup)) == [(1, None), (2, None)]  # append's result
        list(executor.map(_state_of, [3], setup=setup))
    assert calls == ["set up"] and worker_state() is None


def _state_of(n):
    from stacks_data.executors import worker_state
    return n, worker_state()


def test_the_forkserver_ignores_ctrl_c_from_its_first_import():
    # preloaded first, before the step's heavy modules (a Ctrl-C there printed a traceback), and light
    import subprocess
    import sys
    code = ("import multiprocessing.forkserver, signal, sys; import stacks_data.sigint_ignored; "
            "print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN, 'numpy' in sys.modules)")
    forkserver = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert forkserver.stdout.split() == ["True", "False"]
    elsewhere = subprocess.run([sys.executable, "-c", code.replace("multiprocessing.forkserver, ", "")],
                               capture_output=True, text=True, check=True)
    assert elsewhere.stdout.split()[0] == "False"  # any other process keeps its Ctrl-C
    from multiprocessing import forkserver
    list(ordered_map(_fails_on_two, [1], 2))
    assert forkserver._forkserver._preload_modules[0] == "stacks_data.sigint_ignored"  # first of the preload

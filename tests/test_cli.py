"""Every user mistake is one line on stderr, found before any work, naming the flag or file and what to do.

Each case runs the real command in a subprocess: its exit code, that stderr is exactly one line
`error: ...` (no traceback) naming the flag / file, and for bad flags that it returned before any
download or training (quickly, and with nothing written).
"""

import os
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import test_core_eval
import test_sft
from fixtures import make_docs, write_corpus
from stacks_data import cli
from stacks_data.tokenizer import RustBPETokenizer

UNRESOLVABLE = "https://no-such-host.invalid"


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A corpus, a dataset with a tokenizer (for steps 2-4), and a few things in the way."""
    root = tmp_path_factory.mktemp("cli")
    write_corpus(root / "corpus", num_files=4)
    RustBPETokenizer.train_from_iterator(make_docs(300, seed=1), 300).save(str(root / "out" / "ds" / "tokenizer"))
    (root / "a-file").write_text("not a folder")
    (root / "blocked" / "ds").mkdir(parents=True)
    (root / "blocked" / "ds" / "tokenizer").write_text("not a folder")
    (root / "bad").mkdir()
    (root / "bad" / "shard_00000.parquet").write_bytes(b"not parquet")
    (root / "bad" / "shard_00001.parquet").write_bytes(b"not parquet")
    (root / "empty").mkdir()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), root / "empty" / "shard_00000.parquet")
    pq.write_table(pa.table({"text": ["one document"] * 50}), root / "empty" / "shard_00001.parquet")
    (root / "nothing").mkdir()
    os.mkdir(os.fsencode(root) + b"/not-utf8-\xff")
    shutil.copytree(root / "out" / "ds" / "tokenizer", root / "damaged" / "ds" / "tokenizer")
    (root / "damaged" / "ds" / "config.json").write_text('{"vocab_size": 30')  # cut short
    for name in ("latin1", "yaml_folder"):
        test_core_eval.write_bundle(root / name, test_core_eval.BUNDLE_TASKS, test_core_eval.BUNDLE_FILES)
    with open(root / "latin1" / "eval_data" / "lm.jsonl", "ab") as f:
        f.write('{"context": "caf\xe9", "continuation": "x"}\n'.encode("latin-1"))
    (root / "yaml_folder" / "core.yaml").unlink()
    (root / "yaml_folder" / "core.yaml").mkdir()
    (root / "words-latin1.txt").write_bytes("apple\ncaf\xe9\n".encode("latin-1"))
    test_sft.make_hub(str(root / "sft-mirror"))
    return root


def pretrain(p, *flags):
    return ["pretrain", "--parquet-dir", f"{p}/corpus", "--out-dir", f"{p}/new", "--skip-upload",
            "--vocab-size", "300", "--num-shards", "4", "--tok-train-shards", "2", *flags]


def step(name, p, *flags):
    return [name, "--out-dir", f"{p}/out", "--dataset-name", "ds", "--skip-upload", *flags]


# (id, argv from the place, extra environment, exit code, what the line must name)
CASES = [
    # step 1: flags alone and together, found before anything is downloaded or trained
    ("num-shards too many", lambda p: pretrain(p, "--num-shards", "5000"), {}, 2, "(--num-shards)"),
    ("shard-size 0", lambda p: pretrain(p, "--shard-size", "0"), {}, 2, "(--shard-size)"),
    ("shard-size negative", lambda p: pretrain(p, "--shard-size", "-5"), {}, 2, "(--shard-size)"),
    ("num-workers 0", lambda p: pretrain(p, "--num-workers", "0"), {}, 2, "(--num-workers)"),
    ("val shard in tokenizer training", lambda p: pretrain(p, "--tok-train-shards", "5", "--num-shards", "3"), {}, 2,
     "(--tok-train-shards)"),
    ("doc-cap negative", lambda p: pretrain(p, "--doc-cap", "-1"), {}, 2, "(--doc-cap)"),
    ("max-chars 0", lambda p: pretrain(p, "--max-chars", "0"), {}, 2, "(--max-chars)"),
    ("vocab too big", lambda p: pretrain(p, "--vocab-size", "70000"), {}, 2, "(--vocab-size)"),
    ("vocab too small", lambda p: pretrain(p, "--vocab-size", "100"), {}, 2, "(--vocab-size)"),
    ("vocab not a number", lambda p: pretrain(p, "--vocab-size", "lots"), {}, 2, "(--vocab-size)"),
    ("unknown flag", lambda p: pretrain(p, "--shards", "3"), {}, 2, "unrecognized arguments: --shards"),
    ("parquet-dir not UTF-8", lambda p: pretrain(p, "--parquet-dir", f"{p}/not-utf8-\udcff"), {}, 2,
     "(--parquet-dir)"),
    ("mistyped parquet-dir", lambda p: pretrain(p, "--parquet-dir", f"{p}/corpsu"), {}, 2, "(--parquet-dir)"),
    ("out-dir is a file", lambda p: pretrain(p, "--out-dir", f"{p}/a-file"), {}, 2, "(--out-dir)"),
    ("unknown corpus", lambda p: pretrain(p, "--corpus", "wikipedia"), {}, 2, "(--corpus)"),
    ("files with a preset corpus", lambda p: pretrain(p, "--files", "*.parquet"), {}, 2, "(--files)"),
    ("base-url not http", lambda p: pretrain(p, "--base-url", "ftp://x"), {}, 2, "(--base-url)"),
    ("dataset-name a path", lambda p: pretrain(p, "--dataset-name", "a/b"), {}, 2, "(--dataset-name)"),
    ("upload without a user", lambda p: [a for a in pretrain(p) if a != "--skip-upload"], {"HF_USER": ""}, 2,
     "(--hf-user)"),
    ("upload to an absent hub, and a bad flag: the flag first", lambda p: [
        *[a for a in pretrain(p, "--shard-size", "0") if a != "--skip-upload"], "--hf-user", "u"],
     {"HF_ENDPOINT": UNRESOLVABLE}, 2, "(--shard-size)"),
    ("tokenizer path is a file", lambda p: pretrain(p, "--out-dir", f"{p}/blocked", "--dataset-name", "ds"), {}, 1,
     "/blocked/ds/tokenizer)"),
    # step 1: inputs and network
    ("bad parquet", lambda p: pretrain(p, "--parquet-dir", f"{p}/bad", "--num-shards", "2", "--out-dir", f"{p}/o1"), {}, 1,
     "/bad/shard_00000.parquet)"),
    ("0-row tokenizer shard", lambda p: pretrain(p, "--parquet-dir", f"{p}/empty", "--num-shards", "2", "--out-dir",
                                                 f"{p}/o2"), {}, 1,
     "the shard has no rows"),
    ("unresolvable host", lambda p: pretrain(p, "--parquet-dir", f"{p}/nothing", "--base-url", UNRESOLVABLE,
                                             "--out-dir", f"{p}/o3"), {}, 1,
     "--parquet-dir DIR"),
    # steps 2-4
    ("core max-seq-len 0", lambda p: step("core-eval", p, "--max-seq-len", "0"), {}, 2, "(--max-seq-len)"),
    ("core missing bundle", lambda p: step("core-eval", p, "--eval-bundle", f"{p}/nope"), {}, 2, "(--eval-bundle)"),
    ("core no tokenizer", lambda p: step("core-eval", p, "--dataset-name", "other"), {}, 1,
     "other/tokenizer/tokenizer.pkl): run step 1 first"),
    ("core row not UTF-8", lambda p: step("core-eval", p, "--eval-bundle", f"{p}/latin1"), {}, 1,
     "/latin1/eval_data/lm.jsonl:4)"),
    ("core.yaml a folder", lambda p: step("core-eval", p, "--eval-bundle", f"{p}/yaml_folder"), {}, 1,
     "/yaml_folder/core.yaml)"),
    ("sft words not UTF-8", lambda p: step("sft", p, "--words-file", f"{p}/words-latin1.txt", "--hf-mirror", f"{p}/sft-mirror"),
     {}, 1, "/words-latin1.txt:2)"),
    ("core bundle offline", lambda p: step("core-eval", p, "--eval-bundle-url", f"{UNRESOLVABLE}/b.zip"), {}, 1,
     "--eval-bundle DIR"),
    ("sft shard-size 0", lambda p: step("sft", p, "--shard-size", "0"), {}, 2, "(--shard-size)"),
    ("sft chunk-size 0", lambda p: step("sft", p, "--chunk-size", "0"), {}, 2, "(--chunk-size)"),
    ("sft negative size", lambda p: step("sft", p, "--spelling-bee-size", "-1"), {}, 2, "(--spelling-bee-size)"),
    ("sft missing words", lambda p: step("sft", p, "--words-file", f"{p}/words.txt"), {}, 2, "(--words-file)"),
    ("sft missing identity", lambda p: step("sft", p, "--identity-file", f"{p}/id.jsonl"), {}, 2,
     "(--identity-file)"),
    ("sft missing mirror", lambda p: step("sft", p, "--hf-mirror", f"{p}/mirror"), {}, 2, "(--hf-mirror)"),
    ("damaged config.json", lambda p: [*step("chat-eval", p), "--out-dir", f"{p}/damaged"], {}, 1,
     "/damaged/ds/config.json)"),
    ("sft hub unreachable", lambda p: step("sft", p), {"HF_ENDPOINT": UNRESOLVABLE}, 1, "--hf-mirror DIR"),
    ("sft offline, no cache", lambda p: step("sft", p), {"HF_HUB_OFFLINE": "1"}, 1, "HF_HUB_OFFLINE is set"),
    ("chat max-seq-len 0", lambda p: step("chat-eval", p, "--max-seq-len", "0"), {}, 2, "(--max-seq-len)"),
    ("chat hub unreachable", lambda p: step("chat-eval", p), {"HF_ENDPOINT": UNRESOLVABLE}, 1, "--hf-mirror DIR"),
]


def run_cli(argv, env, cwd):
    env = {**os.environ, "STACKS_DATA_CACHE": os.path.join(cwd, "cache"), "NANOCHAT_BASE_DIR": os.path.join(cwd, "nb"),
           **env}
    env = {k: v for k, v in env.items() if v != ""}
    t0 = time.time()
    result = subprocess.run([sys.executable, "-m", "stacks_data", *argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=60)
    return result, time.time() - t0


@pytest.mark.parametrize("name, argv, env, code, names", CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_line(place, name, argv, env, code, names):
    result, seconds = run_cli(argv(place), env, str(place))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert names in lines[0]
    assert seconds < 5  # the unreachable hosts included: no retries for a name that does not resolve
    if code == 2:  # bad flags: refused before any download, training or write
        assert seconds < 3 and not (place / "new").exists()
        assert not os.path.exists(place / "out" / "ds" / "core_eval") and not os.path.exists(place / "cache")


def test_version_and_help(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stacks_data", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("stacks-data ")
    # --help shows defaults, keeps the step description's line breaks, and does not import torch
    code = ("import sys; from stacks_data.cli import main\n"
            "try:\n    main(['pretrain', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().endswith("no torch")
    assert "(default: 32768)" in result.stdout and "\n  1. download the tokenizer-training shards" in result.stdout


def test_debug_shows_the_traceback(place):
    argv = pretrain(place, "--parquet-dir", f"{place}/bad", "--num-shards", "2", "--out-dir", f"{place}/o4")
    result, _ = run_cli(argv + ["--debug"], {}, str(place))
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: not a readable parquet file")


@pytest.mark.parametrize("errno_name, message", [("ENOSPC", "no space left on the device"),
                                                 ("EROFS", "the file system is read-only")])
def test_disk_full_and_read_only_are_one_line(place, monkeypatch, capsys, errno_name, message):
    import errno

    def failing_write(path, chunks):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)), path)

    for module in ("dataset.files", "dataset.binfile", "tokenizer"):  # where write_bytes is bound by name
        monkeypatch.setattr(f"stacks_data.{module}.write_bytes", failing_write)
    with pytest.raises(SystemExit) as exit:
        cli.main(pretrain(place, "--out-dir", str(place / f"full-{errno_name}"), "--baselines-dir", str(place)))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 1
    assert err[-1].startswith(f"error: {message} (") and str(place / f"full-{errno_name}") in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_bugs_keep_their_traceback(place, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr("stacks_data.steps.pretrain.step.training_settings", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(pretrain(place, "--out-dir", str(place / "bug")))

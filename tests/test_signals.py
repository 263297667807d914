"""A signal or an error ends every run in seconds (slow: `pytest -m slow`; CI runs it).

For each step with workers, SIGTERM and Ctrl-C (SIGINT to the whole process group, as a terminal sends
it) at a random moment while the workers run, 30 times each: the run ends within 2 s with its exit
code and one line, and no process of its group is left. The same for a worker's error (a corrupt row
group): exit 1, the one error line, no traceback.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import test_chat_eval
import test_core_eval
import test_sft
from fixtures import write_corpus
from test_lifecycle import gone_within, ours
from stacks_data.tokenizer import RustBPETokenizer

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("STACKS_DATA_SIGNAL_TRIALS", "30"))
DEADLINE = 2.0  # seconds from the signal to the end of the run
LINES = {signal.SIGTERM: (143, "terminated: rerun the same command to resume"),
         signal.SIGINT: (130, "interrupted: rerun the same command to resume")}
slowest: dict[str, float] = {}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One folder with the inputs of every step: a corpus, a tokenizer, a CORE bundle, a hub mirror."""
    root = tmp_path_factory.mktemp("signals")
    write_corpus(root / "big", num_files=4, docs_per_file=1500, row_group_size=20)
    (root / "baselines").mkdir()
    tok = RustBPETokenizer.train_from_iterator(test_core_eval.CORPUS * 20 + [test_chat_eval.TRAIN_TEXT] * 20, 420)
    tok.save(str(root / "out" / "ds" / "tokenizer"))
    files = {uri: rows * 400 if isinstance(rows, list) else rows for uri, rows in test_core_eval.BUNDLE_FILES.items()}
    tasks = [dict(t, label=f"{t['label']}{i}") for i in range(4) for t in test_core_eval.BUNDLE_TASKS]
    meta = "Eval Task,Task Category,Random baseline,Description\n" + "".join(f"{t['label']},x,25,y\n" for t in tasks)
    test_core_eval.write_bundle(root / "bundle", tasks, files, meta)
    test_sft.make_hub(str(root / "mirror"), smol_train=(1500, 1500))
    (root / "words.txt").write_text("\n".join(test_sft.WORDS))
    return root


def argv(step: str, root, trial: int) -> list[str]:
    common = ["--num-workers", "2", "--skip-upload"]
    if step == "pretrain":  # a fresh folder each time: tokenizer, then the workers tokenize
        return ["pretrain", "--parquet-dir", str(root / "big"), "--out-dir", str(root / f"pre{trial}"),
                "--dataset-name", "ds", "--num-shards", "4", "--tok-train-shards", "2", "--vocab-size", "320",
                "--shard-size", "1000", "--baselines-dir", str(root / "baselines"), *common]
    if step == "core-eval":
        return ["core-eval", "--out-dir", str(root / "out"), "--dataset-name", "ds", "--eval-bundle",
                str(root / "bundle"), *common]
    return ["sft", "--out-dir", str(root / "out"), "--dataset-name", "ds", "--hf-mirror", str(root / "mirror"),
            "--words-file", str(root / "words.txt"), "--simple-spelling-size", "40000", "--spelling-bee-size", "16000",
            "--chunk-size", "64", *common]


def start(command: list[str], cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stacks_data", *command], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_workers(run: subprocess.Popen) -> None:
    deadline = time.time() + 60
    while len(ours(run.pid)) < 4:  # the run, the forkserver (or the tracker) and two workers
        assert run.poll() is None and time.time() < deadline, run.stderr.read()
        time.sleep(0.02)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("step", ["pretrain", "core-eval", "sft"])
def test_a_signal_ends_the_run_in_seconds(inputs, step, how):
    rng = random.Random(f"{step}{how}")
    signalled = 0
    for trial in range(TRIALS):
        run = start(argv(step, inputs, trial), inputs)
        wait_for_workers(run)
        time.sleep(rng.uniform(0, 0.6))  # a random moment while the workers run
        if run.poll() is not None:  # finished before the signal: not a trial of this
            continue
        sent = time.monotonic()
        os.killpg(run.pid, how) if how == signal.SIGINT else os.kill(run.pid, how)
        try:
            code = run.wait(timeout=DEADLINE + 3)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            pytest.fail(f"{step} trial {trial}: still running {DEADLINE + 3} s after {how.name}")
        took = time.monotonic() - sent
        stderr = run.stderr.read()
        if code == 0:  # it had just finished its work: a signal is then ignored (it would only cut the exit)
            continue
        signalled += 1
        assert gone_within(run.pid, max(0.1, DEADLINE - took)), f"{step} trial {trial}: processes left"
        assert took <= DEADLINE and (code, stderr.strip().splitlines()[-1:]) == (LINES[how][0], [LINES[how][1]]), \
            (trial, took, code, stderr)
        assert "Traceback" not in stderr and stderr.count(LINES[how][1]) == 1, stderr
        slowest[f"{step} {how.name}"] = max(slowest.get(f"{step} {how.name}", 0), took)
        if step == "pretrain":
            shutil.rmtree(inputs / f"pre{trial}", ignore_errors=True)
    assert signalled >= 0.8 * TRIALS  # nearly every trial signals a run in the middle of its work
    print(f"\nslowest exit, {step} {how.name}: {slowest.get(f'{step} {how.name}', 0):.2f} s over {signalled} trials")


def test_a_worker_error_is_one_line_and_ends_the_run(inputs):
    """A corrupt data page in a row group, read by one of two workers: exit 1 with the one error line."""
    bad = inputs / "bad"
    shutil.copytree(inputs / "big", bad)
    path = bad / "shard_00002.parquet"
    column = pq.ParquetFile(path).metadata.row_group(30).column(0)  # a row group in the middle of the file
    data = bytearray(path.read_bytes())
    first_page = min(o for o in (column.dictionary_page_offset, column.data_page_offset) if o)
    for i in range(column.data_page_offset + 30, first_page + column.total_compressed_size):  # page bodies
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    for trial in range(TRIALS):
        command = argv("pretrain", inputs, trial)
        command[command.index("--parquet-dir") + 1] = str(bad)
        run = start(command, inputs)
        try:
            code = run.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            pytest.fail(f"trial {trial}: hangs after the error")
        stderr = run.stderr.read()
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 1 and "shard_00002.parquet" in errors[0], stderr
        assert "Traceback" not in stderr and "\r" not in stderr, stderr
        assert gone_within(run.pid, 2), f"trial {trial}: processes left"
        shutil.rmtree(inputs / f"pre{trial}", ignore_errors=True)

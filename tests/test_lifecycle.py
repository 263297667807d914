"""Output folders stay true under crashes, reruns and concurrent runs, and no process of ours outlives its run.

Crashes are real SIGKILLs at chosen points: the step runs in a subprocess whose file writer kills the
process in the middle of its N-th file (half of it on disk under the temp name), so each point is
hit exactly, whatever the machine's speed.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import test_chat_eval
import test_core_eval
import test_sft
from fixtures import make_docs, write_corpus
from stacks_data.dataset import files
from stacks_data.cli import run_step
from stacks_data.errors import InputError, OutputError
from stacks_data.dataset.folder import DatasetLock, StagedFolder
from stacks_data.tokenizer import RustBPETokenizer


def tree(folder) -> dict:
    """{relative path: bytes} of every file under folder, hidden ones (locks, progress) left out."""
    out = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                path = os.path.join(root, name)
                out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


KILLING_WRITER = textwrap.dedent("""
    import os, signal, sys
    import stacks_data.dataset.files as files
    real, calls = files.write_bytes, [0]

    def write_bytes(path, chunks):
        calls[0] += 1
        if calls[0] == {kill_at}:  # half of this file on disk under its temp name, then SIGKILL
            data = b"".join(bytes(c) for c in chunks)
            with open(path + files.TMP_SUFFIX, "wb") as f:
                f.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, chunks)

    files.write_bytes = write_bytes
    import atexit
    atexit.register(lambda: print(f"writes: {{calls[0]}}", file=sys.stderr))
    import stacks_data.dataset.binfile, stacks_data.tokenizer
    stacks_data.dataset.binfile.write_bytes = stacks_data.tokenizer.write_bytes = write_bytes
    from stacks_data.cli import main
    sys.argv = ["stacks-data"] + {argv!r}
    main()
""")


def run_killed(argv: list[str], kill_at: int, cwd) -> subprocess.CompletedProcess:
    code = KILLING_WRITER.format(kill_at=kill_at, argv=argv)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def count_writes(argv: list[str], cwd) -> int:
    """How many files the command writes (a run that is not killed)."""
    result = run_killed(argv, 0, cwd)
    assert result.returncode == 0, result.stderr
    return int(result.stderr.strip().splitlines()[-1].split()[-1])


# ---------------------------------------------------------------- step 1


@pytest.fixture
def corpus(tmp_path):
    write_corpus(tmp_path / "parquet", num_files=4, docs_per_file=60)
    (tmp_path / "baselines").mkdir()
    return tmp_path


def pretrain_argv(root, out="out", parquet="parquet", *extra):
    return ["pretrain", "--parquet-dir", str(root / parquet), "--out-dir", str(root / out), "--dataset-name", "ds",
            "--num-shards", "4", "--tok-train-shards", "2", "--vocab-size", "320", "--shard-size", "1000",
            "--num-workers", "1", "--skip-upload", "--baselines-dir", str(root / "baselines"), *extra]


@pytest.mark.slow  # a kill matrix: in CI's slow step (the README's test command stays short)
def test_pretrain_killed_anywhere_then_rerun_gives_the_same_bytes(corpus):
    writes = count_writes(pretrain_argv(corpus, "ref"), corpus)  # tokenizer, report, shards + progress, ...
    reference = tree(corpus / "ref" / "ds")
    assert writes > 40
    for kill_at in (1, 2, 3, 4, 5, 9, 20, 33, writes - 3, writes - 2, writes - 1, writes):
        out = f"out{kill_at}"
        result = run_killed(pretrain_argv(corpus, out), kill_at, corpus)
        assert result.returncode == -signal.SIGKILL, result.stderr
        folder = corpus / out / "ds"
        # killed before the end: never a manifest.json (the commit mark) that would call the folder complete
        assert not (folder / "manifest.json").exists()
        run_step("pretrain", pretrain_argv(corpus, out)[1:])
        assert tree(folder) == reference, kill_at
        assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_a_finished_run_says_so_and_changes_nothing(corpus, capsys):
    run_step("pretrain", pretrain_argv(corpus)[1:])
    before = tree(corpus / "out" / "ds")
    capsys.readouterr()
    run_step("pretrain", pretrain_argv(corpus)[1:])
    assert "is complete (same flags and inputs): nothing to do" in capsys.readouterr().out
    assert tree(corpus / "out" / "ds") == before


def test_changed_input_content_is_tokenized_again(corpus):
    run_step("pretrain", pretrain_argv(corpus)[1:])
    # the same names in another folder, one train file with other documents
    os.makedirs(corpus / "other")
    for name in os.listdir(corpus / "parquet"):
        if name.endswith(".parquet"):
            os.link(corpus / "parquet" / name, corpus / "other" / name)
    os.remove(corpus / "other" / "shard_00002.parquet")
    pq.write_table(pa.table({"text": make_docs(60, seed=99)}), corpus / "other" / "shard_00002.parquet",
                   row_group_size=25)
    run_step("pretrain", pretrain_argv(corpus, "out", "other")[1:])
    run_step("pretrain", pretrain_argv(corpus, "ref", "other")[1:])  # a fresh run on those inputs
    got, want = tree(corpus / "out" / "ds"), tree(corpus / "ref" / "ds")
    assert {k: v for k, v in got.items() if k not in ("config.json", "manifest.json")} == \
           {k: v for k, v in want.items() if k not in ("config.json", "manifest.json")}
    assert json.loads(got["config.json"])["train_tokens"] == json.loads(want["config.json"])["train_tokens"]


def test_changed_tokenizer_training_shard_is_refused(corpus):
    run_step("pretrain", pretrain_argv(corpus)[1:])
    before = tree(corpus / "out" / "ds")
    path = corpus / "parquet" / "shard_00000.parquet"  # the tokenizer trains on shard 0
    os.remove(path)
    pq.write_table(pa.table({"text": make_docs(60, seed=98)}), path, row_group_size=25)
    with pytest.raises(OutputError, match=r"training shard\(s\) shard_00000.parquet changed content.*--overwrite"):
        run_step("pretrain", pretrain_argv(corpus)[1:])
    assert tree(corpus / "out" / "ds") == before


def test_overwrite_with_a_new_tokenizer_removes_what_the_old_one_made(corpus):
    folder = corpus / "out" / "ds"
    run_step("pretrain", pretrain_argv(corpus)[1:])
    (folder / "core_eval").mkdir()
    (folder / "core_eval" / "manifest.json").write_text("{}")
    run_step("pretrain", pretrain_argv(corpus, "out", "parquet", "--vocab-size", "330", "--overwrite")[1:])
    assert not (folder / "core_eval").exists()
    assert RustBPETokenizer.from_directory(folder / "tokenizer").get_vocab_size() == 330


# ---------------------------------------------------------------- steps 2-4: published whole or not at all


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """out/ds with a tokenizer, and the inputs of steps 2-4: a CORE bundle, a hub mirror, a word list."""
    monkeypatch.chdir(tmp_path)
    tok = RustBPETokenizer.train_from_iterator(test_core_eval.CORPUS * 20 + [test_chat_eval.TRAIN_TEXT] * 20, 420)
    tok.save(str(tmp_path / "out" / "ds" / "tokenizer"))
    test_core_eval.write_bundle(tmp_path / "bundle", test_core_eval.BUNDLE_TASKS, test_core_eval.BUNDLE_FILES)
    test_sft.make_hub(str(tmp_path / "mirror"))
    test_chat_eval.make_hub(str(tmp_path / "mirror"))
    (tmp_path / "words.txt").write_text("\n".join(test_sft.WORDS))
    return tmp_path


STEPS = {  # step: (sub-folder, flags, flags of a rerun that writes other bytes)
    "core-eval": ("core_eval", ["--eval-bundle", "bundle"], ["--max-seq-len", "40"]),
    "sft": ("sft", ["--hf-mirror", "mirror", "--words-file", "words.txt", "--simple-spelling-size", "40",
                    "--spelling-bee-size", "20", "--shard-size", "300"], ["--max-seq-len", "40"]),
    "chat-eval": ("chat_eval", ["--hf-mirror", "mirror"], ["--max-seq-len", "82"]),
}


def step_argv(step, *extra):
    workers = ["--num-workers", "1"] if step != "chat-eval" else []  # chat eval runs in one process
    return [step, "--out-dir", "out", "--dataset-name", "ds", "--skip-upload", *workers, *STEPS[step][1], *extra]


@pytest.mark.slow  # a kill matrix: in CI's slow step (the README's test command stays short)
@pytest.mark.parametrize("step", STEPS)
def test_killed_anywhere_leaves_the_old_folder_or_the_new_one(dataset, step):
    sub = STEPS[step][0]
    run_step(step, step_argv(step)[1:])
    old = tree(dataset / "out" / "ds" / sub)
    new_argv = step_argv(step, *STEPS[step][2])  # other flags: other bytes
    for kill_at in itertools.count(1):  # killed in its 1st, 2nd, ... write, until a run gets through
        result = run_killed(new_argv, kill_at, dataset)
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert tree(dataset / "out" / "ds" / sub) == old, kill_at  # untouched until the swap
    assert kill_at > 4
    new = tree(dataset / "out" / "ds" / sub)
    assert new != old and sorted(os.listdir(dataset / "out" / "ds")) == sorted(
        [".lock.tokenizer", f".lock.{step}", sub, "tokenizer"])  # no staging folder or temp file left
    # a kill right after the swap's rename cannot be simulated by a write; the swap is one rename(2)


@pytest.mark.parametrize("step", STEPS)
def test_a_failing_rerun_keeps_the_earlier_folder(dataset, step):
    sub = STEPS[step][0]
    run_step(step, step_argv(step)[1:])
    before = tree(dataset / "out" / "ds" / sub)
    if step == "core-eval":  # one bad JSONL row in the last task
        with open(dataset / "bundle" / "eval_data" / "lm.jsonl", "a") as f:
            f.write('{"context": "no continuation"}\n')
    elif step == "sft":  # an assistant speaking first in SmolTalk
        path = dataset / "mirror" / "HuggingFaceTB" / "smol-smoltalk" / "data" / "train-00001-of-00002.parquet"
        rows = pq.read_table(path).column("messages").to_pylist()
        rows[2] = [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "?"}]
        pq.write_table(pa.table({"messages": rows}), path)
    else:  # an ARC answer key that is not a label, in the last task
        rows = [dict(r) for r in test_chat_eval.ARC_CHALLENGE_ROWS]
        rows[1]["answerKey"] = "Z"
        test_chat_eval.write_parquet(
            str(dataset / "mirror" / "allenai/ai2_arc/ARC-Challenge/test-00000-of-00001.parquet"), rows)
    with pytest.raises(InputError):
        run_step(step, step_argv(step, *STEPS[step][2])[1:])
    assert tree(dataset / "out" / "ds" / sub) == before
    assert not [n for n in os.listdir(dataset / "out" / "ds") if n.endswith((".staging", ".old"))]


@pytest.mark.parametrize("step", STEPS)
def test_a_file_where_the_folder_goes_is_one_line_and_stays(dataset, step):
    sub = STEPS[step][0]
    (dataset / "out" / "ds" / sub).write_text("mine")
    with pytest.raises(OutputError, match=r"a file is in the way of an output folder"):
        run_step(step, step_argv(step)[1:])
    assert (dataset / "out" / "ds" / sub).read_text() == "mine"
    assert not [n for n in os.listdir(dataset / "out" / "ds") if n.endswith(".staging")]


def test_staged_folder_survives_a_crash_between_the_two_fallback_renames(tmp_path, monkeypatch):
    # where the system has no atomic exchange, publishing renames x -> .x.old, then .x.staging -> x
    monkeypatch.setattr("stacks_data.dataset.folder._exchange", lambda a, b: False)
    (tmp_path / ".x.old").mkdir()  # killed right after the first rename: no x, the old folder aside
    (tmp_path / ".x.old" / "a").write_text("old")
    with StagedFolder(str(tmp_path), "x") as folder:  # the next run puts the old folder back first
        assert (tmp_path / "x" / "a").read_text() == "old" and not (tmp_path / ".x.old").exists()
        (tmp_path / ".x.staging" / "a").write_text("new")
        folder.publish("test", {}, [files.hash_file(str(tmp_path / ".x.staging" / "a"))])
    assert (tmp_path / "x" / "a").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["x"]


# ---------------------------------------------------------------- locks


def test_locks(tmp_path):
    ds = str(tmp_path / "ds")
    os.makedirs(ds)
    with DatasetLock(ds, "core-eval"):
        with pytest.raises(OutputError, match=rf"another `core-eval` run \(PID {os.getpid()}\) is writing"):
            DatasetLock(ds, "core-eval").__enter__()
        with DatasetLock(ds, "sft"):  # steps 2-4 run side by side
            with pytest.raises(OutputError, match=r"steps that read the tokenizer are running \(`core-eval` PID \d+, "
                                                  r"`sft` PID \d+\)"):
                DatasetLock(ds, "pretrain").__enter__()
    with DatasetLock(ds, "pretrain"):
        with pytest.raises(OutputError, match=rf"`pretrain` PID {os.getpid()} is writing the tokenizer"):
            DatasetLock(ds, "chat-eval").__enter__()
        with pytest.raises(OutputError, match=rf"`pretrain` PID {os.getpid()} is writing the tokenizer"):
            DatasetLock(ds, "download").__enter__()  # another writer
    with DatasetLock(ds, "sft"):  # an upload reads every step's files: none may change under it
        with pytest.raises(OutputError, match=r"steps that read the tokenizer are running \(`sft` PID \d+\) .*: "
                                              r"wait for them to finish: an upload must not mix"):
            DatasetLock(ds, "upload").__enter__()
    with DatasetLock(ds, "upload"):
        with pytest.raises(OutputError, match=rf"`upload` PID {os.getpid()} is uploading this dataset"):
            DatasetLock(ds, "core-eval").__enter__()
    with DatasetLock(ds, "pretrain"):  # everything was released
        pass


def test_a_lock_of_a_killed_process_is_no_lock(tmp_path):
    ds = tmp_path / "ds"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from stacks_data.dataset.folder import DatasetLock\n"
                               f"DatasetLock({str(ds)!r}, 'pretrain').__enter__(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputError, match=rf"\(PID {holder.pid}\)"):
        DatasetLock(str(ds), "pretrain").__enter__()
    holder.kill()
    holder.wait()
    with DatasetLock(str(ds), "pretrain"):
        pass


def test_a_second_run_on_the_same_folder_is_refused_at_once(corpus):
    write_corpus(corpus / "big", num_files=4, docs_per_file=3000, row_group_size=100)
    first = subprocess.Popen([sys.executable, "-m", "stacks_data", *pretrain_argv(corpus, "out", "big")],
                             cwd=corpus, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = corpus / "out" / "ds" / ".lock.pretrain"
    while not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.05)
    t0 = time.time()
    second = subprocess.run([sys.executable, "-m", "stacks_data",
                             *pretrain_argv(corpus, "out", "big", "--vocab-size", "400")],
                            cwd=corpus, capture_output=True, text=True)
    assert time.time() - t0 < 5 and second.returncode == 1
    assert second.stderr.strip() == (f"error: another `pretrain` run (PID {first.pid}) is writing this dataset "
                                     f"({corpus / 'out' / 'ds'}): wait for it to finish, or stop it")
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert json.loads((corpus / "out" / "ds" / "config.json").read_text())["vocab_size"] == 320


# ---------------------------------------------------------------- processes


def ours(pgid: int) -> list[int]:
    """PIDs of the live processes in a process group (the run, its forkserver, workers, resource tracker).
    Zombies are left out: dead already, they only wait for their parent (once the run is gone, PID 1) to
    reap them, and some sandboxes' PID 1 reaps every second or two."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(pid))
    return pids


def start_big_run(corpus, *extra):
    write_corpus(corpus / "big", num_files=4, docs_per_file=1500, row_group_size=20)
    run = subprocess.Popen([sys.executable, "-m", "stacks_data",
                            *pretrain_argv(corpus, "out", "big", "--num-workers", "2", *extra)],
                           cwd=corpus, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline = time.time() + 60
    while len(ours(run.pid)) < 4:  # the run, the forkserver (or the tracker) and two workers
        assert run.poll() is None and time.time() < deadline, run.stderr.read()
        time.sleep(0.05)
    return run


def gone_within(pgid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while ours(pgid):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow  # a kill matrix: in CI's slow step (the README's test command stays short)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_process_outlives_its_run(corpus, how):
    run = start_big_run(corpus)
    if how == signal.SIGINT:
        os.killpg(run.pid, how)  # Ctrl-C in a terminal goes to the whole foreground group
    else:
        os.kill(run.pid, how)
    code = run.wait(timeout=30)
    assert gone_within(run.pid, 5), [open(f"/proc/{p}/cmdline").read() for p in ours(run.pid)]
    stderr = run.stderr.read()
    assert "Traceback" not in stderr
    if how == signal.SIGINT:
        assert code == 130 and stderr.strip().splitlines()[-1] == "interrupted: rerun the same command to resume"
    elif how == signal.SIGTERM:
        assert code == 143 and stderr.strip().splitlines()[-1] == "terminated: rerun the same command to resume"
    # and the run resumes to the same bytes as an uninterrupted one
    run_step("pretrain", pretrain_argv(corpus, "out", "big", "--num-workers", "2")[1:])
    run_step("pretrain", pretrain_argv(corpus, "ref", "big", "--num-workers", "2")[1:])
    assert tree(corpus / "out" / "ds") == tree(corpus / "ref" / "ds")

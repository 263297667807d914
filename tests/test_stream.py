"""Step 1 downloads and tokenizes at the same time; with --max-cached-shards the parquet folder stays
bounded; a failed download stops the run resumable; same bytes in every case."""

import json
import os
import signal
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures import make_docs, write_corpus
from stacks_data.cli import run_step
from stacks_data.errors import NetworkError
from test_lifecycle import run_killed, tree

NUM_FILES = 8


@pytest.fixture
def served(tmp_path, file_server):
    """The corpus on a loopback server (each file takes a moment to come), and a reference run."""
    write_corpus(tmp_path / "parquet", num_files=NUM_FILES, docs_per_file=200, row_group_size=20)
    for name in os.listdir(tmp_path / "parquet"):
        os.link(tmp_path / "parquet" / name, os.path.join(file_server.root, name))
    (tmp_path / "baselines").mkdir()
    run_step("pretrain", argv(tmp_path, "ref", str(tmp_path / "parquet")))
    file_server.delay = 0.15
    return tmp_path, tree(tmp_path / "ref" / "ds")


def argv(root, out, parquet_dir, *extra):
    return ["--parquet-dir", parquet_dir, "--out-dir", str(root / out), "--dataset-name", "ds",
            "--num-shards", str(NUM_FILES), "--tok-train-shards", "2", "--vocab-size", "320", "--shard-size", "2000",
            "--num-workers", "2", "--skip-upload", "--baselines-dir", str(root / "baselines"), *extra]


class Watcher:
    """Samples the parquet folder and the output folder while a run goes on."""

    def __init__(self, parquet_dir, out_dir):
        self.parquet_dir, self.out_dir, self.samples, self.stop = parquet_dir, out_dir, [], threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            parquet = [n for n in os.listdir(self.parquet_dir) if n.endswith(".parquet")]
            bins = [n for n in os.listdir(self.out_dir) if n.endswith(".bin")] if os.path.isdir(self.out_dir) else []
            self.samples.append((parquet, bins))
            time.sleep(0.005)

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self.samples


def test_tokenizes_while_downloading(served, file_server):
    root, reference = served
    os.makedirs(root / "cache")
    file_server.delay = 0.6  # slower than the tokenizer's training and report: the download outlasts them
    watcher = Watcher(root / "cache", root / "out" / "ds")
    run_step("pretrain", argv(root, "out", str(root / "cache"), "--base-url", file_server.url))
    samples = watcher.finish()
    assert tree(root / "out" / "ds") == {**reference, "config.json": tree(root / "out" / "ds")["config.json"],
                                         "manifest.json": tree(root / "out" / "ds")["manifest.json"]}
    assert {k: v for k, v in tree(root / "out" / "ds").items() if k.endswith(".bin")} == \
           {k: v for k, v in reference.items() if k.endswith(".bin")}
    # shards were written while parquet files were still missing: the two halves overlapped
    assert any(bins and len(parquet) < NUM_FILES for parquet, bins in samples)


def test_max_cached_shards_bounds_the_folder(served, file_server):
    root, reference = served
    os.makedirs(root / "cache")
    watcher = Watcher(root / "cache", root / "out" / "ds")
    run_step("pretrain", argv(root, "out", str(root / "cache"), "--base-url", file_server.url,
                              "--max-cached-shards", "3"))
    samples = watcher.finish()
    assert len(samples) > 50 and max(len(parquet) for parquet, _ in samples) <= 3
    assert {k: v for k, v in tree(root / "out" / "ds").items() if k.endswith(".bin")} == \
           {k: v for k, v in reference.items() if k.endswith(".bin")}
    assert len(os.listdir(root / "cache")) <= 3


def test_max_cached_shards_killed_then_rerun_same_bytes(served, file_server):
    root, reference = served
    os.makedirs(root / "cache")
    command = ["pretrain", *argv(root, "out", str(root / "cache"), "--base-url", file_server.url,
                                 "--max-cached-shards", "3")]
    result = run_killed(command, 25, root)  # killed in the middle of tokenization (its 25th file write)
    assert result.returncode == -signal.SIGKILL
    file_server.requests.clear()
    run_step("pretrain", command[1:])
    assert {k: v for k, v in tree(root / "out" / "ds").items() if k.endswith(".bin")} == \
           {k: v for k, v in reference.items() if k.endswith(".bin")}
    # the rerun fetched what it still needed only: not the shards finished before the kill
    assert len([r for r in file_server.requests if r.endswith(".parquet")]) < NUM_FILES
    # and it took over the killed run's downloads: they went like its own (an uncapped run keeps none here)
    assert not [n for n in os.listdir(root / "cache") if n.endswith(".parquet")]


def test_a_failed_download_stops_the_run_resumable(served, file_server):
    root, reference = served
    os.makedirs(root / "cache")
    os.rename(os.path.join(file_server.root, "shard_00005.parquet"), os.path.join(file_server.root, "later"))
    with pytest.raises(NetworkError, match=r"HTTP 404.*shard_00005.parquet\): download the shards elsewhere"):
        run_step("pretrain", argv(root, "out", str(root / "cache"), "--base-url", file_server.url))
    folder = root / "out" / "ds"
    assert not (folder / "config.json").exists() and [n for n in os.listdir(folder) if n.startswith("train_")]
    os.rename(os.path.join(file_server.root, "later"), os.path.join(file_server.root, "shard_00005.parquet"))
    file_server.requests.clear()
    run_step("pretrain", argv(root, "out", str(root / "cache"), "--base-url", file_server.url))
    assert {k: v for k, v in tree(folder).items() if k.endswith(".bin")} == \
           {k: v for k, v in reference.items() if k.endswith(".bin")}
    # it fetched the failed shard (and one after it, if the failure stopped its download), nothing before
    fetched = {r for r in file_server.requests if r.endswith(".parquet")}
    assert "/shard_00005.parquet" in fetched and fetched <= {"/shard_00005.parquet", "/shard_00006.parquet"}


def test_max_cached_shards_must_hold_the_tokenizer_shards(tmp_path):
    with pytest.raises(Exception, match=r"must be at least 4, got 3 \(--max-cached-shards\)"):
        run_step("pretrain", ["--parquet-dir", str(tmp_path), "--tok-train-shards", "4", "--max-cached-shards", "3",
                              "--skip-upload", "--out-dir", str(tmp_path / "out")])


def test_a_complete_dataset_is_recognized_without_its_shards(served, capsys):
    root, reference = served
    os.makedirs(root / "empty")
    capsys.readouterr()
    # the shards are gone and the server does not answer: nothing is needed to see the work is done
    run_step("pretrain", argv(root, "ref", str(root / "empty"), "--base-url", "http://127.0.0.1:1"))
    assert "is complete (same flags and inputs): nothing to do" in capsys.readouterr().out
    assert tree(root / "ref" / "ds") == reference


def test_max_cached_shards_never_deletes_the_users_own_files(served):
    root, reference = served
    before = sorted(os.listdir(root / "parquet"))
    run_step("pretrain", argv(root, "out", str(root / "parquet"), "--max-cached-shards", "3"))
    assert sorted(os.listdir(root / "parquet")) == before
    assert {k: v for k, v in tree(root / "out" / "ds").items() if k.endswith(".bin")} == \
           {k: v for k, v in reference.items() if k.endswith(".bin")}


def test_a_capped_run_has_its_parquet_folder_to_itself(served):
    from stacks_data.errors import OutputError
    from stacks_data.dataset.files import locked

    root, _ = served
    with locked(str(root / "parquet" / "shards"), shared=True):  # another run reading that folder
        with pytest.raises(OutputError, match=r"another pretrain run uses this parquet folder \(--parquet-dir"):
            run_step("pretrain", argv(root, "out", str(root / "parquet"), "--max-cached-shards", "3"))


def test_a_file_changed_on_the_server_is_checked_before_the_run_resumes_inside_it(served, file_server):
    """The file a rerun resumes inside is not in the cache (evicted, or deleted by the user): it is
    downloaded and checked before the run goes on in it, so shards of its old and new content never mix.
    (With a cap the stream cannot fetch it before tokenization starts: without the check, it is never
    checked; without a cap, whether it came in time for the check is a race.)"""
    cap = ["--max-cached-shards", "2"]
    root, _ = served
    file_server.delay = 0
    os.makedirs(root / "cache")
    run_step("pretrain", argv(root, "out", str(root / "cache"), "--base-url", file_server.url, *cap))
    out = root / "out" / "ds"
    progress = json.loads((out / ".pretokenize.json").read_text())["splits"]["train"]["shards"]
    resumed_in = progress[-2]["file"]  # the last shard lost: the rerun resumes where the one before ended
    os.remove(out / f"train_{len(progress) - 1:06d}.bin")
    changed = f"shard_{resumed_in:05d}.parquet"
    for name in os.listdir(root / "cache"):
        if name.endswith(".parquet") and name != changed and int(name[6:11]) >= 2:
            os.remove(root / "cache" / name)  # not the tokenizer's: they are checked anyway
    if os.path.exists(root / "cache" / changed):
        os.remove(root / "cache" / changed)
    os.remove(os.path.join(file_server.root, changed))
    pq.write_table(pa.table({"text": make_docs(200, seed=99)}), os.path.join(file_server.root, changed),
                   row_group_size=20)
    run_step("pretrain", argv(root, "out", str(root / "cache"), "--base-url", file_server.url, *cap))
    os.makedirs(root / "fresh_cache")
    run_step("pretrain", argv(root, "fresh", str(root / "fresh_cache"), "--base-url", file_server.url, *cap))
    got, fresh = tree(out), tree(root / "fresh" / "ds")
    assert {k: v for k, v in got.items() if k.endswith(".bin")} == {k: v for k, v in fresh.items() if k.endswith(".bin")}


def test_a_damaged_shard_is_repaired_from_its_own_inputs_downloaded_again(served, file_server, capsys):
    # a capped run deleted its inputs: the repair downloads only the files of the damaged shard's span
    root, reference = served
    os.makedirs(root / "cache")
    command = argv(root, "out", str(root / "cache"), "--base-url", file_server.url, "--max-cached-shards", "3")
    run_step("pretrain", command)
    folder = root / "out" / "ds"
    shard = sorted(folder.glob("train_*.bin"))[-2]  # made from the last input files (not the tokenizer's)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    file_server.requests.clear()
    capsys.readouterr()
    run_step("pretrain", command)
    assert f"repaired: {shard.name} (sha256 differs" in capsys.readouterr().out
    assert {k: v for k, v in tree(folder).items() if k.endswith(".bin")} == \
           {k: v for k, v in reference.items() if k.endswith(".bin")}
    fetched = [r for r in file_server.requests if r.endswith(".parquet")]
    # the tokenizer's two shards (the report reads them) and the damaged shard's span: not the corpus
    assert {"/shard_00000.parquet", "/shard_00001.parquet"} < set(fetched) and len(fetched) <= 4 < NUM_FILES
    assert not [n for n in os.listdir(root / "cache") if n.endswith(".parquet")]  # and released again

"""--executor ray: the same bytes as the local executor, on a local Ray instance of 2 CPUs, also when a
Ray worker is killed mid-run. Marked `ray`: `pip install -e '.[ray]' && pytest -q -m ray` (CI does)."""

import functools
import operator
import os
import signal
import threading
import time

import pytest

import test_core_eval
import test_sft
from fixtures import write_corpus
from stacks_data.executors import ray as ray_executor
from stacks_data.cli import run_step
from stacks_data.errors import NetworkError, WorkerError
from stacks_data.executors import Executor
from test_lifecycle import tree

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray  # here, not at the top: collected without Ray installed, selected they fail without it

    ray_executor.connect(None, 2)  # the instance every --executor ray run of this module joins
    yield
    ray.shutdown()


@pytest.fixture
def inputs(tmp_path):
    write_corpus(tmp_path / "parquet", num_files=4, docs_per_file=400, row_group_size=20)
    (tmp_path / "baselines").mkdir()
    test_core_eval.write_bundle(tmp_path / "bundle", test_core_eval.BUNDLE_TASKS, test_core_eval.BUNDLE_FILES)
    test_sft.make_hub(str(tmp_path / "mirror"))
    (tmp_path / "words.txt").write_text("\n".join(test_sft.WORDS))
    return tmp_path


def all_steps(root, out, *executor):
    common = ["--out-dir", str(root / out), "--dataset-name", "ds", "--skip-upload", "--num-workers", "2", *executor]
    run_step("pretrain", ["--parquet-dir", str(root / "parquet"), "--num-shards", "4", "--tok-train-shards", "2",
                          "--vocab-size", "400", "--shard-size", "5000", "--baselines-dir", str(root / "baselines"),
                          *common])
    run_step("core-eval", ["--eval-bundle", str(root / "bundle"), *common])
    run_step("sft", ["--hf-mirror", str(root / "mirror"), "--words-file", str(root / "words.txt"),
                     "--simple-spelling-size", "300", "--spelling-bee-size", "100", "--chunk-size", "16",
                     "--shard-size", "2000", *common])
    return tree(root / out / "ds")


def test_same_bytes_as_the_local_executor(inputs):
    assert all_steps(inputs, "ray", "--executor", "ray") == all_steps(inputs, "local")


def test_a_killed_worker_is_retried_and_the_bytes_are_the_same(inputs):
    killed = []

    def kill_one_busy_worker():
        deadline = time.time() + 60
        while not killed and time.time() < deadline:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    title = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
                except OSError:
                    continue
                if title.startswith(b"ray::_ray_item"):  # a Ray worker while it runs one of our items
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_busy_worker)
    killer.start()
    got = all_steps(inputs, "ray", "--executor", "ray")
    killer.join()
    assert killed, "no Ray worker was seen running an item"
    assert got == all_steps(inputs, "local")


def test_errors_are_one_line_naming_the_item():
    invert = functools.partial(operator.truediv, 1)  # importable by the Ray workers, as the steps' functions are
    with pytest.raises(WorkerError, match=r"ZeroDivisionError: division by zero \(while processing item 0\)"):
        list(Executor(2, "ray").map(invert, [0, 1], describe=lambda item: f"item {item}"))
    assert list(Executor(2, "ray").map(invert, [1, 2, 4, 5])) == [1.0, 0.5, 0.25, 0.2]  # in order


def test_an_absent_cluster_fails_fast(monkeypatch):
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    t0 = time.time()
    with pytest.raises(NetworkError, match=r"nothing answers there \(--ray-address 127.0.0.1:1\): start one"):
        ray_executor.connect("127.0.0.1:1", 2)
    assert time.time() - t0 < 5

"""Bounds against a hostile dataset (issue 23):

1. `verify --deep` on a folder whose .pt is a decompression bomb (1 GiB of zeros, deflated): the peak of
   the RSS summed over verify and all its workers (sampled every 20 ms);
2. `download` of a repo whose manifest lists 100,000 files (fetching 2 train shards, all the rest left
   out on purpose), then again with all of them present (each checked, none fetched): the seconds spent
   in our own code (the whole run minus the time inside the hub
   calls, hub.list_files and hub.fetch_files, which wait on huggingface_hub and the server).

    python bench/bench_hostile.py DATASET_DIR      # a small dataset made by steps 1-2 (e.g. by the tests)
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def tree_rss_kb(pid: int) -> int:
    """RSS of `pid` and all its descendants, in kB."""
    parents, rss = {}, {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/status") as f:
                status = dict(line.split(":", 1) for line in f)
        except OSError:
            continue
        parents[int(p)] = int(status.get("PPid", "0"))
        rss[int(p)] = int(status.get("VmRSS", "0 kB").split()[0])
    total = 0
    for p in rss:
        q = p
        while q and q != pid:
            q = parents.get(q)
        total += rss[p] if q == pid else 0
    return total


def bomb_rss(dataset: str, work: str) -> None:
    folder = os.path.join(work, "bomb")
    shutil.copytree(dataset, folder, ignore=shutil.ignore_patterns(".*"))
    pt = os.path.join(folder, "core_eval", "mc.pt")
    import torch

    torch.save({"x": torch.zeros(16, dtype=torch.uint8)}, pt + ".good")
    with zipfile.ZipFile(pt + ".good") as src, zipfile.ZipFile(pt, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                member = zipfile.ZipInfo(info.filename)
                member.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(member, "w", force_zip64=True) as f:
                    for _ in range(1024):
                        f.write(bytes(1 << 20))
            else:
                dst.writestr(info, src.read(info.filename))
    os.remove(pt + ".good")
    manifest = json.load(open(os.path.join(folder, "core_eval", "manifest.json")))
    for f in manifest["files"]:
        data = open(os.path.join(folder, f["path"]), "rb").read()
        f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    json.dump(manifest, open(os.path.join(folder, "core_eval", "manifest.json"), "w"))
    print(f"bomb: {os.path.getsize(pt) / 1e6:.1f} MB on disk, 1024 MiB inflated")
    child = subprocess.Popen([sys.executable, "-m", "stacks_data", "verify", folder, "--deep", "--num-workers", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": ROOT})
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss_kb(child.pid))
        time.sleep(0.02)
    out, err = child.communicate()
    print("".join(line + "\n" for line in out.splitlines() if "mc.pt" in line) + err.strip().splitlines()[-1])
    print(f"verify --deep --num-workers 2 on the bomb: peak RSS over all its processes {peak / 1024:.0f} MB")


def download_100k(work: str, n: int = 100_000) -> None:
    import pytest
    from hub_server import serving_hub, use_fake_hub

    from stacks_data.remote import hub
    from stacks_data.steps import download as download_dataset
    from stacks_data.cli import run_step

    repo = os.path.join(work, "hub", "me", "big")
    os.makedirs(repo)
    empty = hashlib.sha256(b"").hexdigest()
    files = []
    for i in range(n):
        name = f"train_{i:06d}.bin"
        open(os.path.join(repo, name), "wb").close()
        files.append({"path": name, "size": 0, "sha256": empty})
    config = json.dumps({"train_shards": n}).encode()
    open(os.path.join(repo, "config.json"), "wb").write(config)
    files.append({"path": "config.json", "size": len(config), "sha256": hashlib.sha256(config).hexdigest()})
    json.dump({"step": "pretrain", "config": "config.json", "files": files}, open(os.path.join(repo, "manifest.json"), "w"))
    monkeypatch = pytest.MonkeyPatch()
    waiting = {"list_files": 0.0, "fetch_files": 0.0}  # seconds in the hub calls (huggingface_hub, the server)

    def timed(name):
        real = getattr(hub, name)

        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                waiting[name] += time.perf_counter() - t
        return call

    with serving_hub(os.path.join(work, "hub")) as server:
        use_fake_hub(monkeypatch, server, os.path.join(work, "hf_home"))
        for name in waiting:
            monkeypatch.setattr(download_dataset.hub, name, timed(name))
        for what, argv in (("2 train shards fetched", ["--num-train-shards", "2"]),
                           (f"a rerun, all {n:,} files present", [])):
            if not argv:  # every file already here (e.g. copied): each is checked, none fetched
                for name in os.listdir(repo):
                    shutil.copy(os.path.join(repo, name), os.path.join(work, "gpu", "big", name))
            for name in waiting:
                waiting[name] = 0.0
            t0 = time.perf_counter()
            run_step("download", ["--hf-user", "me", "--dataset-name", "big", "--out-dir", os.path.join(work, "gpu"),
                                  *argv])
            wall = time.perf_counter() - t0
            print(f"download of a {n:,}-entry manifest ({what}): {wall:.1f}s in all, "
                  f"{wall - sum(waiting.values()):.2f}s in our own code (listing {waiting['list_files']:.1f}s, "
                  f"fetching {waiting['fetch_files']:.1f}s: huggingface_hub and the fake hub)")
    monkeypatch.undo()

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        bomb_rss(sys.argv[1], work)
        download_100k(work)

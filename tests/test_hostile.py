"""A dataset from a stranger: download, verify and upload against hostile repos (issue 23), one test per
attack, on the loopback fake hub where a hub is involved. Each ends in one line (no traceback) or a
correct refusal, and the payload never runs, leaks or lands outside the folder."""

import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import pytest

import test_core_eval
from fixtures import write_corpus
from stacks_data import flags
from stacks_data.cli import main, run_step
from stacks_data.errors import InputError, OutputError
from stacks_data.tokenizer import load_encoding_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = "PAYLOAD-MARKER-23"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A dataset of steps 1 and 2 from small inputs: out/ds."""
    root = tmp_path_factory.mktemp("built")
    write_corpus(root / "parquet", num_files=3, docs_per_file=40)
    (root / "baselines").mkdir()
    common = ["--out-dir", str(root / "out"), "--dataset-name", "ds", "--skip-upload"]
    run_step("pretrain", ["--parquet-dir", str(root / "parquet"), "--num-shards", "3", "--tok-train-shards", "2",
                          "--vocab-size", "320", "--shard-size", "1000", "--num-workers", "1",
                          "--baselines-dir", str(root / "baselines"), *common])
    test_core_eval.write_bundle(root / "bundle", test_core_eval.BUNDLE_TASKS, test_core_eval.BUNDLE_FILES)
    run_step("core-eval", ["--eval-bundle", str(root / "bundle"), "--num-workers", "1", *common])
    return root / "out" / "ds"


def copy(built, tmp_path, name="ds"):
    shutil.copytree(built, tmp_path / name, ignore=shutil.ignore_patterns(".*"))
    return tmp_path / name


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def resign(folder):
    """What a hostile publisher does after tampering: config's tokenizer_sha256 and every manifest's sizes
    and hashes made to match the files as they now are (through symlinks)."""
    config = json.loads((folder / "config.json").read_text())
    config["tokenizer_sha256"] = sha256(folder / "tokenizer" / "tokenizer.pkl")
    (folder / "config.json").write_text(json.dumps(config))
    for manifest_path in (folder / "manifest.json", folder / "core_eval" / "manifest.json"):
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        for f in manifest["files"]:
            local = folder / f["path"]
            if local.is_file():
                f["size"], f["sha256"] = local.stat().st_size, sha256(local)
        manifest_path.write_text(json.dumps(manifest))


def add_entry(folder, path, manifest="manifest.json", size=0, digest=hashlib.sha256(b"").hexdigest()):
    m = json.loads((folder / manifest).read_text())
    m["files"].append({"path": path, "size": size, "sha256": digest})
    (folder / manifest).write_text(json.dumps(m))


def publish(hub, folder, repo="me/ds"):
    """Serve `folder` as the dataset repo `repo` of the fake hub (as a stranger's upload would hold it)."""
    shutil.copytree(folder, os.path.join(hub.root, repo), symlinks=True)


def cli(capsys, *argv):
    """(exit code, stdout, stderr) of `stacks-data argv`; an exception other than SystemExit (a
    traceback) fails the test."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main([*argv])
    out = capsys.readouterr()
    return exit.value.code, out.out, out.err


def download(capsys, out_dir, *flags_):
    return cli(capsys, "download", "--hf-user", "me", "--dataset-name", "ds", "--out-dir", str(out_dir),
               "--num-workers", "1", *flags_)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


class _Reduce:
    def __init__(self, reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def tokenizer_pickle(state: dict) -> bytes:
    """A pickle naming only tiktoken.core.Encoding, with `state` as its state (what a publisher can write)."""
    body = pickle.dumps(state, protocol=3)[2:-1]  # the dict, without PROTO and STOP
    return b"\x80\x03ctiktoken.core\nEncoding\n)\x81" + body + b"b."  # Encoding.__new__(), then BUILD(state)


# ---------------------------------------------------------------------------------- 1. a code-running pickle


def test_1_verify_refuses_a_code_running_tokenizer_whose_hashes_match(built, tmp_path, capsys):
    folder = copy(built, tmp_path)
    marker = tmp_path / PAYLOAD
    (folder / "tokenizer" / "tokenizer.pkl").write_bytes(pickle.dumps(_Reduce((os.system, (f"touch {marker}",)))))
    resign(folder)
    code, out, err = cli(capsys, "verify", str(folder), "--num-workers", "1")
    assert code == 1 and "tokenizer/tokenizer.pkl: not a safe tokenizer pickle" in out, out
    assert "os.system" in out or "posix.system" in out
    one_line_error(err)
    assert not marker.exists()


# ---------------------------------------------------------------------------------- 2. a decompression bomb


def deflate_bomb(path, size: int):
    """A .pt whose storage member is `size` bytes of zeros, deflated (a few hundred KB on disk)."""
    import torch

    good = path.parent / "good.pt"
    torch.save({"x": torch.zeros(16, dtype=torch.uint8)}, good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                member = zipfile.ZipInfo(info.filename)
                member.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(member, "w", force_zip64=True) as f:
                    block = bytes(1 << 20)
                    for _ in range(size >> 20):
                        f.write(block)
            else:
                dst.writestr(info, src.read(info.filename))
    good.unlink()


def test_2_verify_refuses_a_deflated_pt_without_loading_it(built, tmp_path, capsys):
    folder = copy(built, tmp_path)
    deflate_bomb(folder / "core_eval" / "mc.pt", 64 << 20)
    resign(folder)
    with zipfile.ZipFile(folder / "core_eval" / "mc.pt") as z:
        assert any(i.compress_type == zipfile.ZIP_DEFLATED and i.file_size == 64 << 20 for i in z.infolist())
    code, out, err = cli(capsys, "verify", str(folder), "--deep", "--num-workers", "1")
    assert code == 1 and "core_eval/mc.pt: member 'good/data/0' is compressed" in out and "not loaded" in out, out
    one_line_error(err)


def test_2_a_stored_member_larger_than_the_file_is_refused(tmp_path):
    import torch

    from stacks_data.dataset.published import pt_problem

    path = tmp_path / "x.pt"
    torch.save({"x": torch.zeros(16, dtype=torch.uint8)}, path)
    assert pt_problem(str(path)) is None
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first member's central directory entry
    data[central + 24:central + 28] = (0xFFFFFFF0).to_bytes(4, "little")  # its uncompressed size: ~4 GB
    path.write_bytes(data)
    assert "is larger than the file: not loaded" in pt_problem(str(path))


def test_2_the_deep_load_runs_under_a_memory_bound():
    from stacks_data.dataset.published import memory_bound

    with pytest.raises(MemoryError):
        with memory_bound(64 << 20):
            bytearray(512 << 20)
    assert len(bytearray(512 << 20)) == 512 << 20  # the limit before is back


# ---------------------------------------------------------------------------------- 3. a symlink leading out


def test_3_upload_refuses_a_listed_symlink_that_leads_out(built, tmp_path, hub, capsys):
    folder = copy(built, tmp_path)
    secret = tmp_path / "id_rsa"
    secret.write_text(f"-----BEGIN OPENSSH PRIVATE KEY----- {PAYLOAD}\n")
    (folder / "tokenizer_comparison.md").unlink()
    (folder / "tokenizer_comparison.md").symlink_to(secret)
    resign(folder)
    code, out, err = cli(capsys, "upload", str(folder), "--hf-user", "me")
    assert code == 1 and "tokenizer_comparison.md: is a symlink that leads out of the dataset folder" in out, out
    one_line_error(err)
    assert not os.path.exists(os.path.join(hub.root, "me", "ds"))
    assert not any(m == "POST" for m, _ in hub.requests)
    code, out, _ = cli(capsys, "verify", str(folder), "--quick")
    assert code == 1 and "symlink that leads out" in out and PAYLOAD not in out


# ---------------------------------------------------------------------------------- 4. a partial download


def test_4_upload_refuses_a_partial_download_naming_the_missing_files(built, tmp_path, hub, capsys):
    publish(hub, copy(built, tmp_path))
    code, _, err = download(capsys, tmp_path / "gpu", "--num-train-shards", "1")
    assert code == 0, err
    code, out, err = cli(capsys, "upload", str(tmp_path / "gpu" / "ds"), "--hf-user", "me", "--dataset-name", "ds2")
    assert code == 1
    line = one_line_error(err)
    assert "a partial download: " in line and " listed file(s) are missing (train_000001.bin, " in line, line
    assert not os.path.exists(os.path.join(hub.root, "me", "ds2"))


def test_4_upload_counts_what_the_hub_received(built, tmp_path, hub, capsys):
    code, out, err = cli(capsys, "upload", str(built), "--hf-user", "me")
    assert code == 0, err
    held = sum(len(names) for _, _, names in os.walk(os.path.join(hub.root, "me", "ds")))
    assert f"uploaded {held} files of" in out, (held, out)


# ---------------------------------------------------------------------------------- 5. empty and folder paths


@pytest.mark.parametrize("path", ["", "tokenizer/", "tokenizer/."])
def test_5_download_refuses_manifest_paths_that_name_no_file(built, tmp_path, hub, capsys, path):
    folder = copy(built, tmp_path)
    add_entry(folder, path)
    publish(hub, folder)
    (tmp_path / "hub" / "me" / "ds" / "tokenizer" / "unlisted.txt").write_text(PAYLOAD)
    code, out, err = download(capsys, tmp_path / "gpu")
    assert code == 1
    line = one_line_error(err)
    assert "manifest path is" in line and "manifest.json: files[" in line, line
    assert not (tmp_path / "gpu" / "ds" / "tokenizer" / "unlisted.txt").exists()


# ---------------------------------------------------------------------------------- 6. deeply nested JSON


DEEP = "[" * 200_000 + "]" * 200_000


def test_6_deep_json_is_one_line(built, tmp_path, hub, capsys):
    folder = copy(built, tmp_path)
    published_copy = copy(built, tmp_path, "pub")
    (published_copy / "core_eval" / "manifest.json").write_text(DEEP)
    publish(hub, published_copy)
    code, _, err = download(capsys, tmp_path / "gpu")
    assert code == 1 and "JSON nested deeper than" in one_line_error(err) and "core_eval/manifest.json" in err

    (folder / ".partial.json").write_text(DEEP)
    (folder / "core_eval" / "config.json").write_text(DEEP)
    code, out, err = cli(capsys, "verify", str(folder), "--quick")
    assert code == 1 and f"JSON nested deeper than 64 levels ({folder}/.partial.json)" in out, out
    assert f"JSON nested deeper than 64 levels ({folder}/core_eval/config.json)" in out, out
    one_line_error(err)

    (folder / "config.json").write_text(DEEP)  # step 2 reads it for the tokenizer's hash
    with pytest.raises(InputError, match="JSON nested deeper than"):
        flags.load_tokenizer(argparse.Namespace(out_dir=str(tmp_path), dataset_name="ds"))


# ---------------------------------------------------------------------------------- 7. wrong JSON types


@pytest.mark.parametrize("where, text, named", [
    ("manifest", None, "unknown step"),
    (".partial.json", json.dumps([["a"]]), ".partial.json"),
])
def test_7_wrong_json_types_are_one_line(built, tmp_path, capsys, where, text, named):
    folder = copy(built, tmp_path)
    if where == "manifest":
        m = json.loads((folder / "core_eval" / "manifest.json").read_text())
        m["step"] = ["x"]
        (folder / "core_eval" / "manifest.json").write_text(json.dumps(m))
    else:
        (folder / where).write_text(text)
    code, out, err = cli(capsys, "verify", str(folder), "--quick")
    assert code == 1 and named in out, out
    one_line_error(err)


# ---------------------------------------------------------------------------------- 8. names the hub refuses


@pytest.mark.parametrize("flag, value", [("--hf-user", "bad user"), ("--hf-user", ".."), ("--hf-user", "a--b"),
                                         ("--dataset-name", "t 2")])
def test_8_names_the_hub_refuses_are_flag_errors(built, tmp_path, hub, capsys, flag, value):
    argv = {"--hf-user": "me", "--dataset-name": "ds", flag: value}
    code, _, err = cli(capsys, "download", "--out-dir", str(tmp_path), *[x for kv in argv.items() for x in kv])
    assert code == 2 and f"({flag})" in one_line_error(err), err
    code, _, err = cli(capsys, "upload", str(built), *[x for kv in argv.items() for x in kv])
    assert code == 2 and f"({flag})" in one_line_error(err), err
    assert not hub.requests


# ---------------------------------------------------------------------------------- 9. plain types, bad values


@pytest.mark.parametrize("damage", ["bad regex", "empty ranks", "rank 2^70", "negative id", "no <|bos|>"])
def test_9_a_tokenizer_of_plain_types_but_bad_values(built, tmp_path, capsys, damage):
    folder = copy(built, tmp_path)
    pkl = folder / "tokenizer" / "tokenizer.pkl"
    state = load_encoding_spec(pkl.read_bytes(), str(pkl))
    first = next(iter(state["mergeable_ranks"]))
    if damage == "bad regex":
        state["pat_str"] = "(unclosed"
    elif damage == "empty ranks":
        state["mergeable_ranks"] = {}
    elif damage == "rank 2^70":
        state["mergeable_ranks"][first] = 2 ** 70
    elif damage == "negative id":
        state["mergeable_ranks"][first] = -1
    else:
        del state["special_tokens"]["<|bos|>"]
    pkl.write_bytes(tokenizer_pickle(state))
    resign(folder)
    with pytest.raises(InputError, match="not a usable tokenizer"):  # what steps 2-4 load
        flags.load_tokenizer(argparse.Namespace(out_dir=str(tmp_path), dataset_name="ds"))
    code, out, err = cli(capsys, "verify", str(folder), "--num-workers", "1")
    assert code == 1 and "tokenizer/tokenizer.pkl: " in out and "usable tokenizer" in out, out
    one_line_error(err)


def test_9_verify_says_when_the_tokenizer_was_not_checked(built, tmp_path, capsys):
    code, out, _ = cli(capsys, "verify", str(built), "--quick")
    assert code == 0 and "tokenizer not checked (--quick)" in out
    code, out, _ = cli(capsys, "verify", str(built), "--num-workers", "1")
    assert code == 0 and "tokenizer loaded as steps 2-4 load it" in out
    folder = copy(built, tmp_path)
    (folder / "tokenizer" / "tokenizer.pkl").unlink()
    code, out, err = cli(capsys, "verify", str(folder), "--num-workers", "1")
    assert code == 1 and "tokenizer not checked (none listed and present)" in one_line_error(err)


# ---------------------------------------------------------------------------------- 10. FIFO, /dev/zero


def verify_in_a_process(folder, *flags_):
    return subprocess.run([sys.executable, "-m", "stacks_data", "verify", str(folder), "--num-workers", "1", *flags_],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})


def test_10_a_fifo_and_dev_zero_are_refused_without_reading(built, tmp_path):
    folder = copy(built, tmp_path)
    os.mkfifo(folder / ".partial.json")
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    done = verify_in_a_process(folder, "--quick")
    assert done.returncode == 1, done.stderr
    assert f"not a regular file (a FIFO, device or folder) ({folder}/.partial.json)" in done.stdout, done.stdout
    assert "config.json: is a symlink that leads out of the dataset folder" in done.stdout, done.stdout
    one_line_error(done.stderr)


# ---------------------------------------------------------------------------------- 11. terminal escapes


ESCAPES = ["tokenizer/\x1b]0;pwned\x07x", "\x1b[1A\x1b[2Kok: all good", "a\x1b[8mhidden"]


def test_11_paths_with_terminal_escapes_are_printed_escaped(built, tmp_path, hub, capsys):
    folder = copy(built, tmp_path)
    for path in ESCAPES:
        add_entry(folder, path)
    code, out, err = cli(capsys, "verify", str(folder), "--quick")
    assert code == 1 and "\\x1b" in out + err
    assert "\x1b" not in out + err and "\x07" not in out + err
    publish(hub, folder)
    code, out, err = download(capsys, tmp_path / "gpu")
    assert code == 1 and "\\x1b" in err and "\x1b" not in out + err and "\x07" not in out + err
    one_line_error(err)


# ---------------------------------------------------------------------------------- 12. the download's locks


def test_12_a_manifest_listing_the_downloads_own_locks(built, tmp_path, hub, capsys):
    folder = copy(built, tmp_path)
    for lock in (".lock.download", ".lock.tokenizer"):
        (folder / lock).write_text(PAYLOAD)
        add_entry(folder, lock, size=len(PAYLOAD), digest=hashlib.sha256(PAYLOAD.encode()).hexdigest())
    publish(hub, folder)
    code, out, err = download(capsys, tmp_path / "gpu")
    assert code == 1 and "names a hidden file" in one_line_error(err), err
    for lock in (".lock.download", ".lock.tokenizer"):
        assert PAYLOAD not in (tmp_path / "gpu" / "ds" / lock).read_text()


# ---------------------------------------------------------------------------------- 13. a symlinked sub-folder


def test_13_download_does_not_write_through_a_symlinked_sub_folder(built, tmp_path, hub, capsys):
    publish(hub, copy(built, tmp_path))
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "gpu" / "ds").mkdir(parents=True)
    (tmp_path / "gpu" / "ds" / "core_eval").symlink_to(outside)
    code, out, err = download(capsys, tmp_path / "gpu")
    assert code == 1 and "core_eval is a symlink" in one_line_error(err), err
    assert os.listdir(outside) == []


# ---------------------------------------------------------------------------------- 14. deeper manifests


def test_14_manifests_only_where_the_layout_puts_them(built, tmp_path, hub, capsys):
    folder = copy(built, tmp_path)
    (folder / "evil.bin").write_bytes(PAYLOAD.encode())
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "manifest.json").write_text(json.dumps({"step": "pretrain", "files": [
        {"path": "evil.bin", "size": len(PAYLOAD), "sha256": sha256(folder / "evil.bin")}]}))
    publish(hub, folder)
    code, out, err = download(capsys, tmp_path / "gpu")
    assert code == 0, err
    got = tmp_path / "gpu" / "ds"
    assert not (got / "evil.bin").exists() and not (got / "a").exists()
    shutil.copytree(folder / "a", got / "a")  # and verify ignores a deeper manifest the same way
    code, out, _ = cli(capsys, "verify", str(got), "--quick")
    assert code == 0, out


# ---------------------------------------------------------------------------------- 15. many entries


@pytest.mark.slow  # 400 listed files through a whole download (~7 s): in CI's slow step
def test_15_manifest_matching_is_linear(built, tmp_path, hub, capsys, monkeypatch):
    """N listed files: the number of pattern matches grows with N, not N x N."""
    import fnmatch

    folder = copy(built, tmp_path)
    n = 400
    for i in range(n):
        name = f"train_{100 + i:06d}.bin"
        (folder / name).write_bytes(b"")
        add_entry(folder, name)
    publish(hub, folder)
    calls = [0]
    real = fnmatch.fnmatchcase

    def counting(name, pattern):
        calls[0] += 1
        return real(name, pattern)

    monkeypatch.setattr(fnmatch, "fnmatchcase", counting)
    monkeypatch.setattr("huggingface_hub.utils._paths.fnmatchcase", counting)  # it imported the name
    code, out, err = download(capsys, tmp_path / "gpu")
    assert code == 0, err
    files = n + len(json.loads((built / "manifest.json").read_text())["files"])
    assert calls[0] < 20 * files, (calls[0], files)

"""The hub round trip: build a dataset offline, upload it to a loopback hub, download it into a fresh
folder, verify every byte; damaged or half-downloaded folders are named file by file."""

import json
import os
import shutil

import pytest

import test_chat_eval
import test_core_eval
import test_sft
from fixtures import published_files, repo_files, write_corpus
from stacks_data.cli import main, run_step
from stacks_data.errors import InputError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A dataset made by all four steps from small inputs: out/ds."""
    root = tmp_path_factory.mktemp("built")
    write_corpus(root / "parquet", num_files=4, docs_per_file=60)
    (root / "baselines").mkdir()
    common = ["--out-dir", str(root / "out"), "--dataset-name", "ds", "--skip-upload"]
    run_step("pretrain", ["--parquet-dir", str(root / "parquet"), "--num-shards", "4", "--tok-train-shards", "2",
                          "--vocab-size", "320", "--shard-size", "1000", "--num-workers", "1",
                          "--baselines-dir", str(root / "baselines"), *common])
    test_core_eval.write_bundle(root / "bundle", test_core_eval.BUNDLE_TASKS, test_core_eval.BUNDLE_FILES)
    run_step("core-eval", ["--eval-bundle", str(root / "bundle"), "--num-workers", "1", *common])
    test_sft.make_hub(str(root / "mirror"))
    test_chat_eval.make_hub(str(root / "mirror"))
    (root / "words.txt").write_text("\n".join(test_sft.WORDS))
    run_step("sft", ["--hf-mirror", str(root / "mirror"), "--words-file", str(root / "words.txt"),
                     "--simple-spelling-size", "20", "--spelling-bee-size", "10", "--shard-size", "400",
                     "--identity-file", str(root / "words.txt"), "--skip-invalid", "--num-workers", "1", *common])
    run_step("chat-eval", ["--hf-mirror", str(root / "mirror"), *common])
    return root / "out" / "ds"


def copy(built, tmp_path):
    shutil.copytree(built, tmp_path / "ds")
    return tmp_path / "ds"


def verify_lines(folder, capsys, *flags):
    """(exit code, lines on stdout, the last line on stderr) of `stacks-data verify folder`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["verify", str(folder), "--num-workers", "2", *flags])
    out = capsys.readouterr()
    return exit.value.code, out.out.strip().splitlines(), (out.err.strip().splitlines() or [""])[-1]


def test_a_fresh_dataset_verifies(built, capsys):
    code, lines, _ = verify_lines(built, capsys)
    assert code == 0 and lines[-1].startswith(f"ok: {built}: ") and "sizes and hashes" in lines[-1]
    manifests = [p for p in published_files(built) if p.endswith("manifest.json")]
    assert sorted(manifests) == ["chat_eval/manifest.json", "core_eval/manifest.json", "manifest.json",
                                 "sft/manifest.json"]


@pytest.mark.parametrize("damage, named", [
    ("flip a byte in a train shard", "train_000003.bin: sha256 differs"),
    ("delete a mask shard", "sft/sft_train_000001_mask.bin: missing"),
    ("truncate a .pt", "core_eval/mc.pt: "),
    ("a token id beyond the vocab", "val_000001.bin: sha256 differs"),
    ("a token id beyond the vocab, --deep", "val_000001.bin: token id 400 is not below the vocab size 320"),
    ("a stray shard", "train_000999.bin: no manifest lists it"),
    ("a config that lies", "config.json: train_tokens is"),
])
def test_damage_is_named(built, tmp_path, capsys, damage, named):
    folder = copy(built, tmp_path)
    if damage.startswith("flip"):
        data = bytearray((folder / "train_000003.bin").read_bytes())
        data[2000] ^= 1
        (folder / "train_000003.bin").write_bytes(data)
    elif damage.startswith("delete"):
        os.remove(folder / "sft" / "sft_train_000001_mask.bin")
    elif damage.startswith("truncate"):
        data = (folder / "core_eval" / "mc.pt").read_bytes()
        (folder / "core_eval" / "mc.pt").write_bytes(data[: len(data) // 2])
    elif damage.startswith("a token"):
        data = bytearray((folder / "val_000001.bin").read_bytes())
        data[1024:1026] = (400).to_bytes(2, "little")
        (folder / "val_000001.bin").write_bytes(data)
    elif damage.startswith("a stray"):
        shutil.copy(folder / "train_000000.bin", folder / "train_000999.bin")
    else:
        config = json.loads((folder / "config.json").read_text())
        config["train_tokens"] += 1
        (folder / "config.json").write_text(json.dumps(config))
    code, lines, error = verify_lines(folder, capsys, *(["--deep"] if damage.endswith("--deep") else []))
    assert code == 1 and any(named in line for line in lines), lines
    assert error.startswith("error: ") and "problem(s)" in error


def test_round_trip_through_the_hub(built, tmp_path, hub, capsys, monkeypatch):
    main_argv = ["upload", str(built), "--hf-user", "me", "--dry-run"]
    with pytest.raises(SystemExit) as exit:
        main(main_argv)
    assert exit.value.code == 0
    dry = capsys.readouterr().out.strip().splitlines()
    # what the manifests list, the manifests, and the dataset card
    assert dry[-1].startswith(f"would upload {len(published_files(built)) + 1} files, ") and not hub.requests
    assert any(line.startswith("README.md  ") for line in dry)

    with pytest.raises(SystemExit) as exit:
        main(["upload", str(built), "--hf-user", "me"])
    assert exit.value.code == 0
    assert repo_files(hub, "me/ds") == {**published_files(built), "README.md": (built / "README.md").read_bytes()}

    # one file comes corrupted once: it is fetched again, and the download is byte-identical
    hub.faults["GET /datasets/me/ds/resolve/main/train_000002.bin"] = ["corrupt"]
    with pytest.raises(SystemExit) as exit:
        main(["download", "--hf-user", "me", "--dataset-name", "ds", "--out-dir", str(tmp_path / "gpu")])
    assert exit.value.code == 0, capsys.readouterr()
    assert not hub.faults["GET /datasets/me/ds/resolve/main/train_000002.bin"]  # it was served corrupted
    got = tmp_path / "gpu" / "ds"
    assert published_files(got) == published_files(built)
    assert verify_lines(got, capsys)[0] == 0

    # a rerun fetches only what is missing or wrong
    os.remove(got / "sft" / "sft_val_000000_mask.bin")
    data = bytearray((got / "val_000000.bin").read_bytes())
    data[-1] ^= 1
    (got / "val_000000.bin").write_bytes(data)
    hub.requests.clear()
    with pytest.raises(SystemExit) as exit:
        main(["download", "--hf-user", "me", "--dataset-name", "ds", "--out-dir", str(tmp_path / "gpu")])
    assert exit.value.code == 0
    fetched = sorted({p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in hub.requests
                      if m == "GET" and "/resolve/" in p})  # /datasets/me/ds/resolve/<revision>/<path>
    assert [f for f in fetched if not f.endswith("manifest.json")] == ["sft/sft_val_000000_mask.bin",
                                                                       "val_000000.bin"]
    assert published_files(got) == published_files(built)


def test_a_file_that_stays_corrupt_is_removed(built, tmp_path, hub, capsys):
    run_step("upload", [str(built), "--hf-user", "me"])
    hub.faults["GET /datasets/me/ds/resolve/main/core_eval/lm.pt"] = ["corrupt", "corrupt"]
    with pytest.raises(SystemExit) as exit:
        main(["download", "--hf-user", "me", "--dataset-name", "ds", "--out-dir", str(tmp_path / "gpu"),
              "--steps", "core-eval"])
    out = capsys.readouterr()
    assert exit.value.code == 1
    assert "core_eval/lm.pt: size or sha256 differs from the manifest" in out.out
    assert out.err.strip().splitlines()[-1].startswith("error: 1 file(s) did not match the manifest and were removed")
    assert not (tmp_path / "gpu" / "ds" / "core_eval" / "lm.pt").exists()


def test_partial_download_verifies(built, tmp_path, hub, capsys):
    run_step("upload", [str(built), "--hf-user", "me"])
    run_step("download", ["--hf-user", "me", "--dataset-name", "ds", "--out-dir", str(tmp_path / "gpu"),
                          "--num-train-shards", "2", "--steps", "pretrain"])
    got = tmp_path / "gpu" / "ds"
    shards = sorted(n for n in os.listdir(got) if n.endswith(".bin"))
    assert [n for n in shards if n.startswith("train_")] == ["train_000000.bin", "train_000001.bin"]
    assert len([n for n in shards if n.startswith("val_")]) == len([n for n in os.listdir(built) if n.startswith("val_")])
    assert not (got / "core_eval").exists()
    assert verify_lines(got, capsys)[0] == 0  # the left-out shards are recorded in .partial.json

    run_step("download", ["--hf-user", "me", "--dataset-name", "ds", "--out-dir", str(tmp_path / "tok"),
                          "--tokenizer-only"])
    assert sorted(os.listdir(tmp_path / "tok" / "ds" / "tokenizer")) == sorted(os.listdir(built / "tokenizer"))
    assert not [n for n in os.listdir(tmp_path / "tok" / "ds") if n.endswith(".bin")]


def test_a_dataset_without_manifests_downloads_with_a_warning(built, tmp_path, hub, capsys):
    legacy = tmp_path / "legacy"
    shutil.copytree(built, legacy, ignore=shutil.ignore_patterns("manifest.json", ".*"))
    shutil.copytree(legacy, os.path.join(hub.root, "old", "ds"))
    capsys.readouterr()
    run_step("download", ["--hf-user", "old", "--dataset-name", "ds", "--out-dir", str(tmp_path / "gpu")])
    out = capsys.readouterr()
    assert "has no manifest.json" in out.err and "cannot be verified" in out.err
    got = tmp_path / "gpu" / "ds"
    assert (got / "train_000000.bin").read_bytes() == (built / "train_000000.bin").read_bytes()
    assert (got / "sft" / "config.json").exists()


def test_upload_refuses_a_folder_that_does_not_match_its_manifests(built, tmp_path, hub):
    folder = copy(built, tmp_path)
    os.remove(folder / "val_000000.bin")
    with pytest.raises(InputError, match="not uploading a folder that does not match its manifests"):
        run_step("upload", [str(folder), "--hf-user", "me"])
    assert not hub.requests


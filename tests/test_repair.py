"""The same command repairs a damaged dataset: "complete" means checked, and what is damaged is made again.

Each test damages a copy of a complete folder the way a bad disk, an interrupted copy, a hand edit or a
wrong `rm` would, reruns the command that made it, and compares every file with the undamaged folder.
"""

import os
import pickle
import shutil

import pytest

from fixtures import write_corpus
from stacks_data.cli import run_step
from stacks_data.steps.verify import verify
from test_lifecycle import STEPS, dataset, pretrain_argv, step_argv, tree  # noqa: F401 (dataset: a fixture)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A complete step-1 folder, made once; each test damages a copy of it."""
    root = tmp_path_factory.mktemp("repair")
    write_corpus(root / "parquet", num_files=4, docs_per_file=60)
    (root / "baselines").mkdir()
    run_step("pretrain", pretrain_argv(root, "ref")[1:])
    return root


@pytest.fixture
def damaged(made, tmp_path):
    """(rerun, folder): a copy of the complete folder, and the command that made it."""
    folder = tmp_path / "out" / "ds"
    shutil.copytree(made / "ref" / "ds", folder)
    argv = pretrain_argv(made, "ref")[1:]
    argv[argv.index("--out-dir") + 1] = str(tmp_path / "out")
    return (lambda: run_step("pretrain", argv)), folder


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {  # the file damaged, how, and why the rerun says it made it again
    "train shard deleted": ("train_000001.bin", os.remove, "missing"),
    "val shard truncated": ("val_000000.bin", lambda p: os.truncate(p, os.path.getsize(p) - 100), "bytes, not the"),
    "junk appended to a train shard": ("train_000000.bin", lambda p: p.open("ab").write(b"junk"), "bytes, not the"),
    "manifest deleted": ("manifest.json", os.remove, "missing"),
    "config deleted": ("config.json", os.remove, "missing"),
    "one byte changed in a train shard": ("train_000002.bin", _flip_a_byte, "sha256 differs"),
    "token_bytes.pt deleted": ("tokenizer/token_bytes.pt", os.remove, "missing"),
    "report image deleted": ("tokenizer_report.png", os.remove, "missing"),
    "tokenizer.pkl replaced by another pickle": ("tokenizer/tokenizer.pkl",
                                                 lambda p: p.write_bytes(pickle.dumps({"not": "a tokenizer"})),
                                                 "recorded when it was made"),
    "training.json edited": ("tokenizer/training.json", _flip_a_byte, "sha256 differs"),
    "tokenizer folder deleted": ("tokenizer/tokenizer.pkl", lambda p: shutil.rmtree(p.parent), "missing"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_rerun_repairs_the_damage(made, damaged, capsys, case):
    rerun, folder = damaged
    name, damage, why = DAMAGE[case]
    reference = tree(made / "ref" / "ds")
    untouched = {n: os.stat(folder / n).st_ino for n in reference if n.endswith(".bin") and n != name}
    damage(folder / name)
    capsys.readouterr()
    rerun()
    out = capsys.readouterr().out
    assert "nothing to do" not in out
    said = [line for line in out.splitlines() if line.startswith("repaired: ")]
    assert any(line.startswith(f"repaired: {name} (") and why in line for line in said), out
    assert tree(folder) == reference  # every file as the undamaged run made it
    assert verify(str(folder))[0] == []
    # only what depends on the damage is made again: the other shards are the same files
    if name.endswith(".bin") or name.startswith("tokenizer/"):
        assert {n: os.stat(folder / n).st_ino for n in untouched} == untouched
    capsys.readouterr()
    rerun()
    assert "nothing to do" in capsys.readouterr().out  # repaired means complete


def test_several_damaged_files_are_repaired_in_one_run_and_each_said(made, damaged, capsys):
    rerun, folder = damaged
    shards = sorted(n for n in os.listdir(folder) if n.endswith(".bin"))
    for name in shards[::2]:
        _flip_a_byte(folder / name)
    os.remove(folder / "tokenizer_report.png")
    capsys.readouterr()
    rerun()
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("repaired: ")]
    assert sorted(line.split()[1] for line in said) == sorted(shards[::2] + ["tokenizer_report.png"])
    assert tree(folder) == tree(made / "ref" / "ds")


def test_a_shard_whose_input_changed_unseen_is_refused_in_one_line(made, damaged, monkeypatch):
    # the repair makes other bytes than were recorded (an input changed in a way its identity cannot show):
    # one line naming the shard, and the folder is not called complete
    rerun, folder = damaged
    _flip_a_byte(folder / "train_000001.bin")
    from stacks_data.steps.pretrain import pretokenize
    real = pretokenize.tokenize_row_group

    def other_tokens(task):
        tokens, *rest = real(task)
        return (tokens[::-1].copy(), *rest)

    monkeypatch.setattr(pretokenize, "tokenize_row_group", other_tokens)
    with pytest.raises(Exception) as error:
        rerun()
    assert "train_000001.bin, made again from its inputs, is not the shard recorded" in str(error.value)
    assert "\n" not in str(error.value)
    assert not (folder / "manifest.json").exists()


def test_nothing_to_do_hashes_every_file(made, damaged, monkeypatch, capsys):
    # the "complete" check reads every byte it vouches for: each listed file is hashed once
    rerun, folder = damaged
    from stacks_data.dataset import files
    hashed = []
    real = files.hash_file
    monkeypatch.setattr(files, "hash_file", lambda path: hashed.append(os.path.relpath(path, folder)) or real(path))
    capsys.readouterr()
    rerun()
    assert "nothing to do" in capsys.readouterr().out
    listed = {n for n in tree(folder) if n != "manifest.json"}
    assert sorted(hashed) == sorted(listed)


def test_a_refused_rerun_changes_nothing_even_where_it_finds_damage(made, tmp_path):
    # other flags, on a folder with a damaged tokenizer and shard: the error comes before any change
    folder = tmp_path / "out" / "ds"
    shutil.copytree(made / "ref" / "ds", folder)
    _flip_a_byte(folder / "tokenizer" / "tokenizer.pkl")
    _flip_a_byte(folder / "train_000001.bin")
    before = tree(folder)
    argv = pretrain_argv(made, "ref", "parquet", "--shard-size", "2000")[1:]
    argv[argv.index("--out-dir") + 1] = str(tmp_path / "out")
    from stacks_data.errors import OutputError
    with pytest.raises(OutputError, match="shard_size is 1000 in the folder, 2000 in the command"):
        run_step("pretrain", argv)
    assert tree(folder) == before


# ---------------------------------------------------------------- steps 2-4: rebuilt whole


@pytest.mark.parametrize("step,damage", [("core-eval", "pt byte"), ("chat-eval", "pt byte"), ("sft", "mask deleted")])
def test_steps_2_to_4_rerun_repairs(dataset, step, damage):  # noqa: F811 (dataset: the fixture)
    sub = STEPS[step][0]
    run_step(step, step_argv(step)[1:])
    reference = tree(dataset / "out" / "ds" / sub)
    folder = dataset / "out" / "ds" / sub
    if damage == "pt byte":
        _flip_a_byte(folder / sorted(n for n in os.listdir(folder) if n.endswith(".pt"))[0])
    else:
        os.remove(folder / sorted(n for n in os.listdir(folder) if n.endswith("_mask.bin"))[0])
    assert verify(str(dataset / "out" / "ds"))[0] != []
    run_step(step, step_argv(step)[1:])
    assert tree(folder) == reference
    assert verify(str(dataset / "out" / "ds"))[0] == []


def test_a_repair_that_fails_at_once_is_its_own_error(made, damaged, monkeypatch):
    # the first row group of a repair fails (a corrupt page): that error, one line, not one of the cleanup
    rerun, folder = damaged
    _flip_a_byte(folder / "train_000001.bin")
    from stacks_data.errors import InputError
    from stacks_data.steps.pretrain import pretokenize

    def corrupt(task):
        raise InputError("cannot read row group 0 (corrupt page)", task[0])

    monkeypatch.setattr(pretokenize, "tokenize_row_group", corrupt)
    with pytest.raises(InputError, match="corrupt page"):
        rerun()

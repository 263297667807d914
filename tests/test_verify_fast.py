"""verify at disk speed (issue 19): a file whose size and sha256 match its manifest is the file the step wrote,
so its deep checks (token scan, .pt load) run only with --deep; a file that does not match is still caught."""

import numpy as np

from test_hostile import built, cli, copy, resign  # noqa: F401 (built is a fixture)
from stacks_data.dataset.binfile import HEADER_BYTES


def _poke_token(path, value):
    tokens = np.memmap(path, dtype="<u2", mode="r+", offset=HEADER_BYTES)
    tokens[0] = value
    tokens.flush()
    del tokens


def test_a_matching_shard_is_trusted_by_default_and_scanned_with_deep(built, tmp_path, capsys):
    folder = copy(built, tmp_path)
    _poke_token(folder / "train_000000.bin", 60000)  # above the vocab of 320
    resign(folder)  # the manifest now lists the file as it is: only a scan can see the bad id
    code, out, _ = cli(capsys, "verify", str(folder), "--num-workers", "1")
    assert code == 0 and "ok:" in out, out
    code, out, _ = cli(capsys, "verify", str(folder), "--deep", "--num-workers", "1")
    assert code == 1 and "train_000000.bin: token id 60000 is not below the vocab size 320" in out, out


def test_a_changed_byte_is_caught_without_deep(built, tmp_path, capsys):
    folder = copy(built, tmp_path)
    _poke_token(folder / "train_000001.bin", 5)
    code, out, _ = cli(capsys, "verify", str(folder), "--num-workers", "2")
    assert code == 1 and "train_000001.bin: sha256 differs" in out, out


def test_a_pt_with_one_byte_changed_is_caught_without_deep(built, tmp_path, capsys):
    folder = copy(built, tmp_path)
    pt = next((folder / "core_eval").glob("*.pt"))
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    pt.write_bytes(bytes(data))
    code, out, _ = cli(capsys, "verify", str(folder), "--num-workers", "1")
    assert code == 1 and f"core_eval/{pt.name}: sha256 differs" in out, out

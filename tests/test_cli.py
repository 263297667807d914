import subprocess
import sys

import pytest

from conftest import ROOT
from stacks_data.cli import STEPS, main


def test_every_step_is_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert all(step in out for step in STEPS)


def test_script_reports_input_errors_in_one_line(tmp_path):
    (tmp_path / "shard_00000.parquet").write_bytes(b"not parquet")
    (tmp_path / "shard_00001.parquet").write_bytes(b"not parquet")
    result = subprocess.run(
        [sys.executable, "data/dataset_and_vocab.py", "--parquet-dir", str(tmp_path), "--num-shards", "2",
         "--tok-train-shards", "2", "--out-dir", str(tmp_path / "out"), "--skip-upload"],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}/shard_00000.parquet: not a readable parquet file")

import os

import numpy as np
import pytest

from stacks_data.errors import InputError
from stacks_data.dataset.binfile import HEADER_BYTES, MAGIC, ShardWriter, read_bin, read_header, write_bin


def test_write_read_round_trip(tmp_path):
    path = str(tmp_path / "a.bin")
    tokens = np.array([0, 1, 65535, 300], dtype=np.uint32)
    write_bin(path, tokens)
    raw = open(path, "rb").read()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[0] == MAGIC == 20240520 and header[1] == 1 and header[2] == 4
    assert not header[3:].any()
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == [0, 1, 65535, 300]
    assert read_bin(path).tolist() == [0, 1, 65535, 300]
    assert not (tmp_path / "a.bin.tmp").exists()


def test_rejects_bad_files(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_bin(str(tmp_path / "big.bin"), np.array([65536]))
    assert not list(tmp_path.iterdir())  # nothing half-written
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 2000)
    with pytest.raises(InputError, match="bad magic"):
        read_header(str(bad))
    good = str(tmp_path / "good.bin")
    write_bin(good, np.arange(10, dtype=np.uint16))
    with open(good, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(InputError, match="header announces"):
        read_header(good)


def test_shard_writer_packs_exact_shards(tmp_path):
    seen, added = [], [0]
    # on_shard: in shard order, each shard on disk, with what at_cut said as it was cut (the caller went on)
    writer = ShardWriter(str(tmp_path), ["t_{:06d}.bin", "t_{:06d}_mask.bin"], shard_size=4,
                         at_cut=lambda i: (i, added[0]),
                         on_shard=lambda i, note, stats: seen.append((i, note, stats, os.path.exists(
                             tmp_path / f"t_{i:06d}_mask.bin"))))
    added[0] = 1
    writer.add(np.arange(3), np.ones(3))
    added[0] = 2
    writer.add(np.arange(10, 17), np.zeros(7))
    writer.close(keep_partial=True)
    assert seen == [(0, (0, 2), None, True), (1, (1, 2), None, True), (2, (2, 2), None, True)]
    assert writer.tokens_written == 10 and len(writer.records) == 6
    assert read_bin(str(tmp_path / "t_000000.bin")).tolist() == [0, 1, 2, 10]
    assert read_bin(str(tmp_path / "t_000000_mask.bin")).tolist() == [1, 1, 1, 0]
    assert read_bin(str(tmp_path / "t_000001.bin")).tolist() == [11, 12, 13, 14]
    assert read_bin(str(tmp_path / "t_000002.bin")).tolist() == [15, 16]
    with pytest.raises(ValueError, match="same length"):
        writer.add(np.arange(2), np.arange(3))


def test_shard_writer_drops_partial(tmp_path):
    writer = ShardWriter(str(tmp_path), ["s_{:06d}.bin"], shard_size=4, first_index=7)
    writer.add(np.arange(6))
    writer.close(keep_partial=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_000007.bin"]

import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stacks_data.errors import InputError, NetworkError
from stacks_data.remote.hub import dataset_files


def put(root, path, body):
    p = pathlib.Path(root) / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(body)


def parquet_bytes(name):
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"name": [name] * 100}), sink)
    return sink.getvalue().to_pybytes()


def test_mirror_layout_in_name_order(tmp_path):
    for name in ["train-00001-of-00002.parquet", "train-00000-of-00002.parquet", "test-00000-of-00001.parquet"]:
        put(tmp_path / "m", f"o/n/data/{name}", name.encode())
    paths = dataset_files("o/n", "data/train-*.parquet", mirror=str(tmp_path / "m"))
    assert [pathlib.Path(p).name for p in paths] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    with pytest.raises(InputError, match="no file matches in the mirror"):
        dataset_files("o/n", "data/validation-*.parquet", mirror=str(tmp_path / "m"))


def test_hub_download_cache_and_offline_reuse(hub, tmp_path, monkeypatch):
    for name in ["train-00001-of-00002.parquet", "train-00000-of-00002.parquet", "test-00000-of-00001.parquet"]:
        put(hub.root, f"o/n/data/{name}", parquet_bytes(name))
    hub.faults["/datasets/o/n/resolve/main/data/train-00000-of-00002.parquet"] = ["500", "truncate"]
    cache = str(tmp_path / "cache")
    paths = dataset_files("o/n", "data/train-*.parquet", cache_dir=cache)
    assert paths == [f"{cache}/o/n/data/train-00000-of-00002.parquet", f"{cache}/o/n/data/train-00001-of-00002.parquet"]
    assert pq.read_table(paths[0]).column("name")[0].as_py() == "train-00000-of-00002.parquet"
    assert ("GET", "/api/datasets/o/n/tree/main/data") in hub.requests

    # offline (HF_HUB_OFFLINE=1; huggingface_hub reads it at import): the complete cache of the last listing
    # serves, without a request
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    hub.requests.clear()
    assert dataset_files("o/n", "data/train-*.parquet", cache_dir=cache) == paths
    assert hub.requests == []
    # ... but not an incomplete one, nor one never listed: an error that names the offline form
    pathlib.Path(paths[1]).unlink()
    with pytest.raises(NetworkError, match=r"HF_HUB_OFFLINE is set .*: pass --hf-mirror DIR"):
        dataset_files("o/n", "data/train-*.parquet", cache_dir=cache)
    with pytest.raises(NetworkError, match="HF_HUB_OFFLINE"):
        dataset_files("o/n", "data/test-*.parquet", cache_dir=cache)


def test_unreachable_hub_fails_fast_naming_the_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://no-such-hub.invalid")
    with pytest.raises(NetworkError, match=r"cannot resolve no-such-hub.invalid .*--hf-mirror DIR"):
        dataset_files("o/n", "data/train-*.parquet", cache_dir=str(tmp_path / "cache"))

import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub.errors import OfflineModeIsEnabled

from stacks_data.hub import dataset_files


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
    with pytest.raises(FileNotFoundError, match="no file matches"):
        dataset_files("o/n", "data/validation-*.parquet", mirror=str(tmp_path / "m"))


def test_hub_download_cache_and_offline_reuse(file_server, tmp_path, monkeypatch):
    for name in ["train-00001-of-00002.parquet", "train-00000-of-00002.parquet", "test-00000-of-00001.parquet"]:
        put(file_server.root, f"o/n/data/{name}", parquet_bytes(name))
    file_server.faults["/datasets/o/n/resolve/main/data/train-00000-of-00002.parquet"] = ["500", "truncate"]
    cache = str(tmp_path / "cache")
    paths = dataset_files("o/n", "data/train-*.parquet", cache_dir=cache, endpoint=file_server.url)
    assert paths == [f"{cache}/o/n/data/train-00000-of-00002.parquet", f"{cache}/o/n/data/train-00001-of-00002.parquet"]
    assert pq.read_table(paths[0]).column("name")[0].as_py() == "train-00000-of-00002.parquet"
    assert "/api/datasets/o/n/tree/main/data" in file_server.requests

    # offline (HF_HUB_OFFLINE=1; huggingface_hub reads it at import): the complete cache of the last listing
    # serves, without a request
    monkeypatch.setattr("huggingface_hub.constants.is_offline_mode", lambda: True)
    file_server.requests.clear()
    assert dataset_files("o/n", "data/train-*.parquet", cache_dir=cache, endpoint=file_server.url) == paths
    assert file_server.requests == []
    # ... but not an incomplete one, nor one never listed
    pathlib.Path(paths[1]).unlink()
    with pytest.raises(OfflineModeIsEnabled):
        dataset_files("o/n", "data/train-*.parquet", cache_dir=cache, endpoint=file_server.url)
    with pytest.raises(OfflineModeIsEnabled):
        dataset_files("o/n", "data/test-*.parquet", cache_dir=cache, endpoint=file_server.url)

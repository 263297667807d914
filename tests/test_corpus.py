"""Corpus presets: fineweb-edu, climbmix (shards in climbmix/), and any parquet dataset on the hub."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures import make_docs, write_corpus
from stacks_data.dataset.binfile import read_bin
from stacks_data.cli import run_step
from stacks_data.sources.corpus import get_corpus, shard_names
from stacks_data.errors import FlagError, InputError
from stacks_data.tokenizer import RustBPETokenizer


def small(root, *flags):
    (root / "baselines").mkdir(exist_ok=True)
    return ["--tok-train-shards", "2", "--vocab-size", "320", "--shard-size", "1000", "--num-workers", "1",
            "--skip-upload", "--out-dir", str(root / "out"), "--baselines-dir", str(root / "baselines"), *flags]


def test_presets():
    fineweb, climbmix = get_corpus("fineweb-edu"), get_corpus("climbmix")
    assert (fineweb.repo_id, fineweb.default_num_shards, fineweb.cache_name, fineweb.bin_subdir) == \
           ("karpathy/fineweb-edu-100b-shuffle", 370, "base_data", "")
    assert fineweb.default_dataset_name(32768, 8, 370) == "fineweb_edu_32k_8_370"  # the seed's name
    assert (climbmix.repo_id, climbmix.default_num_shards, climbmix.cache_name, climbmix.bin_subdir) == \
           ("karpathy/climbmix-400b-shuffle", 170, "base_data_climbmix", "climbmix")
    assert climbmix.default_dataset_name(32768, 8, 170) == "climbmix_32k_8_170"
    assert shard_names(climbmix, 3, "*.parquet", "", False) == [f"shard_0000{i}.parquet" for i in range(3)]
    with pytest.raises(FlagError, match=r"climbmix has 6,543 shards, asked for 7,000 \(--num-shards\)"):
        shard_names(climbmix, 7000, "*.parquet", "", False)
    with pytest.raises(FlagError, match=r"unknown corpus 'c4' \(--corpus\)"):
        get_corpus("c4")


def test_climbmix_writes_its_shards_to_the_climbmix_folder(tmp_path):
    docs = write_corpus(tmp_path / "parquet", num_files=4)
    run_step("pretrain", ["--corpus", "climbmix", "--parquet-dir", str(tmp_path / "parquet"), "--num-shards", "4",
                          *small(tmp_path)])
    out = tmp_path / "out" / "climbmix_320_2_4"  # the default name follows the corpus and the flags
    config = json.loads((out / "config.json").read_text())
    assert config["bin_subdir"] == "climbmix" and config["source"]["corpus"] == "climbmix"
    assert config["source"]["repo_id"] == "karpathy/climbmix-400b-shuffle"
    assert not [n for n in os.listdir(out) if n.endswith(".bin")]
    tok = RustBPETokenizer.from_directory(out / "tokenizer")
    val = read_bin(str(out / "climbmix" / "val_000000.bin")).tolist()
    assert val[:50] == [t for d in docs[3] for t in [tok.get_bos_token_id()] + tok.encode(d)][:50]


def write_hf_dataset(folder, column="content", files=("data/part-00000.parquet", "data/part-00001.parquet",
                                                      "data/part-00002.parquet")):
    texts = []
    for i, name in enumerate(files):
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        docs = make_docs(60, seed=20 + i)
        pq.write_table(pa.table({column: docs, "id": list(range(60))}), os.path.join(folder, name), row_group_size=25)
        texts.append(docs)
    return texts


def test_any_parquet_dataset_on_the_hub(tmp_path, hub):
    texts = write_hf_dataset(os.path.join(hub.root, "me", "web"))
    os.makedirs(os.path.join(hub.root, "me", "web", "other"))
    (tmp_path / "cache").mkdir()
    run_step("pretrain", ["--corpus", "hf:me/web", "--files", "data/*.parquet", "--text-column", "content",
                          "--parquet-dir", str(tmp_path / "cache"), *small(tmp_path)])
    out = tmp_path / "out" / "web_320_2_all"  # every matching file: the last one is val
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["val_files"] == ["data/part-00002.parquet"]
    assert config["source"]["train_files"] == ["data/part-00000.parquet", "data/part-00001.parquet"]
    assert config["source"]["text_column"] == "content" and config["source"]["repo_id"] == "me/web"
    assert config["val_documents"] == len(texts[2]) and config["train_documents"] == len(texts[0]) + len(texts[1])
    assert sorted(n for n in os.listdir(tmp_path / "cache" / "data") if not n.startswith(".")) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]

    # offline, from a folder in the repo's layout: the same shards, no request
    hub.requests.clear()
    run_step("pretrain", ["--corpus", "hf:me/web", "--files", "data/*.parquet", "--text-column", "content",
                          "--parquet-dir", str(tmp_path / "cache"), *small(tmp_path, "--out-dir",
                                                                           str(tmp_path / "offline"))])
    assert hub.requests == []
    offline = tmp_path / "offline" / "web_320_2_all"
    bins = sorted(n for n in os.listdir(out) if n.endswith(".bin"))
    assert bins and all((out / n).read_bytes() == (offline / n).read_bytes() for n in bins)


def test_a_missing_text_column_is_named(tmp_path, hub):
    write_hf_dataset(os.path.join(hub.root, "me", "web"), column="body")
    (tmp_path / "cache").mkdir()
    with pytest.raises(InputError, match=r"missing column\(s\) \['content'\].* \(.*/part-00000.parquet, from http"):
        run_step("pretrain", ["--corpus", "hf:me/web", "--files", "data/*.parquet", "--text-column", "content",
                              "--parquet-dir", str(tmp_path / "cache"), *small(tmp_path)])

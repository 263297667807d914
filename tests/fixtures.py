"""Small deterministic inputs the tests build for themselves."""

import random

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be "
         "river city school water energy light music history science number garden bridge planet "
         "student teacher market winter summer mountain island library village ocean forest").split()
EXTRAS = ["Übermut und Größe", "서울의 봄", "x = 12 + 345;", "<|bos|> is not special here", "naïve café", "---- +-----+"]


def make_docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 60))]
        if rng.random() < 0.3:
            words.append(rng.choice(EXTRAS))
        docs.append(" ".join(words).capitalize() + ".")
    return docs


def write_corpus(folder, num_files: int = 4, docs_per_file: int = 60, row_group_size: int = 25) -> list[list[str]]:
    """shard_00000.parquet ... in `folder`, one `text` column; returns the documents per file."""
    folder.mkdir(parents=True, exist_ok=True)
    all_docs = []
    for i in range(num_files):
        docs = make_docs(docs_per_file, seed=i)
        pq.write_table(pa.table({"text": docs}), folder / f"shard_{i:05d}.parquet", row_group_size=row_group_size)
        all_docs.append(docs)
    return all_docs


def published_files(dataset_dir) -> dict:
    """{path in the dataset: bytes} of what the manifests in dataset_dir list, the manifests included."""
    import json
    import os

    out = {}
    for root, _, names in os.walk(dataset_dir):
        if "manifest.json" in names and not os.path.basename(root).startswith("."):
            manifest = os.path.join(root, "manifest.json")
            paths = [f["path"] for f in json.load(open(manifest))["files"]]
            paths.append(os.path.relpath(manifest, dataset_dir).replace(os.sep, "/"))
            out.update({p: open(os.path.join(dataset_dir, p), "rb").read() for p in paths})
    return out


def repo_files(hub, repo_id) -> dict:
    """{path: bytes} of what a dataset repo of the fake hub holds."""
    import os

    folder = os.path.join(hub.root, repo_id)
    return {os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/"): open(os.path.join(root, n), "rb").read()
            for root, _, names in os.walk(folder) for n in names}

"""
Pre-tokenizing parquet documents into .bin shards: the hot path of the pretraining step.

Work items are parquet row groups, tokenized in worker processes (stacks_data.parallel) and packed
in order, so the shards are the same for any number of workers. Each document becomes <|bos|> + its
tokens; the stream is cut into shards of exactly shard_size tokens. After every shard the position in
the stream is saved, so a restart re-tokenizes at most one row group's worth of finished work.
"""

import json
import os
import time

import numpy as np
from tqdm import tqdm

from stacks_data.binfile import ShardWriter
from stacks_data.files import human_bytes, write_json
from stacks_data.parallel import ordered_map
from stacks_data.parquet import check_texts, open_parquet
from stacks_data.tokenizer import RustBPETokenizer

STATE_FILE = ".pretokenize.json"  # progress, for resuming; lives in the dataset folder, not uploaded

_worker_tok = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tok
    _worker_tok = RustBPETokenizer.from_directory(tokenizer_dir)


def row_groups(paths: list[str]) -> list[tuple[str, int, int]]:
    """The work items of a split: (path, row group, index of its first row), in stream order."""
    tasks = []
    for path in paths:
        metadata = open_parquet(path, ["text"]).metadata
        first_row = 0
        for group in range(metadata.num_row_groups):
            tasks.append((path, group, first_row))
            first_row += metadata.row_group(group).num_rows
    return tasks


def tokenize_row_group(task: tuple[str, int, int]) -> tuple[np.ndarray, int, int]:
    """(tokens, documents, characters) of one parquet row group: each document is <|bos|> + its tokens."""
    path, group, first_row = task
    column = open_parquet(path, ["text"]).read_row_group(group, columns=["text"]).column("text")
    check_texts(column, path, first_row, "text")
    texts = column.to_pylist()
    core = _worker_tok.enc._core_bpe
    bos = np.array([_worker_tok.get_bos_token_id()], dtype=np.uint32)
    # encode_to_tiktoken_buffer with no allowed specials == encode_ordinary, but hands back a buffer:
    # no Python int per token
    pieces = []
    for text in texts:
        pieces.append(bos)
        pieces.append(np.frombuffer(core.encode_to_tiktoken_buffer(text, set()), dtype=np.uint32))
    tokens = np.concatenate(pieces).astype(np.uint16) if pieces else np.empty(0, np.uint16)
    return tokens, len(texts), sum(map(len, texts))


def pretokenize(tok: RustBPETokenizer, tokenizer_dir: str, paths: list[str], bin_dir: str, shard_size: int,
                num_workers: int, keep_partial: bool, state_path: str) -> dict:
    """Tokenize val (the last path) then train (the others) into shards; resumes from state_path."""
    run_key = {"tokenizer": tok.fingerprint(), "files": [os.path.basename(p) for p in paths],
               "shard_size": shard_size, "keep_partial": keep_partial, "bin_dir": os.path.abspath(bin_dir)}
    state = json.load(open(state_path)) if os.path.exists(state_path) else None
    if state is None or state["key"] != run_key:
        remove_shards(bin_dir, reason="stale" if state else "left without a progress file")
        config = os.path.join(os.path.dirname(state_path), "config.json")
        if os.path.exists(config):
            os.remove(config)  # it described the old shards
        state = {"key": run_key, "splits": {}}
    os.makedirs(bin_dir, exist_ok=True)
    stats = {}
    for split, split_paths in (("val", paths[-1:]), ("train", paths[:-1])):
        stats[split] = tokenize_split(split, split_paths, bin_dir, shard_size, num_workers,
                                      keep_partial or split == "val", tokenizer_dir, state, state_path)
    return stats


def remove_shards(bin_dir: str, reason: str) -> None:
    """Shards that a progress file does not vouch for are not mixed with fresh ones."""
    if not os.path.isdir(bin_dir):
        return
    old = [f for f in os.listdir(bin_dir) if f.endswith(".bin") and f.startswith(("train_", "val_"))]
    if old:
        print(f"removing {len(old)} {reason} .bin shards in {bin_dir}")
        for f in old:
            os.remove(os.path.join(bin_dir, f))


def tokenize_split(split, paths, bin_dir, shard_size, num_workers, keep_partial, tokenizer_dir,
                   state, state_path) -> dict:
    done = state["splits"].get(split, {})
    if done.get("complete"):
        print(f"{split}: already tokenized ({done['shards']} shards)")
        return done
    tasks = row_groups(paths)
    # resume point: the task in which the last finished shard ended, and the offset into its tokens
    first_task, skip = done.get("task", 0), done.get("offset", 0)
    totals = {"docs": done.get("docs_before_task", 0), "chars": done.get("chars_before_task", 0)}
    position = done.get("shards", 0) * shard_size - skip  # stream position of first_task's first token
    task_start = {"index": first_task, "position": position, **totals}

    def on_shard(index, _):
        # shard `index` is on disk: record where it ended, so a restart picks up from there
        end = (index + 1) * shard_size
        state["splits"][split] = {"shards": index + 1, "task": task_start["index"],
                                  "offset": end - task_start["position"],
                                  "docs_before_task": task_start["docs"], "chars_before_task": task_start["chars"]}
        write_json(state_path, state)

    writer = ShardWriter(bin_dir, [f"{split}_{{:06d}}.bin"], shard_size,
                         first_index=done.get("shards", 0), on_shard=on_shard)
    t0 = time.time()
    new_tokens = 0
    progress = tqdm(total=len(tasks), initial=first_task, desc=f"tokenize {split}", unit="rowgroup")
    results = ordered_map(tokenize_row_group, tasks[first_task:], num_workers, _init_worker, (tokenizer_dir,))
    for index, (tokens, docs, chars) in enumerate(results, start=first_task):
        task_start.update(index=index, position=position, docs=totals["docs"], chars=totals["chars"])
        writer.add(tokens[skip:])
        new_tokens += len(tokens) - skip
        skip = 0
        position += len(tokens)
        totals["docs"] += docs
        totals["chars"] += chars
        progress.update()
        progress.set_postfix(tok_per_s=f"{new_tokens / max(time.time() - t0, 1e-9):,.0f}")
    progress.close()
    dropped = 0 if keep_partial else writer.fill
    writer.close(keep_partial)
    shards = writer.index
    result = {"complete": True, "shards": shards, "tokens": position - dropped, "dropped_tokens": dropped,
              "documents": totals["docs"], "chars": totals["chars"],
              "bytes": sum(os.path.getsize(os.path.join(bin_dir, f"{split}_{i:06d}.bin")) for i in range(shards))}
    state["splits"][split] = result
    write_json(state_path, state)
    seconds = time.time() - t0
    print(f"{split}: {result['documents']:,} docs -> {result['tokens']:,} tokens in {shards} shards "
          f"({human_bytes(result['bytes'])}); this run: {new_tokens:,} tokens in {seconds:.1f}s "
          f"({new_tokens / max(seconds, 1e-9):,.0f} tok/s)" + (f"; dropped last {dropped:,} tokens" if dropped else ""))
    return result

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
from stacks_data.files import human_bytes, remove_outputs, write_json
from stacks_data.parallel import ordered_map
from stacks_data.parquet import check_texts, open_parquet
from stacks_data.tokenizer import RustBPETokenizer

STATE_FILE = ".pretokenize.json"  # progress, for resuming; lives in the dataset folder, not uploaded
SHARD_NAME = r"(train|val)_\d{6}\.bin"

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
    # one thread: a worker is one core's worth of work, the pool provides the parallelism
    column = open_parquet(path, ["text"]).read_row_group(group, columns=["text"], use_threads=False).column("text")
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
    """Tokenize val (the last path) then train (the others) into shards; resumes from state_path.

    Returns per split: shards, tokens, dropped_tokens, documents, chars, bytes.
    """
    run_key = {"tokenizer": tok.fingerprint(), "files": [os.path.basename(p) for p in paths],
               "shard_size": shard_size, "keep_partial": keep_partial, "bin_dir": os.path.abspath(bin_dir)}
    state = json.load(open(state_path)) if os.path.exists(state_path) else None
    if state is None or state["key"] != run_key:
        # shards a progress file does not vouch for (other settings, another tokenizer, an older
        # --bin-subdir, or no progress file at all) are removed, never mixed with fresh ones
        old_dirs = {bin_dir, state["key"]["bin_dir"]} if state else {bin_dir}
        removed = sum(remove_outputs(d, SHARD_NAME) for d in old_dirs)
        removed += remove_outputs(os.path.dirname(state_path), r"config\.json")  # it described them
        if removed:
            print(f"removed {removed} files of an earlier run with other settings")
        state = {"key": run_key, "splits": {}}
    os.makedirs(bin_dir, exist_ok=True)

    packers = [SplitPacker(split, row_groups(split_paths), bin_dir, shard_size, keep_partial or split == "val",
                           state, state_path)
               for split, split_paths in (("val", paths[-1:]), ("train", paths[:-1]))]
    # one pool for both splits, so workers start once; val's tasks come first and it is flushed on its own
    work = [(packer, index) for packer in packers for index in packer.remaining()]
    t0, new_tokens = time.time(), 0
    progress = tqdm(total=sum(len(p.tasks) for p in packers), desc="tokenize", unit="rowgroup",
                    initial=sum(len(p.tasks) for p in packers) - len(work))
    results = ordered_map(tokenize_row_group, [packer.tasks[index] for packer, index in work], num_workers,
                          _init_worker, (tokenizer_dir,))
    for (packer, index), result in zip(work, results):
        new_tokens += packer.add(index, *result)
        progress.update()
        progress.set_postfix(tok_per_s=f"{new_tokens / max(time.time() - t0, 1e-9):,.0f}")
    progress.close()
    stats = {packer.split: packer.finish() for packer in packers}
    seconds = time.time() - t0
    print(f"tokenized {new_tokens:,} tokens in {seconds:.1f}s this run ({new_tokens / max(seconds, 1e-9):,.0f} tok/s)")
    return stats


class SplitPacker:
    """Packs one split's row-group results, in order, into its shards, and keeps its resume point.

    The resume point is the task in which the last finished shard ended and the offset into that task's
    tokens; docs/chars before that task are kept so that the counts come out right after a restart.
    """

    def __init__(self, split, tasks, bin_dir, shard_size, keep_partial, state, state_path):
        self.split, self.tasks, self.bin_dir, self.shard_size = split, tasks, bin_dir, shard_size
        self.keep_partial, self.state, self.state_path = keep_partial, state, state_path
        done = state["splits"].get(split, {})
        self.complete = done.get("complete", False)
        self.result = done if self.complete else None
        self.first_task, self.skip = done.get("task", 0), done.get("offset", 0)
        self.docs, self.chars = done.get("docs_before_task", 0), done.get("chars_before_task", 0)
        self.position = done.get("shards", 0) * shard_size - self.skip  # stream position of first_task
        self.task_start = (self.first_task, self.position, self.docs, self.chars)
        self.writer = ShardWriter(bin_dir, [f"{split}_{{:06d}}.bin"], shard_size,
                                  first_index=done.get("shards", 0), on_shard=self._on_shard)

    def remaining(self) -> range:
        return range(len(self.tasks) if self.complete else self.first_task, len(self.tasks))

    def add(self, index: int, tokens: np.ndarray, docs: int, chars: int) -> int:
        """Append task `index`'s tokens (minus what a previous run already wrote); returns tokens added."""
        self.task_start = (index, self.position, self.docs, self.chars)
        skip, self.skip = self.skip, 0
        self.writer.add(tokens[skip:])
        self.position += len(tokens)
        self.docs += docs
        self.chars += chars
        if index == len(self.tasks) - 1:
            self.finish()
        return len(tokens) - skip

    def _on_shard(self, index: int, _) -> None:
        # shard `index` is on disk: record where it ended, so a restart picks up from there
        task, position, docs, chars = self.task_start
        self.state["splits"][self.split] = {"shards": index + 1, "task": task,
                                            "offset": (index + 1) * self.shard_size - position,
                                            "docs_before_task": docs, "chars_before_task": chars}
        write_json(self.state_path, self.state)

    def finish(self) -> dict:
        if self.complete:
            return self.result
        dropped = 0 if self.keep_partial else self.writer.fill
        self.writer.close(self.keep_partial)
        shards = self.writer.index
        self.result = {"complete": True, "shards": shards, "tokens": self.position - dropped,
                       "dropped_tokens": dropped, "documents": self.docs, "chars": self.chars,
                       "bytes": sum(os.path.getsize(os.path.join(self.bin_dir, f"{self.split}_{i:06d}.bin"))
                                    for i in range(shards))}
        self.complete = True
        self.state["splits"][self.split] = self.result
        write_json(self.state_path, self.state)
        print(f"{self.split}: {self.docs:,} docs -> {self.result['tokens']:,} tokens in {shards} shards "
              f"({human_bytes(self.result['bytes'])})" + (f"; dropped the last {dropped:,}" if dropped else ""))
        return self.result

"""
Pre-tokenizing parquet documents into .bin shards: the hot path of the pretraining step.

Work items are parquet row groups, tokenized in worker processes (stacks_data.executors) and packed
in order, so the shards are the same for any number of workers. Each document becomes <|bos|> + its
tokens; the stream is cut into shards of exactly shard_size tokens. Validation (the last file) is
packed first and its last shard flushed however short; then train.

It resumes from, and records each finished shard in, the resume state (resume.py); finished shards
found damaged are first made again from their own spans of input (ShardRepair).
"""

import collections
import os
import threading
import time

import numpy as np

from stacks_data.dataset.binfile import ShardWriter, read_bin
from stacks_data.dataset.doc_stats import WINDOWS, DocStats, bos_positions
from stacks_data.errors import InputError, OutputError
from stacks_data.dataset.files import human_bytes
from stacks_data.executors import Executor, worker_state
from stacks_data.sources.parquet import file_identity, open_parquet, read_texts, row_group_starts
from stacks_data.progress import bar, say
from stacks_data.steps.pretrain.resume import (STATE_FILE, ResumeState, input_names, reading_order, repair_files,
                                              repair_span, resume_point, resuming_files, shard_name, split_files)
from stacks_data.tokenizer import RustBPETokenizer

# ------------------------------------------------------------------------------------ worker


def tokenize_row_group(task: tuple[str, int, int, str]) -> tuple[np.ndarray, int, int, int, np.ndarray]:
    """(tokens, documents, characters, encoder mismatches, where the <|bos|> tokens are) of one parquet
    row group: each document is <|bos|> + its tokens."""
    path, group, first_row, column = task
    tok: RustBPETokenizer = worker_state()
    texts = read_texts(open_parquet(path, [column]), path, group, first_row, column)
    mismatches = tok.encoder.mismatches
    # the whole row group in one call, one flat buffer: no Python int per token
    ids, offsets = tok.encoder.encode_batch(texts, first_row)
    dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.uint32  # the shard writer's format holds it
    tokens = np.insert(ids.astype(dtype), offsets[:-1], tok.get_bos_token_id())  # <|bos|> before each
    # known here for free: the main process need not search the tokens for them (document statistics)
    bos = offsets[:-1].astype(np.int64) + np.arange(len(texts), dtype=np.int64)
    return tokens, len(texts), sum(map(len, texts)), tok.encoder.mismatches - mismatches, bos


def worker_setup(tokenizer_dir: str, encoder: str) -> tuple:
    """What each worker runs once before its row groups (Executor.map's setup): the tokenizer, loaded
    and self-checked."""
    return RustBPETokenizer.for_work, (tokenizer_dir, encoder)


def describe_task(task: tuple[str, int, int, str]) -> str:
    path, group, first_row, _ = task
    return f"{path} row group {group} (rows from {first_row})"


class SplitPacker:
    """Packs one split's row-group results, in order, into its shards, and keeps its resume point."""

    def __init__(self, split: str, files: list[str], bin_dir: str, shard_size: int, keep_partial: bool,
                 progress: ResumeState, bos_id: int, windows: tuple[int, ...], token_dtype: str):
        self.split, self.files, self.bin_dir, self.shard_size = split, files, bin_dir, shard_size
        self.keep_partial, self.progress = keep_partial, progress
        self.done = progress.split(split)
        shards = self.done["shards"]
        last = resume_point(self.done)
        self.start = (last["file"], last["group"])
        self.skip = last["offset"]
        self.docs, self.chars = last["docs"], last["chars"]
        self.mismatches = last.get("mismatches", 0)  # documents the fast encoder got wrong (see encoder.py)
        self.position = len(shards) * shard_size - self.skip  # stream position at the start of that group
        self.group_start = (*self.start, self.position, self.docs, self.chars, self.mismatches)
        self.stats = self._resumed_stats(bos_id, windows)
        self.writer = ShardWriter(bin_dir, [f"{split}_{{:06d}}.bin"], shard_size, first_index=len(shards),
                                  on_shard=self._on_shard, at_cut=self._at_cut, stats=self.stats,
                                  token_dtype=token_dtype)

    def _resumed_stats(self, bos_id: int, windows: tuple[int, ...]) -> DocStats:
        """The document statistics of the finished shards: as saved with the last one, else (a state of
        another run, or the shards rolled back) counted again from the shards on disk."""
        saved, shards = self.done.get("doc_stats"), self.done["shards"]
        if saved and saved["shards"] == len(shards) and tuple(saved["state"]["windows"]) == windows:
            return DocStats.from_state(saved["state"])
        stats = DocStats(windows)
        for index in range(len(shards)):
            tokens = read_bin(os.path.join(self.bin_dir, shard_name(self.split, index)))
            stats.feed(len(tokens), bos_positions(tokens, bos_id))
        return stats

    @property
    def complete(self) -> bool:
        return "result" in self.done

    def tasks(self, column: str, shards, left: dict):
        """The remaining work items (path, row group, first row, column), in stream order, with where
        they come from: (file index, row group, whether it is the file's last).

        shards.get(path) waits for a file that is still downloading; left[path] counts the file's row
        groups not yet done by the workers (the caller releases the file at 0).
        """
        if self.complete:
            return
        first_file, first_group = self.start
        for index in range(first_file, len(self.files)):
            path = shards.get(self.files[index])
            starts = row_group_starts(path, column)
            identity, name = file_identity(path), self.progress.names[path]
            if index == first_file and self.done["shards"] and self.progress.identity(name, identity) != identity:
                # the run goes on inside this file, after tokens of its earlier content: never mix them
                raise InputError(f"{name} changed during this run, after it was checked", path,
                                 "rerun the same command: it tokenizes the changed file again")
            self.progress.tokenizing(name, identity)
            groups = [(g, row) for g, row in starts if (index, g) >= (first_file, first_group)]
            left[path] = len(groups)
            if not groups:
                shards.release(path)
            for group, first_row in groups:
                yield (index, group, group == groups[-1][0]), (path, group, first_row, column)

    def add(self, where: tuple[int, int], tokens: np.ndarray, docs: int, chars: int, mismatches: int,
            bos: np.ndarray) -> int:
        """Append one row group's tokens (minus what an earlier run already wrote); returns tokens added."""
        self.group_start = (*where[:2], self.position, self.docs, self.chars, self.mismatches)
        skip, self.skip = self.skip, 0
        self.writer.add(tokens[skip:], bos=bos[np.searchsorted(bos, skip):] - skip)
        self.position += len(tokens)
        self.docs += docs
        self.chars += chars
        self.mismatches += mismatches
        return len(tokens) - skip

    def _at_cut(self, index: int) -> dict:
        """Where shard `index` ends in the input, known as it is cut (the counts are those before that row
        group: a restart tokenizes it again and counts it then)."""
        file, group, position, docs, chars, mismatches = self.group_start
        return {"file": file, "group": group, "offset": (index + 1) * self.shard_size - position, "docs": docs,
                "chars": chars, "mismatches": mismatches}

    def _on_shard(self, index: int, end: dict, stats: dict) -> None:
        # shard `index` is on disk: record where it ended (and the statistics up to there), so a restart
        # picks up from there
        record = self.writer.records[-1]
        self.done["shards"].append({**end, "size": record.size, "sha256": record.sha256})
        self.done["doc_stats"] = {"shards": index + 1, "state": stats}
        self.progress.save()

    def finish(self) -> dict:
        if self.complete:  # the statistics as this run's --window asks (they were resumed or counted again)
            return {**self.done["result"], "doc_stats": self.stats.result()}
        dropped = 0 if self.keep_partial else self.writer.fill
        self.writer.close(self.keep_partial)
        shards = self.done["shards"]
        self.done["result"] = {"shards": len(shards), "tokens": self.position - dropped, "dropped_tokens": dropped,
                               "documents": self.docs, "chars": self.chars, "encoder_mismatches": self.mismatches,
                               "bytes": sum(s["size"] for s in shards), "doc_stats": self.stats.result()}
        self.progress.save()
        say(f"{self.split}: {self.docs:,} docs -> {self.position - dropped:,} tokens in {len(shards)} shards "
              f"({human_bytes(self.done['result']['bytes'])})" + (f"; dropped the last {dropped:,}" if dropped else ""))
        return self.done["result"]

    def shard_records(self) -> list[tuple[str, int, str]]:
        """(path, size, sha256) of every shard of the split, this run's and earlier runs'."""
        return [(os.path.join(self.bin_dir, shard_name(self.split, i)), s["size"], s["sha256"])
                for i, s in enumerate(self.done["shards"])]


class ShardRepair:
    """One finished shard made again from its span of input: the row groups from where the shard before
    it ended to where it ended. Same inputs (claim_folder checked them) and tokenizer: the same bytes, which
    finish() checks against the sha256 recorded when the shard was first made."""

    def __init__(self, split: str, index: int, files: list[str], bin_dir: str, shard_size: int,
                 progress: ResumeState, token_dtype: str):
        start, self.record = repair_span(progress, split, index)
        self.files, self.start, self.skip = files, (start["file"], start["group"]), start["offset"]
        self.end = (self.record["file"], self.record["group"])
        self.index, self.path = index, os.path.join(bin_dir, shard_name(split, index))
        self.writer = ShardWriter(bin_dir, [f"{split}_{{:06d}}.bin"], shard_size, first_index=index,
                                  token_dtype=token_dtype)

    def tasks(self, column: str, shards):
        for index in range(self.start[0], self.end[0] + 1):
            path = shards.get(self.files[index])
            for group, first_row in row_group_starts(path, column):
                if self.start <= (index, group) <= self.end:
                    yield path, group, first_row, column

    def add(self, tokens: np.ndarray) -> None:
        if self.writer.index > self.index:  # cut: the rest of the row group belongs to the next shard
            return
        skip, self.skip = self.skip, 0
        self.writer.add(tokens[skip:skip + self.writer.shard_size - self.writer.fill])

    def finish(self) -> None:
        self.writer.close(keep_partial=self.writer.index == self.index)  # a split's last shard may be shorter
        made = self.writer.records[0] if self.writer.records else None
        if made is None or (made.size, made.sha256) != (self.record["size"], self.record["sha256"]):
            raise OutputError(f"{os.path.basename(self.path)}, made again from its inputs, is not the shard "
                              f"recorded when it was made: an input changed without changing its size or its "
                              f"footer", self.path, f"restore the inputs, or delete {STATE_FILE} and the "
                              f"shards next to it to make them all again")


def repair_shards(paths: list[str], bin_dir: str, shard_size: int, executor: Executor, setup: tuple, column: str,
                  progress: ResumeState, shards, token_dtype: str) -> None:
    """Make again the finished shards that claim_folder found damaged (progress.repairs), one pool for all."""
    read, still_read = repair_files(progress, paths), set(resuming_files(progress, paths))
    repairs = [ShardRepair(split, index, files, bin_dir, shard_size, progress, token_dtype)
               for split, files in split_files(paths).items() for index in progress.repairs[split]]
    if not repairs:
        return
    pending = collections.deque()

    def work():
        for repair in repairs:
            for task in repair.tasks(column, shards):
                pending.append(repair)
                yield task

    current = None
    results = executor.map(tokenize_row_group, work(), describe=describe_task, setup=setup)
    try:
        for tokens, *_ in bar(iterable=results, desc="repair", unit="row group"):
            repair = pending.popleft()
            if repair is not current and current is not None:
                current.finish()  # one shard's tokens at a time
            current = repair
            repair.add(tokens)
        current.finish()
    except BaseException:
        if current is not None:  # (an error before the first result: no shard being written)
            current.writer.abandon()
        raise
    progress.repairs = {split: [] for split in progress.repairs}
    for path in dict.fromkeys(read):
        if path not in still_read:
            shards.release(path)


class LocalShards:
    """The input files, all on disk already (what ShardStream is when nothing is downloaded)."""

    waited = downloaded_bytes = downloads = 0

    def __init__(self, order: list[str]):
        self.order = order

    def get(self, path: str) -> str:
        return path

    def release(self, path: str) -> None:
        pass

    def close(self) -> None:
        pass

    def shards_ready(self) -> int:
        return len(self.order)


def pretokenize(tokenizer_dir: str, paths: list[str], bin_dir: str, shard_size: int, executor: Executor,
                keep_partial: bool, column: str, encoder: str, progress: ResumeState, shards=None, bos_id: int = 0,
                windows: tuple[int, ...] = WINDOWS, token_dtype: str = "uint16") -> tuple[dict, list]:
    """Tokenize val (the last path) then train (the others) into shards, resuming from `progress`.

    shards serves the files of reading_order() as the workers need them (a corpus.ShardStream downloads
    them meanwhile); by default they are all on disk. Returns per split its stats (shards, tokens,
    dropped_tokens, documents, chars, bytes), and the (path, size, sha256) of every shard.
    """
    os.makedirs(bin_dir, exist_ok=True)
    progress.names = input_names(paths)
    order = reading_order(progress, paths)
    shards = shards or LocalShards(order)
    if shards.order != order:
        raise RuntimeError("the shard stream reads other files than the progress file says")
    setup = worker_setup(tokenizer_dir, encoder)
    repair_shards(paths, bin_dir, shard_size, executor, setup, column, progress, shards, token_dtype)
    packers = [SplitPacker(split, files, bin_dir, shard_size, keep_partial or split == "val", progress, bos_id, windows,
                           token_dtype)
               for split, files in split_files(paths).items()]
    left, lock = {}, threading.Lock()  # path -> its row groups the workers have not done yet

    def done(task):  # from an executor's thread: a worker has read (and tokenized) this row group
        with lock:
            left[task[0]] -= 1
            finished = left[task[0]] == 0
        if finished:
            shards.release(task[0])

    work = ((packer, where, task) for packer in packers for where, task in packer.tasks(column, shards, left))
    # one pool for both splits, so workers start once; val's groups come first and it is flushed on its own
    t0, new_tokens, current, pending = time.time(), 0, None, collections.deque()
    try:
        results = executor.map(tokenize_row_group, _tasks_only(work, pending), describe=describe_task, setup=setup,
                               on_done=done)
        with bar(desc="tokenize", unit="shard", total=len(order)) as display:
            for tokens, docs, chars, mismatches, bos in results:
                packer, where = pending.popleft()
                if packer is not current and current is not None:
                    current.finish()
                current = packer
                new_tokens += packer.add(where, tokens, docs, chars, mismatches, bos)
                display.update(where[2])  # a file's last row group: one more shard of input done
                elapsed = max(time.time() - t0, 1e-9)
                fetched = (f"downloaded {shards.shards_ready()}/{len(order)}, in "
                           f"{shards.downloaded_bytes / elapsed / 1e6:.1f} MB/s, " if shards.downloads else "")
                display.set_postfix_str(f"{fetched}out {new_tokens / elapsed / 1e6:.2f}M tok/s")
    except BaseException:
        for packer in packers:
            packer.writer.abandon()
        raise
    finally:
        shards.close()
    stats = {packer.split: packer.finish() for packer in packers}
    seconds = time.time() - t0
    if new_tokens:
        fetched = ""
        if shards.downloads:  # where the time went: waiting for downloads, or not
            bound = "download-bound" if shards.waited > 0.1 * seconds else "tokenize-bound"
            fetched = f"; waited {shards.waited:.1f}s for downloads ({human_bytes(shards.downloaded_bytes)}): {bound}"
        say(f"tokenized {new_tokens:,} tokens in {seconds:.1f}s ({new_tokens / max(seconds, 1e-9):,.0f} tok/s)"
            f"{fetched}")
    return stats, [record for packer in packers for record in packer.shard_records()]


def _tasks_only(work, pending: collections.deque):
    """The tasks of `work`, remembering (packer, where) of each in `pending` for the consumer."""
    for packer, where, task in work:
        pending.append((packer, where))
        yield task

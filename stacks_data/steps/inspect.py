"""Look inside a dataset folder or one .bin file: headers, counts, documents decoded.

  stacks-data inspect data/fineweb_edu_32k_8_370                 # the splits, then the first val documents
  stacks-data inspect data/fineweb_edu_32k_8_370 --split train --doc 12
  stacks-data inspect data/fineweb_edu_32k_8_370 --split sft_val   # supervised tokens marked
  stacks-data inspect data/fineweb_edu_32k_8_370/val_000000.bin --plot lengths.png

SFT conversations show the tokens whose mask is 1 (what the loss sees) in colour on a terminal, and
between [[ and ]] otherwise. Fast on any dataset size: the counts come from config.json, and only the
tokens shown are read (finding document K reads the split up to its end, in bounded chunks).
"""

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

from stacks_data import flags, progress
from stacks_data.dataset.binfile import FORMATS, HEADER_BYTES, open_tokens
from stacks_data.errors import FlagError, InputError
from stacks_data.dataset.manifest import read_config
from stacks_data.tokenizer import TOKENIZER_FILE, RustBPETokenizer

SPLITS = ("val", "train", "sft_val", "sft_train")
OVERVIEW_DOCS = 3          # documents shown without --doc
OVERVIEW_TOKENS = 256      # and their first tokens (a screen)
CHUNK = 1 << 22            # tokens scanned for <|bos|> at once (8 MB of uint16): bounded memory
PLOT_TOKENS = 200_000_000  # tokens per split whose documents --plot measures (a few seconds each)
MARK_ON, MARK_OFF = ("\033[1;32m", "\033[0m")  # supervised tokens on a terminal: bold green


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a dataset folder, or one .bin file")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="the split of a dataset folder to show (default: val, else the first present)")
    parser.add_argument("--doc", type=int, default=None, metavar="K",
                        help=f"decode document K (from 0) of the split (default: the first {OVERVIEW_DOCS}, "
                             f"{OVERVIEW_TOKENS} tokens each)")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help=f"show at most N tokens of each document (default: all of --doc K, "
                             f"{OVERVIEW_TOKENS} otherwise)")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="write a PNG histogram of document lengths per split (the documents of the first "
                             f"{PLOT_TOKENS:,} tokens of each split)")


def check_args(args: argparse.Namespace) -> None:
    if not os.path.exists(args.path):
        raise FlagError(f"{args.path} does not exist", "PATH", "pass a dataset folder or a .bin file")
    if os.path.isdir(args.path):
        flags.check_input_dir(args.path, "PATH")
    elif args.split is not None:
        raise FlagError("--split picks a split of a dataset folder, and PATH is one file", "--split",
                        "pass the dataset folder, or leave --split out")
    if args.doc is not None and args.doc < 0:
        raise FlagError(f"document numbers start at 0, not {args.doc}", "--doc", "pass K >= 0")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise FlagError(f"must be at least 1, not {args.max_tokens}", "--max-tokens", "pass N >= 1")
    if args.plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        raise FlagError(f"the folder of {args.plot} does not exist", "--plot", "create it, or write elsewhere")


# ------------------------------------------------------------------------------------ splits


@dataclass(frozen=True)
class Split:
    """The shards of one split in order (their masks for SFT), and its counts when config.json has them."""
    name: str
    paths: list[str]
    masks: list[str] | None
    tokens: int | None      # of the whole split
    documents: int | None
    shards: int             # in the whole split (config.json); paths: those here


def folder_splits(dataset_dir: str) -> tuple[dict, dict[str, Split]]:
    """(step 1's config.json, the splits present) of a dataset folder, named from the configs alone."""
    config = read_config(os.path.join(dataset_dir, "config.json"))
    sft = read_config(os.path.join(dataset_dir, "sft", "config.json"))
    subdir = config.get("bin_subdir") or ""
    if not isinstance(subdir, str) or "/" in subdir or "\\" in subdir or subdir in (".", ".."):
        raise InputError(f"bin_subdir {subdir!r} is not a folder name", os.path.join(dataset_dir, "config.json"),
                         "do not use this dataset (or download it again)")
    splits = {}
    for split, folder, cfg, pattern, mask, documents in (
            ("val", subdir, config, "val_{:06d}.bin", None, "val_documents"),
            ("train", subdir, config, "train_{:06d}.bin", None, "train_documents"),
            ("sft_val", "sft", sft, "sft_val_{:06d}.bin", "sft_val_{:06d}_mask.bin", "val_conversations"),
            ("sft_train", "sft", sft, "sft_train_{:06d}.bin", "sft_train_{:06d}_mask.bin", "train_conversations")):
        key = split.removeprefix("sft_")
        shards = cfg.get(f"{key}_shards")
        if not isinstance(shards, int) or shards <= 0:
            continue
        # a partial download (--num-train-shards N) has the first shards: the split is what is here, up
        # to the first one missing (a document may run across shards, so not past a gap)
        present = 0
        while present < shards and all(os.path.isfile(os.path.join(dataset_dir, folder, p.format(present)))
                                       for p in (pattern, mask) if p):
            present += 1
        if not present:
            continue
        paths = [os.path.join(dataset_dir, folder, pattern.format(i)) for i in range(present)]
        masks = [os.path.join(dataset_dir, folder, mask.format(i)) for i in range(present)] if mask else None
        splits[split] = Split(split, paths, masks, cfg.get(f"{key}_tokens"), cfg.get(documents), shards)
    return config, splits


def file_split(path: str) -> Split:
    """One .bin file as a split of its own (its mask beside it, for an SFT shard)."""
    mask = path[:-len(".bin")] + "_mask.bin"
    masks = [mask] if path.endswith(".bin") and not path.endswith("_mask.bin") and os.path.isfile(mask) else None
    return Split(os.path.basename(path), [path], masks, None, None, 1)


def dataset_root(path: str) -> str | None:
    """The dataset folder a .bin file belongs to: the nearest of its folder and that folder's parent with
    a tokenizer (shards lie in the dataset folder, in sft/ or in a --bin-subdir)."""
    here = os.path.dirname(os.path.abspath(path))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "tokenizer", TOKENIZER_FILE)):
            return folder
    return None


# ------------------------------------------------------------------------------------ token streams


class Stream:
    """The shards of a split as one sequence of tokens (a document may run across shards). Only the
    headers are read here; read() reads exactly the range asked for (no mapping that keeps a 40 GB
    folder's pages resident)."""

    def __init__(self, paths: list[str]):
        opened = [open_tokens(p) for p in paths]
        self.paths = paths
        self.headers = [h for h, _ in opened]
        self.dtypes = [a.dtype for _, a in opened]
        self.starts = np.cumsum([0] + [len(a) for _, a in opened])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, begin: int, end: int) -> np.ndarray:
        """Tokens [begin, end) as an in-memory array."""
        parts = []
        for i, (path, dtype) in enumerate(zip(self.paths, self.dtypes)):
            lo = max(begin - int(self.starts[i]), 0)
            hi = min(end - int(self.starts[i]), int(self.starts[i + 1] - self.starts[i]))
            if lo < hi:
                parts.append(np.fromfile(path, dtype=dtype, count=hi - lo, offset=HEADER_BYTES + lo * dtype.itemsize))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)

    def locate(self, position: int) -> tuple[int, int]:
        """(shard index, offset in it) of a position."""
        i = int(np.searchsorted(self.starts, position, side="right")) - 1
        return i, position - int(self.starts[i])

    def bos_positions(self, bos: int, limit: int | None = None, first: int = 0,
                      stop_after: int | None = None) -> tuple[np.ndarray, int]:
        """(positions of the <|bos|> number `first` onwards, how many were seen) among the first `limit`
        tokens, scanned chunk by chunk (numpy, bounded memory), stopping once `stop_after` were seen."""
        end = len(self) if limit is None else min(limit, len(self))
        kept, seen = [], 0
        with progress.bar(total=end, unit="tok", unit_scale=True, desc="finding documents", leave=False) as bar:
            for begin in range(0, end, CHUNK):
                hits = np.flatnonzero(self.read(begin, min(begin + CHUNK, end)) == bos) + begin
                if first - seen < hits.size:  # only those asked for: memory stays bounded
                    kept.append(hits[max(first - seen, 0):].copy())
                seen += hits.size
                bar.update(min(CHUNK, end - begin))
                if stop_after is not None and seen >= stop_after:
                    break
        positions = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        return (positions if stop_after is None else positions[:max(stop_after - first, 0)]), \
            (seen if stop_after is None else min(seen, stop_after))


# ------------------------------------------------------------------------------------ showing


def render(tokens: np.ndarray, mask: np.ndarray | None, tok: RustBPETokenizer | None, terminal: bool) -> str:
    """Decoded text; with a mask, the runs of supervised tokens marked. Without a tokenizer, the ids."""
    if tok is None:
        return " ".join(str(int(t)) for t in tokens)
    if mask is None:
        return tok.decode(tokens.tolist())
    # decode whole runs of equal mask: a character split across tokens stays whole inside a run
    edges = [0, *(np.flatnonzero(np.diff(mask.astype(np.int8))) + 1).tolist(), len(tokens)]
    out = []
    for a, b in zip(edges, edges[1:]):
        text = tok.decode(tokens[a:b].tolist())
        if mask[a]:
            text = f"{MARK_ON}{text}{MARK_OFF}" if terminal else f"[[{text}]]"
        out.append(text)
    return "".join(out)


def describe_header(path: str, header: np.ndarray) -> str:
    kind = FORMATS[int(header[0])][1].name  # uint16 or uint32
    return f"{os.path.basename(path)}: magic {header[0]}, version {header[1]}, {kind} tokens, {header[2]:,} tokens"


def show_documents(split: Split, tok: RustBPETokenizer | None, bos: int | None, settings, terminal: bool) -> None:
    stream = Stream(split.paths)
    masks = Stream(split.masks) if split.masks else None
    print(describe_header(split.paths[0], stream.headers[0]))
    if bos is None:  # no tokenizer and no config: no documents to speak of
        n = settings.max_tokens or OVERVIEW_TOKENS
        print(f"--- first {min(n, len(stream)):,} token ids (no tokenizer found, so no documents) ---")
        print(render(stream.read(0, n), None, None, terminal))
        return
    wanted = [settings.doc] if settings.doc is not None else list(range(OVERVIEW_DOCS))
    max_tokens = settings.max_tokens or (None if settings.doc is not None else OVERVIEW_TOKENS)
    # reads up to the end of the last document wanted (the next <|bos|>), no further
    starts, seen = stream.bos_positions(bos, first=wanted[0], stop_after=wanted[-1] + 2)
    if settings.doc is not None and settings.doc >= seen:
        raise InputError(f"the split has {seen:,} documents, so no document {settings.doc}",
                         split.paths[0], f"pass --doc below {seen:,}")
    if wanted[0] == 0 and starts.size and starts[0] != 0:
        print(f"({starts[0]:,} tokens before the first <|bos|> continue a document of the previous shard)")
    for k in wanted:
        if k >= seen:
            break
        begin = int(starts[k - wanted[0]])
        end = int(starts[k - wanted[0] + 1]) if k + 1 < seen else len(stream)
        shown_end = end if max_tokens is None else min(end, begin + 1 + max_tokens)
        shard, offset = stream.locate(begin)
        cut = f", first {shown_end - begin - 1:,} shown" if shown_end < end else ""
        print(f"--- {split.name} document {k}: {end - begin:,} tokens with <|bos|> "
              f"({os.path.basename(split.paths[shard])} from token {offset:,}){cut} ---")
        mask = masks.read(begin + 1, shown_end) if masks else None
        print(render(stream.read(begin + 1, shown_end), mask, tok, terminal), end="\n\n")


def plot_lengths(splits: dict[str, Split], bos: int, path: str) -> None:
    """A PNG: per split, the histogram of document lengths in tokens (log bins)."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    capped = False
    longest = 1
    lengths = {}
    for name, split in splits.items():
        stream = Stream(split.paths)
        end = min(len(stream), PLOT_TOKENS)
        capped |= end < len(stream)
        starts = stream.bos_positions(bos, limit=end)[0]
        lengths[name] = np.diff(np.append(starts, end))
        longest = max(longest, int(lengths[name].max(initial=1)))
    bins = np.unique(np.geomspace(1, longest + 1, 60).astype(np.int64))
    for name, values in lengths.items():  # shares, so that a small split shows beside a big one
        ax.hist(values, bins=bins, weights=np.full(len(values), 1 / max(len(values), 1)), histtype="step",
                label=f"{name} ({len(values):,} documents)")
    ax.set_xscale("log")
    ax.set_xlabel("document length in tokens, <|bos|> included")
    ax.set_ylabel("share of the split's documents")
    ax.set_title("Document lengths per split" + (f" (the first {PLOT_TOKENS:,} tokens of each)" if capped else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    print(f"wrote {path}")


def run(settings: flags.Frozen) -> None:
    try:
        inspect(settings)
    except BrokenPipeError:  # `inspect ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def inspect(settings: flags.Frozen) -> None:
    terminal = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if os.path.isdir(settings.path):
        root = settings.path
        config, splits = folder_splits(root)
        if not splits:
            raise InputError("no shards: config.json lists none (or is missing)", root,
                             "pass a dataset folder a step finished, or one .bin file")
        name = settings.split or ("val" if "val" in splits else next(iter(splits)))
        if name not in splits:
            raise FlagError(f"this dataset has no {name} split (it has {', '.join(splits)})", "--split",
                            f"pass one of {', '.join(splits)}")
        shown = splits[name]
    else:
        root = dataset_root(settings.path)
        config = read_config(os.path.join(root, "config.json")) if root else {}
        shown = file_split(settings.path)
        splits = {shown.name: shown}
    tok = None
    if root and os.path.isfile(os.path.join(root, "tokenizer", TOKENIZER_FILE)):
        tok = RustBPETokenizer.from_directory(os.path.join(root, "tokenizer"), config.get("tokenizer_sha256"))
    bos = config.get("bos_id", tok.get_bos_token_id() if tok else None)
    vocab = config.get("vocab_size", tok.get_vocab_size() if tok else None)
    print(f"dataset: {root or '-'}  vocab: {vocab if vocab is None else f'{vocab:,}'}  <|bos|>: {bos}  "
          f"tokenizer: {config.get('tokenizer_fingerprint', '-')[:16]}")
    print(f"{'split':<16}{'shards':>7}{'tokens':>16}{'documents':>14}")
    for split in splits.values():
        tokens, documents = split.tokens, split.documents
        if os.path.isfile(settings.path):  # one file: its header's count, and its documents (one shard's scan)
            stream = Stream(split.paths)
            tokens = len(stream)
            documents = stream.bos_positions(bos)[1] if bos is not None else None
        shards = f"{len(split.paths)}" if len(split.paths) == split.shards else f"{len(split.paths)}/{split.shards}"
        print(f"{split.name:<16}{shards:>7}{_count(tokens):>16}{_count(documents):>14}")
    if os.path.isdir(settings.path):
        partial = any(len(split.paths) < split.shards for split in splits.values())
        print("(counts from config.json" + ("; n/m: n of the split's m shards are here)" if partial else ")"))
    show_documents(shown, tok, bos, settings, terminal)
    if settings.plot:
        if bos is None:
            raise InputError("no tokenizer or config.json beside the file: its documents are unknown", settings.path,
                             "inspect it inside its dataset folder")
        plot_lengths(splits, bos, settings.plot)


def _count(n) -> str:
    return "-" if n is None else f"{n:,}"

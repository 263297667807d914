"""
Pre-tokenize the CORE eval bundle: one .pt of scored token sequences per task.

The training code's CORE evaluator only has to run the model on these sequences and compare losses
between start_idx and end_idx, so the prompt semantics here are its contract (nanochat's core_eval):

1. rows are shuffled with random.Random(1337); for example idx the few-shot examples are
   random.Random(1234 + idx).sample([i for i in range(n) if i != idx], k)
2. multiple_choice: one prompt per choice, scored from the common token prefix of the choices;
   schema: one prompt per context option, scored on the common token suffix;
   language_modeling: one prompt, scored on the tokens the continuation adds.
3. <|bos|> is prepended; a sequence longer than max_seq_len keeps its last max_seq_len tokens.

Speed: every row is rendered once (as a few-shot "shot" and as its own prompt tails), the shots are
tokenized once per task and their tokens reused by every prompt they appear in, so only the short
tails are tokenized per prompt; tasks run in parallel worker processes.
"""

import argparse
import csv
import io
import json
import os
import random
import shutil
import time
import zipfile
from dataclasses import dataclass

import yaml

from stacks_data import flags
from stacks_data.remote import hub
from stacks_data.remote.http import download
from stacks_data.errors import InputError
from stacks_data.dataset.files import human_bytes, locked, read_text, torch_save_plain
from stacks_data.dataset import layout
from stacks_data.dataset.folder import DatasetLock, StagedFolder
from stacks_data.executors import worker_state
from stacks_data.progress import bar
from stacks_data.tokenizer import RustBPETokenizer

STEP = layout.CORE_EVAL

DEFAULT_BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
SHUFFLE_SEED = 1337
FEWSHOT_SEED = 1234


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_output_flags(parser)
    parser.add_argument("--eval-bundle", default=None, metavar="DIR",
                        help="use this local eval bundle folder as it is (default: download it once "
                             "into <out-dir>/eval_bundle/)")
    parser.add_argument("--eval-bundle-url", default=DEFAULT_BUNDLE_URL,
                        help="where to download eval_bundle.zip from (ignored with --eval-bundle)")
    parser.add_argument("--max-seq-len", type=int, default=2048,
                        help="longer sequences keep their last max-seq-len tokens")
    flags.add_workers_flag(parser)
    flags.add_encoder_flag(parser)


# ---------------------------------------------------------------- the bundle


@dataclass(frozen=True)
class Task:
    """One entry of core.yaml, checked; `where` is "core.yaml:<line>" for error messages."""
    label: str
    task_type: str
    path: str  # the JSONL file
    num_fewshot: int
    delimiter: str
    random_baseline: float
    where: str


def fetch_bundle(url: str, out_dir: str, *, retries: int = 5, backoff: float = 1.0) -> str:
    """<out_dir>/eval_bundle, downloaded and extracted from the zip at `url` unless already there.

    The zip is checked (every member's CRC) before it is accepted, else re-downloaded; it is
    extracted into a temp folder and renamed into place, so `eval_bundle/` is always complete.
    """
    final = os.path.join(out_dir, "eval_bundle")
    if os.path.isdir(final):
        return final
    os.makedirs(out_dir, exist_ok=True)
    with locked(final):  # runs for several datasets in one --out-dir share the bundle
        if os.path.isdir(final):
            return final
        zip_path = final + ".zip"
        download(url, zip_path, verify=check_zip, retries=retries, backoff=backoff,
                 offline="download eval_bundle.zip elsewhere, unzip it and pass --eval-bundle DIR/eval_bundle")
        # a fixed temp name: what a killed run left there is cleared by the next one
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with zipfile.ZipFile(zip_path) as z:
                if "eval_bundle/core.yaml" not in z.namelist():
                    os.remove(zip_path)  # wrong content, not a transfer error: do not keep it
                    raise InputError("the zip has no eval_bundle/core.yaml", url, "pass a CORE eval_bundle.zip "
                                     "(--eval-bundle-url) or a bundle folder (--eval-bundle)")
                z.extractall(tmp)
            os.replace(os.path.join(tmp, "eval_bundle"), final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        os.remove(zip_path)
    return final


def check_zip(path: str) -> None:
    """download()'s verify: a truncated or corrupted zip raises ValueError, which makes it retry."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # BadZipFile, zlib.error, EOFError...: all mean "corrupt", all retryable
        raise ValueError(f"not a valid zip file ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise ValueError(f"zip member {bad} is corrupt")


def load_bundle(bundle_dir: str) -> list[Task]:
    """The tasks of <bundle>/core.yaml in order, checked against eval_meta_data.csv and eval_data/."""
    yaml_path = os.path.join(bundle_dir, "core.yaml")
    try:
        text = read_text(yaml_path)
        config = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except FileNotFoundError:
        raise InputError("not an eval bundle (no core.yaml)", bundle_dir, "pass the eval_bundle/ folder of eval_bundle.zip") from None
    except yaml.YAMLError as e:
        raise InputError(f"malformed YAML ({e})", yaml_path) from None
    entries = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        raise InputError("expected a top-level key 'icl_tasks' holding a list of tasks", yaml_path)
    # line numbers of the entries, for error messages (safe_load forgets them)
    nodes = next(v for k, v in root.value if k.value == "icl_tasks").value
    baselines = read_baselines(os.path.join(bundle_dir, "eval_meta_data.csv"))
    tasks, seen = [], set()
    for entry, node in zip(entries, nodes):
        where = f"{yaml_path}:{node.start_mark.line + 1}"
        task = _check_task(entry, where, bundle_dir, baselines)
        if task.label in seen:
            raise InputError(f"task label {task.label!r} appears twice (it names the output file)", where)
        seen.add(task.label)
        tasks.append(task)
    return tasks


def _check_task(entry, where: str, bundle_dir: str, baselines: dict) -> Task:
    if not isinstance(entry, dict):
        raise InputError(f"a task must be a mapping, got {type(entry).__name__}", where)
    missing = [key for key in ("label", "dataset_uri", "num_fewshot", "icl_task_type") if key not in entry]
    if missing:
        raise InputError(f"task is missing key(s) {missing}", where)
    label = entry["label"]
    if not isinstance(label, str) or not label or "/" in label or label.startswith("."):
        raise InputError(f"label {label!r} is not usable as a file name", where)
    task_type = entry["icl_task_type"]
    if task_type not in TASK_TYPES:
        raise InputError(f"task {label!r}: unknown icl_task_type {task_type!r} "
                         f"(expected one of {', '.join(TASK_TYPES)})", where)
    shots = entry["num_fewshot"]
    shots = shots[0] if isinstance(shots, list) and shots else shots
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise InputError(f"task {label!r}: num_fewshot must be [n] with n >= 0, got {entry['num_fewshot']!r}", where)
    delimiter = entry.get("continuation_delimiter", " ")
    if not isinstance(delimiter, str):
        raise InputError(f"task {label!r}: continuation_delimiter must be a string", where)
    path = os.path.join(bundle_dir, "eval_data", str(entry["dataset_uri"]))
    if not os.path.isfile(path):
        raise InputError(f"task {label!r}: data file {path} not found", where)
    if label not in baselines:
        raise InputError(f"no row with Eval Task {label!r} (task at {where})",
                         os.path.join(bundle_dir, "eval_meta_data.csv"))
    return Task(label, task_type, path, shots, delimiter, baselines[label], where)


def read_baselines(csv_path: str) -> dict[str, float]:
    """Eval Task -> float(Random baseline) from eval_meta_data.csv."""
    try:
        text = read_text(csv_path)
    except FileNotFoundError:
        raise InputError("not found (every eval bundle has one)", csv_path) from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        columns = ("Eval Task", "Random baseline")
        if not reader.fieldnames or any(c not in reader.fieldnames for c in columns):
            raise InputError(f"expected columns {list(columns)}, got {reader.fieldnames}", csv_path)
        out = {}
        for row in reader:
            try:
                out[row["Eval Task"]] = float(row["Random baseline"])
            except (TypeError, ValueError):
                raise InputError(f"Random baseline {row['Random baseline']!r} is not a number",
                                 f"{csv_path}:{reader.line_num}") from None
    return out


# ---------------------------------------------------------------- rows -> rendered examples


@dataclass
class Example:
    """A row rendered once: `shot` is its text as a few-shot example, `tails` what follows the
    few-shot prefix in its own prompts (language_modeling: [without continuation, with it])."""
    line: int
    shot: str
    tails: list[str]
    gold: int | None


def _text(value) -> str:
    return value if isinstance(value, str) else str(value)


def load_examples(task: Task) -> list[Example]:
    """The task's JSONL rows in file order, checked and rendered; blank lines are skipped."""
    make = {"multiple_choice": _multiple_choice, "schema": _schema,
            "language_modeling": _language_modeling}[task.task_type]
    examples = []
    for line_no, line in enumerate(read_text(task.path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{task.path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg}, column {e.colno})", where) from None
        if not isinstance(row, dict):
            raise InputError(f"expected a JSON object, got {type(row).__name__}", where)
        missing = [key for key in _KEYS[task.task_type] if key not in row]
        if missing:
            raise InputError(f"missing key(s) {missing} for a {task.task_type} task ({task.label})", where)
        examples.append(make(row, task.delimiter, line_no, where))
    if not examples:
        raise InputError(f"no examples (task {task.label})", task.path)
    if len(examples) <= task.num_fewshot:
        raise InputError(f"{len(examples)} examples, too few for {task.num_fewshot}-shot prompts "
                         f"(task {task.label} at {task.where})", task.path)
    return examples


_KEYS = {"multiple_choice": ("query", "choices", "gold"), "schema": ("context_options", "continuation", "gold"),
         "language_modeling": ("context", "continuation")}


def _options(row: dict, key: str, where: str) -> list[str]:
    options = row[key]
    if not isinstance(options, list) or not options:
        raise InputError(f"{key!r} must be a non-empty list", where)
    return [_text(o) for o in options]


def _gold(row: dict, n: int, key: str, where: str) -> int:
    gold = row["gold"]
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < n:
        raise InputError(f"gold {gold!r} is not an index into {key!r} (which has {n} entries)", where)
    return gold


def _multiple_choice(row: dict, d: str, line: int, where: str) -> Example:
    choices = _options(row, "choices", where)
    gold = _gold(row, len(choices), "choices", where)
    query = _text(row["query"])
    return Example(line, query + d + choices[gold] + "\n\n", [query + d + c for c in choices], gold)


def _schema(row: dict, d: str, line: int, where: str) -> Example:
    options = _options(row, "context_options", where)
    gold = _gold(row, len(options), "context_options", where)
    continuation = _text(row["continuation"])
    return Example(line, options[gold] + d + continuation + "\n\n", [o + d + continuation for o in options], gold)


def _language_modeling(row: dict, d: str, line: int, where: str) -> Example:
    context = _text(row["context"]).strip()
    continuation = _text(row["continuation"])
    return Example(line, context + d + continuation + "\n\n", [context + d, context + d + continuation], None)


def fewshot_indices(n: int, idx: int, k: int) -> list[int]:
    """random.Random(1234 + idx).sample([i for i in range(n) if i != idx], k), in O(k).

    sample() draws positions into the population and returns population[position], so drawing from
    range(n - 1) and skipping idx gives the same picks without building an n-element list per example.
    """
    if k == 0:
        return []
    return [p + (p >= idx) for p in random.Random(FEWSHOT_SEED + idx).sample(range(n - 1), k)]


def prompts(task_type: str, example: Example, few: str) -> list[str]:
    """The full prompt strings of an example after the few-shot prefix `few` (the plain definition)."""
    if task_type == "language_modeling":
        without, with_ = example.tails
        return [(few + without).strip(), few + with_]
    return [few + tail for tail in example.tails]


# ---------------------------------------------------------------- tokenization


def _clean_start(text: str) -> bool:
    """True when the tokenizer's split pattern must start a new chunk at text[0] after a few-shot
    prefix: the prefix ends in "\n\n", and only whitespace can extend a chunk that holds a newline
    (true of SPLIT_PATTERN and of the GPT-2/GPT-4 patterns). Then tokens(prefix + text) ==
    tokens(prefix) + tokens(text); tests and the bench check this against the full prompts."""
    return bool(text) and not text[0].isspace()


def tokenize_task(task: Task, tok: RustBPETokenizer, max_seq_len: int) -> dict:
    """The .pt payload of one task (see the module docstring for the semantics)."""
    examples = load_examples(task)
    random.Random(SHUFFLE_SEED).shuffle(examples)
    n, k = len(examples), task.num_fewshot
    lm = task.task_type == "language_modeling"
    bos = tok.get_bos_token_id()
    shot_ids = _encode(tok, [e.shot for e in examples]) if k else []
    shot_clean = [_clean_start(e.shot) for e in examples]

    # per example: the few-shot indices, whether its shots' tokens can be reused, and the texts to encode
    plans, texts = [], []
    for idx, example in enumerate(examples):
        fs = fewshot_indices(n, idx, k)
        tails = example.tails
        if k == 0:
            reuse, parts = True, prompts(task.task_type, example, "")
        else:
            # (few + without).strip() == few + without.rstrip() when few starts clean and that is non-empty
            parts = [tails[0].rstrip(), tails[1]] if lm else tails
            reuse = all(shot_clean[j] for j in fs) and all(_clean_start(p) for p in parts)
            if not reuse:  # rare (a text starting with whitespace): encode the plain full prompts
                parts = prompts(task.task_type, example, "".join(examples[j].shot for j in fs))
        plans.append((fs, reuse, len(texts), len(parts)))
        texts += parts
    encoded = _encode(tok, texts)

    sequences, num_seqs, gold_labels = [], {}, {}
    for idx, (fs, reuse, first, count) in enumerate(plans):
        head = [bos]
        if reuse:
            for j in fs:
                head += shot_ids[j]
        parts = encoded[first:first + count]
        seqs = [head + p for p in parts]
        where = f"task {task.label}: example {idx} ({task.path}:{examples[idx].line})"
        if task.task_type == "multiple_choice":
            start = len(head) + _common_prefix(parts)
            spans = [(start, len(s)) for s in seqs]
        elif task.task_type == "schema":
            suffix = _common_suffix(seqs)
            spans = [(len(s) - suffix, len(s)) for s in seqs]
        else:
            without, with_ = parts
            if with_[:len(without)] != without or len(without) >= len(with_):
                raise InputError("the prompt without the continuation does not tokenize to a strict prefix "
                                 "of the prompt with it (is the continuation empty?)", where)
            seqs, spans = seqs[1:], [(len(seqs[0]), len(seqs[1]))]
        for seq_idx, (tokens, (start, end)) in enumerate(zip(seqs, spans)):
            cut = len(tokens) - max_seq_len
            if cut > 0:
                if start - cut < 0:
                    raise InputError(f"sequence {seq_idx} has {len(tokens)} tokens; keeping the last "
                                     f"{max_seq_len} would cut into the scored span (start {start})", where,
                                     "raise --max-seq-len")
                tokens, start, end = tokens[cut:], start - cut, end - cut
            sequences.append({"tokens": tokens, "start_idx": start, "end_idx": end,
                              "example_idx": idx, "seq_idx": seq_idx})
        num_seqs[idx] = len(seqs)
        if not lm:
            gold_labels[idx] = examples[idx].gold
    return {"task_type": task.task_type, "label": task.label, "random_baseline": task.random_baseline,
            "num_examples": n, "sequences": sequences, "num_seqs_per_example": num_seqs,
            "gold_labels": gold_labels}


def _encode(tok: RustBPETokenizer, texts: list[str]) -> list[list[int]]:
    # the task's texts in one call to the bulk encoder (in this process: the parallelism is across tasks)
    return tok.encode_batch(texts)


def _common_prefix(seqs: list[list[int]]) -> int:
    # the lexicographically smallest and largest sequences share exactly the prefix common to all
    a, b = min(seqs), max(seqs)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _common_suffix(seqs: list[list[int]]) -> int:
    first, n = seqs[0], min(map(len, seqs))
    for i in range(1, n + 1):
        if any(s[-i] != first[-i] for s in seqs):
            return i - 1
    return n


# ---------------------------------------------------------------- the step


def _process_task(item: tuple[Task, str, int]) -> dict:
    """Worker: tokenize one task and write <out>/<label>.pt; returns its config.json entry + stats."""
    task, out_dir, max_seq_len = item
    data = tokenize_task(task, worker_state(), max_seq_len)
    record = torch_save_plain(data, os.path.join(out_dir, f"{task.label}.pt"))
    return {"label": task.label, "file": f"{task.label}.pt", "task_type": task.task_type,
            "num_examples": data["num_examples"], "num_sequences": len(data["sequences"]),
            "_tokens": sum(len(s["tokens"]) for s in data["sequences"]), "_record": record}


def _describe(item: tuple[Task, str, int]) -> str:
    return f"task {item[0].label} ({item[0].path})"


def _cost(task: Task) -> int:
    """Rough work of a task: its prompts repeat each row's text about num_fewshot + 1 times."""
    return os.path.getsize(task.path) * (task.num_fewshot + 1)


def check_args(args: argparse.Namespace) -> None:
    flags.check_eval_step(args, "--eval-bundle")


def run(settings: flags.Frozen) -> None:
    t0 = time.time()
    dataset = flags.dataset_dir(settings)
    with DatasetLock(dataset, STEP.name):
        bundle = settings.eval_bundle or fetch_bundle(settings.eval_bundle_url, settings.out_dir)
        tasks = load_bundle(bundle)
        for task in tasks:  # every row checked before any work (0.3 s for the whole bundle; workers read them again)
            load_examples(task)
        tok = flags.load_tokenizer(settings)
        with StagedFolder(dataset, STEP.folder) as folder:
            # biggest tasks first, so that one does not start last and run alone; each task's file is the
            # same whatever the order, and config.json lists them in core.yaml order
            order = sorted(range(len(tasks)), key=lambda i: -_cost(tasks[i]))
            items = [(tasks[i], folder.path, settings.max_seq_len) for i in order]
            results = flags.executor(settings, len(tasks)).map(
                _process_task, items, setup=(RustBPETokenizer.for_work, (flags.tokenizer_dir(settings), tok.encoder.name)),
                describe=_describe)
            done = dict(zip(order, bar(iterable=results, total=len(tasks), desc="core eval tasks", unit="task")))
            entries = [done[i] for i in range(len(tasks))]
            source = os.path.abspath(settings.eval_bundle) if settings.eval_bundle else settings.eval_bundle_url
            config = {"max_seq_len": settings.max_seq_len, "bos_id": tok.get_bos_token_id(),
                      "tokenizer_fingerprint": tok.fingerprint(), "source": {"eval_bundle": source},
                      "tasks": [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]}
            manifest = folder.publish(STEP.name, config, [e["_record"] for e in entries])
        for e in entries:
            print(f"  {e['label']:<34} {e['task_type']:<18} {e['num_examples']:>6} examples "
                  f"{e['num_sequences']:>6} seqs {e['_tokens']:>11,} tokens {human_bytes(e['_record'].size):>9}")
        print(f"core eval: {len(entries)} tasks, {sum(e['num_examples'] for e in entries):,} examples, "
              f"{sum(e['num_sequences'] for e in entries):,} sequences, {sum(e['_tokens'] for e in entries):,} "
              f"tokens, {human_bytes(sum(e['_record'].size for e in entries))} in {folder.final} "
              f"({time.time() - t0:.1f}s)")
        if not settings.skip_upload:
            hub.upload_dataset(dataset, flags.hub_repo_id(settings), [manifest])

"""Command-line flags shared by the pipeline steps, and the checks every step runs before any work."""

import argparse
import os
import shutil
import sys

from stacks_data.dataset.folder import check_output_folders
from stacks_data.dataset import layout, published
from stacks_data.errors import FlagError, InputError
from stacks_data.encoder import ENCODERS, checked_encoder_name
from stacks_data.dataset.files import human_bytes
from stacks_data.executors import EXECUTORS, Executor
from stacks_data.tokenizer import TOKENIZER_FILE, RustBPETokenizer

DEFAULT_DATASET_NAME = "fineweb_edu_32k_8_370"  # step 1's name at its default flags


class Frozen:
    """A command's flags once check_args has checked (and completed) them, frozen: what its run() and
    everything below it read, never `args` (a list flag becomes a tuple). Step 1, with many settings,
    declares its own frozen dataclass instead (steps/pretrain/step.Settings)."""

    __slots__ = ("_values",)

    def __init__(self, args: argparse.Namespace):
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k != "module"}
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"the settings are frozen: {name} cannot change below the command line")

    def __repr__(self) -> str:
        return f"Frozen({self._values!r})"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset or a cgroup-aware
    scheduler), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def add_output_flags(parser: argparse.ArgumentParser, default_name: str | None = DEFAULT_DATASET_NAME,
                     name_help: str = "") -> None:
    parser.add_argument("--dataset-name", default=default_name,
                        help="output folder name under --out-dir, and the hub dataset repo name" + name_help)
    parser.add_argument("--out-dir", default="data", help="parent folder of <dataset-name>/")
    add_hf_user_flag(parser, "hub user/org to upload to: <hf-user>/<dataset-name>")
    parser.add_argument("--skip-upload", action="store_true", help="do not upload to the Hugging Face Hub")


def add_hf_user_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """--hf-user, the hub user or organization of the dataset repo (every command that reaches the hub)."""
    parser.add_argument("--hf-user", default=os.environ.get("HF_USER"), help=f"{help} (default: $HF_USER)")


def add_token_dtype_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-dtype", choices=("uint16", "uint32"), default="uint16",
                        help="uint16: the nanochat / modded-nanogpt .bin format (magic 20240520, version 1; a vocab "
                             "of at most 65,536); uint32: llm.c's (magic 20240801, version 7), for larger vocabs")


def check_token_dtype(args: argparse.Namespace, vocab_size: int, flag: str) -> None:
    """The vocab's ids fit the shards' tokens (a vocab over 65,536 needs --token-dtype uint32)."""
    from stacks_data.dataset.binfile import vocab_limit

    if vocab_size > vocab_limit(args.token_dtype):
        raise FlagError(f"a vocab of {vocab_size:,} ({flag}) does not fit {args.token_dtype} tokens",
                        "--token-dtype", "pass --token-dtype uint32")


def add_window_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", type=int, action="append", default=[], metavar="T",
                        help="also count the most documents in a window of T tokens, for config.json's document "
                             "statistics (repeatable; 1,024 ... 131,072 are always counted)")


def windows(args: argparse.Namespace) -> tuple[int, ...]:
    """The window sizes of the document statistics: the usual ones and --window's, checked."""
    from stacks_data.dataset.doc_stats import WINDOWS

    for t in args.window:
        if not 1 <= t <= 2**31:
            raise FlagError(f"{t} is not a window size", "--window", "pass a number of tokens, e.g. --window 3072")
    return tuple(sorted({*WINDOWS, *args.window}))


def add_mirror_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf-mirror", default=None, metavar="DIR",
                        help="read hub datasets from DIR/<owner>/<name>/<path in repo> instead of downloading")


def add_encoder_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", choices=ENCODERS, default="fastokens",
                        help="the bulk encoder: fastokens (faster, checked against tiktoken as it runs) or "
                             "tiktoken (the reference); the ids are the same")


def add_workers_flag(parser: argparse.ArgumentParser, executors: bool = True) -> None:
    parser.add_argument("--num-workers", type=int, default=available_cpus(),
                        help="worker processes (outputs are identical for any number); default: the CPUs "
                             "this process may use")
    if not executors:  # work on local files only (verify, download): always local processes
        return
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="where the workers run: local processes, or Ray tasks (pip install "
                             "'stacks-data[ray]'); the outputs are the same")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="with --executor ray: the cluster to join (e.g. auto, after `ray start --head`; "
                             "default $RAY_ADDRESS, else a local Ray instance of --num-workers CPUs)")


def executor(args: argparse.Namespace, max_workers: int | None = None) -> Executor:
    """Where this step's work items run (--executor, --num-workers, --ray-address)."""
    workers = min(args.num_workers, max_workers) if max_workers else args.num_workers
    return Executor(max(1, workers), args.executor, args.ray_address)


# ------------------------------------------------------------------------------------ checks


def check_at_least(args: argparse.Namespace, flag: str, low: int, high: int | None = None) -> None:
    """FlagError unless low <= --flag (<= high)."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value < low or (high is not None and value > high):
        bound = f"between {low:,} and {high:,}" if high is not None else f"at least {low:,}"
        raise FlagError(f"must be {bound}, got {value:,}", flag, "see --help")


def check_common(args: argparse.Namespace) -> None:
    """The flags every step has: workers, output folder, upload destination."""
    if hasattr(args, "num_workers"):
        check_at_least(args, "--num-workers", 1)
    if getattr(args, "ray_address", None) and args.executor != "ray":
        raise FlagError("--ray-address is for the Ray executor", "--ray-address", "add --executor ray")
    if "/" in args.dataset_name or args.dataset_name in ("", ".", ".."):
        raise FlagError(f"{args.dataset_name!r} is not a folder name", "--dataset-name", "pass a plain name")
    check_writable_dir(args.out_dir, "--out-dir")
    check_output_folders(dataset_dir(args), tokenizer_dir(args))
    if not args.skip_upload and not args.hf_user:
        raise FlagError("uploading needs a hub user or organization", "--hf-user",
                        "pass --hf-user USER (or set $HF_USER), or --skip-upload")
    if not args.skip_upload:
        check_hub_names(args)


def check_hub_names(args: argparse.Namespace) -> None:
    """--hf-user and --dataset-name are names the hub accepts (it would refuse the repo id later, with
    a traceback of its own): a flag error naming the flag."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    for flag, value in (("--hf-user", args.hf_user), ("--dataset-name", args.dataset_name)):
        try:
            validate_repo_id(value)
        except HFValidationError:
            raise FlagError(f"{published.printable(repr(value))} is not a name the hub accepts", flag,
                            "use letters, digits, '-', '_' and '.' (no '--' or '..', at most 96 characters)") from None


def check_upload(args: argparse.Namespace) -> None:
    """A step that uploads at the end: the repo id is valid and the hub answers, before any work (after
    every local check: those need no network)."""
    if not getattr(args, "skip_upload", True):
        from stacks_data.remote.hub import check_upload_possible

        check_upload_possible(hub_repo_id(args), "--hf-user")


def check_eval_step(args: argparse.Namespace, input_flag: str) -> None:
    """The flags of the eval steps (CORE eval, chat eval): the common ones, --max-seq-len, their input
    folder (`input_flag`) when given, and the tokenizer step 1 made."""
    check_common(args)
    check_at_least(args, "--max-seq-len", 1)
    folder = getattr(args, input_flag.lstrip("-").replace("-", "_"))
    if folder:
        check_input_dir(folder, input_flag)
    check_tokenizer_exists(args)


def check_writable_dir(path: str, flag: str) -> None:
    """`path` is (or can be created as) a folder we can write in."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise FlagError(f"{existing} is a file, not a folder", flag, "pass a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FlagError(f"{existing} is not writable", flag, "pass a folder you can write to")


def check_input_dir(path: str, flag: str) -> None:
    if not os.path.isdir(path):
        raise FlagError(f"{path} is not a folder" if os.path.exists(path) else f"{path} does not exist", flag,
                        "pass an existing folder (a typo?)")
    try:
        path.encode("utf-8")  # a name of bytes that are not UTF-8 comes as lone surrogates
    except UnicodeEncodeError:
        raise FlagError(f"{path!r} is not a UTF-8 path (pyarrow and the Hub tools open only those)", flag,
                        "rename the folder") from None


def check_input_file(path: str, flag: str) -> None:
    if not os.path.isfile(path):
        raise FlagError(f"{path} is not a file" if os.path.exists(path) else f"{path} does not exist", flag,
                        "pass an existing file")


def warn_if_short_of_disk(path: str, needed: int, what: str) -> None:
    """A warning (not an error: estimates are rough) when `path`'s disk has less free than `needed`."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if free < needed:
        print(f"warning: {what} needs about {human_bytes(needed)}, {existing} has {human_bytes(free)} free",
              file=sys.stderr)


# ------------------------------------------------------------------------------------ paths


def dataset_dir(args: argparse.Namespace) -> str:
    return os.path.join(args.out_dir, args.dataset_name)


def hub_repo_id(args: argparse.Namespace) -> str:
    return f"{args.hf_user}/{args.dataset_name}"


def tokenizer_dir(args: argparse.Namespace) -> str:
    return os.path.join(dataset_dir(args), layout.TOKENIZER_FOLDER)


def check_tokenizer_exists(args: argparse.Namespace) -> None:
    """Steps 2-4 need step 1's tokenizer: say where it is missing and which datasets have one."""
    if os.path.isfile(os.path.join(tokenizer_dir(args), TOKENIZER_FILE)):
        return
    found = sorted(name for name in (os.listdir(args.out_dir) if os.path.isdir(args.out_dir) else [])
                   if os.path.isfile(os.path.join(args.out_dir, name, layout.TOKENIZER_FOLDER, TOKENIZER_FILE)))
    hint = f", or pass --dataset-name {' / '.join(found)} (found in {args.out_dir})" if found else ""
    raise InputError("no tokenizer", os.path.join(tokenizer_dir(args), TOKENIZER_FILE),
                     f"run step 1 first (stacks-data {layout.PRETRAIN.name}){hint}")


def load_tokenizer(args: argparse.Namespace):
    """Step 1's tokenizer, loaded safely and checked against the dataset's config.json when it has one."""
    config_path = os.path.join(dataset_dir(args), "config.json")
    sha256 = None
    if os.path.lexists(config_path):
        sha256 = published.read_config(config_path, dataset_dir(args)).get("tokenizer_sha256")
    tok = RustBPETokenizer.from_directory(tokenizer_dir(args), sha256=sha256)
    if hasattr(args, "encoder"):  # checked once here; the workers load the one it chose: tok.encoder.name
        tok.use_encoder(checked_encoder_name(tok.spec, args.encoder))
    return tok

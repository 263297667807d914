"""The layout of a dataset folder: what each step and tool is, declared once, read by every tool.

A step's name (the subcommand, the manifest's "step", its lock), the sub-folder it writes ("" for step 1,
which writes the dataset folder itself), the names of its shard files, what its .pt files hold, the
files it published before manifests existed, how it shares the folder with the others, and which
config check `verify` applies. cli, the folder protocol, verify, download and the steps read it here;
a fifth step is one more row.
"""

import re
from dataclasses import dataclass

TOKENIZER_FOLDER = "tokenizer"


@dataclass(frozen=True)
class Command:
    """A `stacks-data` subcommand: its module has add_arguments(parser), check_args(args) and run(args)."""

    name: str
    module: str
    writes_tokenizer: bool = False  # (re)writes tokenizer/: excludes every other run on the folder
    alone: bool = False  # has the folder to itself (every other run excluded)


@dataclass(frozen=True)
class Step(Command):
    """A step: a Command that writes one part of the dataset, with its config.json and manifest.json."""

    folder: str = ""  # its sub-folder of the dataset folder; "" for the folder itself
    shard_file: re.Pattern | None = None  # its .bin shards' file names (groups: split, index[, mask])
    pt_keys: frozenset = frozenset()  # what the consumers read from each of its .pt files
    published_before_manifests: tuple[str, ...] = ()  # repo patterns of its files, in the original scripts' layout
    config_check: str = ""  # which of verify's config checks its config.json gets: "shards", "masked_shards", "tasks"

    def prefix(self) -> str:
        """Its files' paths in the dataset start with this ("" for step 1)."""
        return f"{self.folder}/" if self.folder else ""


PRETRAIN = Step("pretrain", "stacks_data.steps.pretrain.step", writes_tokenizer=True, alone=True,
                shard_file=re.compile(r"(train|val)_(\d{6})\.bin"),
                published_before_manifests=("config.json", f"{TOKENIZER_FOLDER}/*", "*.md", "*train_*.bin",
                                            "*val_*.bin"),
                config_check="shards")
CORE_EVAL = Step("core-eval", "stacks_data.steps.core_eval", folder="core_eval",
                 pt_keys=frozenset({"task_type", "label", "random_baseline", "num_examples", "sequences",
                                    "num_seqs_per_example", "gold_labels"}),
                 published_before_manifests=("core_eval/*",), config_check="tasks")
SFT = Step("sft", "stacks_data.steps.sft", folder="sft", shard_file=re.compile(r"sft_(train|val)_(\d{6})(_mask)?\.bin"),
           published_before_manifests=("sft/*",), config_check="masked_shards")
CHAT_EVAL = Step("chat-eval", "stacks_data.steps.chat_eval", folder="chat_eval",
                 pt_keys=frozenset({"task_type", "label", "num_examples", "random_baseline", "sequences"}),
                 published_before_manifests=("chat_eval/*",), config_check="tasks")
STEPS = (PRETRAIN, CORE_EVAL, SFT, CHAT_EVAL)  # in the order they run

VERIFY = Command("verify", "stacks_data.steps.verify")
DOWNLOAD = Command("download", "stacks_data.steps.download", writes_tokenizer=True, alone=True)
UPLOAD = Command("upload", "stacks_data.steps.upload", alone=True)  # reads every step's files: none may change
CARD = Command("card", "stacks_data.steps.card")
INSPECT = Command("inspect", "stacks_data.steps.inspect")
COMMANDS = (*STEPS, VERIFY, DOWNLOAD, UPLOAD, CARD, INSPECT)

# what no step may take as a folder of its own (step 1's --bin-subdir): the other outputs' sub-folders
RESERVED_FOLDERS = (TOKENIZER_FOLDER, *(s.folder for s in STEPS if s.folder))


def command(name: str) -> Command:
    """The command of that name (KeyError for another: the callers pass names that come from here)."""
    for c in COMMANDS:
        if c.name == name:
            return c
    raise KeyError(name)


def step_of(path: str) -> Step:
    """The step whose outputs hold `path` (relative to the dataset folder): its sub-folder's, else step 1's
    (tokenizer/, the shards, the report...)."""
    return next((s for s in STEPS if s.folder and path.startswith(s.prefix())), PRETRAIN)

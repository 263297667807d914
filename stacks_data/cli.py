"""`stacks-data <step> [flags]`: one subcommand per pipeline step."""

import argparse
import importlib
import sys

from stacks_data.download import DownloadError
from stacks_data.parquet import InputError

# subcommand -> module with add_arguments(parser) and run(args); the data/*.py scripts call these too
STEPS = {
    "pretrain": "stacks_data.pretrain",
    "core-eval": "stacks_data.core_eval",
    "sft": "stacks_data.sft",
    "chat-eval": "stacks_data.chat_eval",
}

# errors about the user's inputs or network: a one-line message, not a traceback
USER_ERRORS = (DownloadError, InputError, FileNotFoundError)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stacks-data", description=__doc__)
    commands = parser.add_subparsers(dest="step", required=True)
    for name, module_name in STEPS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.__doc__.strip().splitlines()[0],
                                  description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    _run_reporting_errors(args.run, args)


def run_step(step: str, argv: list[str] | None = None) -> None:
    """Run one step with its flags (errors propagate: for tests and programs)."""
    module = importlib.import_module(STEPS[step])
    parser = argparse.ArgumentParser(description=module.__doc__)
    module.add_arguments(parser)
    module.run(parser.parse_args(argv))


def script(step: str) -> None:
    """Entry of a data/*.py script: the step, with the script's own name in --help."""
    _run_reporting_errors(run_step, step, sys.argv[1:])


def _run_reporting_errors(fn, *args) -> None:
    try:
        fn(*args)
    except USER_ERRORS as e:
        raise SystemExit(f"error: {e}") from None

"""`stacks-data <step> [flags]`: one subcommand per pipeline step."""

import argparse
import importlib

# subcommand -> module with add_arguments(parser) and run(args); the data/*.py scripts call these too
STEPS = {
    "pretrain": "stacks_data.pretrain",
    "core-eval": "stacks_data.core_eval",
    "sft": "stacks_data.sft",
    "chat-eval": "stacks_data.chat_eval",
}


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
    args.run(args)


def run_step(step: str, argv: list[str] | None = None) -> None:
    """Entry of a data/*.py script: `stacks-data <step>` with the script's own name in --help."""
    module = importlib.import_module(STEPS[step])
    parser = argparse.ArgumentParser(description=module.__doc__)
    module.add_arguments(parser)
    module.run(parser.parse_args(argv))

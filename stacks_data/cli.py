"""stacks-data: raw public datasets -> the pre-tokenized files a small-GPT training script loads.

Run the steps in order (pretrain first: it makes the tokenizer the others use), then verify the folder;
download fetches a published dataset on the GPU box. `stacks-data COMMAND --help` for each.
"""

# This module is the one place where errors become what the user sees: a UserError is one line
# `error: <what> (<where>): <what to do>` on stderr (exit 2 for flags, 1 for inputs and environment),
# Ctrl-C / SIGTERM one line and exit 130 / 143, and only our own bugs print a traceback (--debug shows
# one for every error).

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback
from stacks_data import __version__
from stacks_data.dataset import layout
from stacks_data.errors import FlagError, UserError, WorkerError, from_os_error

# subcommand -> module with add_arguments(parser), check_args(args) (which may return the step's settings)
# and run(settings): its own frozen settings, else its checked flags frozen (flags.Frozen) (the layout's table);
# the data/*.py scripts call these too
COMMANDS = {command.name: command.module for command in layout.COMMANDS}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one-line FlagErrors instead of usage + message."""

    def error(self, message: str):
        flag, sep, what = message.partition(": ")
        if sep and flag.startswith("argument "):
            raise FlagError(what, flag[len("argument "):].split("/")[0], f"see {self.prog} --help")
        raise FlagError(message, self.prog, f"see {self.prog} --help")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the step descriptions' paragraphs and lists; show the default of every flag whose help
    does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" not in text and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def command_parser(command: str, prog: str | None, parser: argparse.ArgumentParser | None = None):
    """The parser of one command: its module's flags, --debug, and the module to run."""
    module = importlib.import_module(COMMANDS[command])
    parser = parser or ArgumentParser(prog=prog, description=module.__doc__, formatter_class=HelpFormatter)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="print the traceback of any error")
    parser.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    # the parser is built inside: a Ctrl-C while the command modules load is reported like any other
    sys.exit(_report_errors(lambda: _run(_parser().parse_args(argv)), debug))


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="stacks-data", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"stacks-data {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        description = importlib.import_module(module_name).__doc__
        command_parser(name, None, commands.add_parser(name, help=description.strip().splitlines()[0],
                                                       description=description, formatter_class=HelpFormatter))
    return parser


def script(command: str) -> None:
    """Entry of a data/*.py script: the command, with the script's own name in --help."""
    sys.exit(_report_errors(lambda: _run(command_parser(command, None).parse_args()), "--debug" in sys.argv[1:]))


def run_step(command: str, argv: list[str] | None = None) -> None:
    """Run one command with its flags; errors propagate (for tests and programs)."""
    _run(command_parser(command, f"stacks-data {command}").parse_args(argv))


def _run(args: argparse.Namespace) -> None:
    from stacks_data.flags import Frozen, check_upload

    # every flag, alone and together, before any download or write; then the settings, frozen: no
    # command sees `args` below this line (a step with a settings object of its own gets that)
    settings = args.module.check_args(args)
    check_upload(args)  # the network last
    args.module.run(settings or Frozen(args))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds (and stops workers) like Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def _quiet_interrupts(unraisable) -> None:
    """A Ctrl-C / SIGTERM whose handler ran inside a finalizer (a __del__, a weakref callback) cannot stop
    the run from there: Python prints and drops it, and the run would go on as if nothing was sent. It is
    sent again, to land in the run's own code, and prints nothing."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        # from a thread, a moment later: sent from here, its handler would run here again
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
    else:
        sys.__unraisablehook__(unraisable)


def _report_errors(fn, debug: bool) -> int:
    """Run fn; return the exit status, having reported any error the way the module docstring says."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _quiet_interrupts
    try:
        fn()
        # done: a signal now would only interrupt the interpreter's shutdown (a traceback, exit 0 anyway)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        return 0
    except UserError as e:
        return _user_error(e, debug)
    except Terminated:
        print("\nterminated: rerun the same command to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:
        user = from_os_error(e)
        if user is None:
            raise
        return _user_error(user, debug)


def _user_error(e: UserError, debug: bool) -> int:
    if debug:
        traceback.print_exc()
        if isinstance(e, WorkerError) and e.traceback:
            print(f"in the worker:\n{e.traceback}", file=sys.stderr)
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code

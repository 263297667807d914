"""stacks-data: raw public datasets -> the pre-tokenized files a small-GPT training script loads.

The public surface is what __all__ lists: the tokenizer library, the commands as functions, and the errors
they raise. Everything else is the package's own and may change. Names load on first use, so that
`import stacks_data` (and the command line's --help) stays quick.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stacks-data")
except PackageNotFoundError:  # run from a checkout without `pip install`
    __version__ = "unknown"

_PUBLIC = {  # name -> the module that defines it
    "RustBPETokenizer": "stacks_data.tokenizer",
    "SPECIAL_TOKENS": "stacks_data.tokenizer",
    "main": "stacks_data.cli",
    "run_step": "stacks_data.cli",
    "UserError": "stacks_data.errors",
    "FlagError": "stacks_data.errors",
    "InputError": "stacks_data.errors",
    "NetworkError": "stacks_data.errors",
    "OutputError": "stacks_data.errors",
    "read_bin": "stacks_data.dataset.binfile",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'stacks_data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)

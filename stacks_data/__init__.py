"""stacks-data: raw public datasets -> the pre-tokenized files a small-GPT training script loads."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stacks-data")
except PackageNotFoundError:  # run from a checkout without `pip install`
    __version__ = "unknown"

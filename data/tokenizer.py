"""The tokenizer library, importable as `from tokenizer import RustBPETokenizer` with data/ on sys.path."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stacks_data.tokenizer import (  # noqa: E402,F401
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    RustBPETokenizer,
)

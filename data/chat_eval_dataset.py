"""Pre-tokenize MMLU, ARC-Easy and ARC-Challenge for categorical chat eval. Run from the repo root: python data/chat_eval_dataset.py --help"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works without pip install

from stacks_data.cli import script

if __name__ == "__main__":
    script("chat-eval")

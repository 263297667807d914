"""Pre-tokenize MMLU, ARC-Easy and ARC-Challenge for categorical chat eval. Run from the repo root: python data/chat_eval_dataset.py --help"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works without pip install

from stacks_data.cli import run_step

if __name__ == "__main__":
    run_step("chat-eval")

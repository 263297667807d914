"""Pre-tokenize the SFT conversation mixture into token + mask shards. Run from the repo root: python data/sft_dataset.py --help"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works without pip install

from stacks_data.cli import script

if __name__ == "__main__":
    script("sft")

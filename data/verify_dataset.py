"""Check every byte of a dataset folder against its manifests. Run from the repo root: python data/verify_dataset.py DIR"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works without pip install

from stacks_data.cli import script

if __name__ == "__main__":
    script("verify")

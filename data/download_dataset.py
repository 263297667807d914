"""Download a published dataset from the Hugging Face Hub and verify it. Run from the repo root: python data/download_dataset.py --help"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works without pip install

from stacks_data.cli import script

if __name__ == "__main__":
    script("download")

"""Command-line flags shared by the pipeline steps."""

import argparse
import os

from stacks_data.tokenizer import RustBPETokenizer

DEFAULT_DATASET_NAME = "fineweb_edu_32k_8_370"


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset-name", default=DEFAULT_DATASET_NAME,
                        help="output folder name under --out-dir, and the hub dataset repo name")
    parser.add_argument("--out-dir", default="data", help="parent folder of <dataset-name>/")
    parser.add_argument("--hf-user", default=os.environ.get("HF_USER"),
                        help="hub user/org to upload to: <hf-user>/<dataset-name> (default: $HF_USER)")
    parser.add_argument("--skip-upload", action="store_true", help="do not upload to the Hugging Face Hub")


def add_mirror_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf-mirror", default=None, metavar="DIR",
                        help="read hub datasets from DIR/<owner>/<name>/<path in repo> instead of downloading")


def add_workers_flag(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument("--num-workers", type=int, default=default or os.cpu_count() or 1,
                        help="worker processes (outputs are identical for any number)")


def check_upload_flags(args: argparse.Namespace) -> None:
    """Fail before any work when an upload is wanted but has no destination."""
    if not args.skip_upload and not args.hf_user:
        raise SystemExit("error: uploading needs --hf-user USER (or $HF_USER); pass --skip-upload to skip it")


def dataset_dir(args: argparse.Namespace) -> str:
    return os.path.join(args.out_dir, args.dataset_name)


def hub_repo_id(args: argparse.Namespace) -> str:
    return f"{args.hf_user}/{args.dataset_name}"


def tokenizer_dir(args: argparse.Namespace) -> str:
    return os.path.join(dataset_dir(args), "tokenizer")


def load_tokenizer(args: argparse.Namespace) -> RustBPETokenizer:
    return RustBPETokenizer.from_directory(tokenizer_dir(args))

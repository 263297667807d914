"""Upload a dataset folder to the Hugging Face Hub as the dataset repo USER/NAME.

What goes up is exactly what the folder's manifests list, the manifests, and the dataset card
README.md written from them (`stacks-data card`); never temp, progress or lock files. The folder is
checked against the manifests first (sizes), so a half-written or altered folder is not published.
The steps' --hf-user does the same for the step's own files.

  stacks-data upload data/fineweb_edu_32k_8_370 --hf-user USER [--dry-run]
"""

import argparse
import os

from stacks_data import flags
from stacks_data.remote import hub
from stacks_data.errors import FlagError, InputError
from stacks_data.dataset import layout, published
from stacks_data.dataset.files import human_bytes, write_text
from stacks_data.dataset.folder import DatasetLock
from stacks_data.dataset.manifest import MANIFEST_FILE
from stacks_data.steps import card
from stacks_data.steps.verify import PARTIAL_FILE, verify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_dir", metavar="DIR", help="the dataset folder")
    flags.add_hf_user_flag(parser, "hub user/org to upload to")
    parser.add_argument("--dataset-name", default=None, help="the repo's name (default: the folder's name)")
    parser.add_argument("--dry-run", action="store_true", help="list what would go up and its size; upload nothing")


def check_args(args: argparse.Namespace) -> None:
    flags.check_input_dir(args.dataset_dir, "DIR")
    if not args.hf_user and not args.dry_run:
        raise FlagError("uploading needs a hub user or organization", "--hf-user",
                        "pass --hf-user USER (or set $HF_USER)")
    args.dataset_name = args.dataset_name or os.path.basename(os.path.abspath(args.dataset_dir))
    if args.hf_user:
        flags.check_hub_names(args)
    if not args.dry_run:
        hub.check_upload_possible(f"{args.hf_user}/{args.dataset_name}", "--hf-user / --dataset-name")


def run(settings: flags.Frozen) -> None:
    with DatasetLock(settings.dataset_dir, layout.UPLOAD.name):  # not while step 1 rewrites the folder, nor twice at once
        upload(settings)


def upload(settings: flags.Frozen) -> None:
    left_out = published.read_partial(settings.dataset_dir, PARTIAL_FILE)
    missing = [p for p in left_out if not os.path.exists(published.local_path(settings.dataset_dir, p))]
    if missing:
        shown = ", ".join(published.printable(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"a partial download: {len(missing)} listed file(s) are missing ({shown})",
                         settings.dataset_dir, "download the whole dataset first (without --num-train-shards, --steps "
                         "or --tokenizer-only), then upload it")
    problems = verify(settings.dataset_dir, quick=True)[0]
    if problems:
        for problem in problems:
            print(published.printable(problem))
        raise InputError(f"{len(problems)} problem(s): not uploading a folder that does not match its manifests",
                         settings.dataset_dir, "rerun the steps that wrote it (or `stacks-data verify` for details)")
    repo_id = f"{settings.hf_user or 'USER'}/{settings.dataset_name}"
    extra = ()
    if os.path.isfile(os.path.join(settings.dataset_dir, MANIFEST_FILE)):  # the card describes step 1's dataset
        text = card.card(settings.dataset_dir)
        if not settings.dry_run:  # a dry run writes nothing: it lists the card it would write
            write_text(os.path.join(settings.dataset_dir, card.CARD_FILE), text)
        extra = ({"path": card.CARD_FILE, "size": len(text.encode("utf-8"))},)
    else:
        print(f"no dataset card: {settings.dataset_dir} has no step 1 (pretrain) manifest.json")
    files = hub.upload_dataset(settings.dataset_dir, repo_id, dry_run=settings.dry_run, extra=extra)
    if settings.dry_run:
        for f in files:
            print(f"{f['path']}  {human_bytes(f['size'])}")
        print(f"would upload {len(files)} files, {human_bytes(sum(f['size'] for f in files))}, "
              f"to {hub.hub_endpoint()}/datasets/{repo_id}")

"""
Step 1's promise, kept in one place: resume, never mixed, a changed input rolls back.

The resume state (ResumeState, the progress file in the dataset folder) says what is done. Before the run
changes anything, claim_folder holds it against the folder and the command: other flags are an error
(or removed with --overwrite); changed inputs and missing or extra shards are rolled back (reconcile);
the folder is marked incomplete (mark_incomplete) before its finished work first changes. Then
reading_order says what the run still reads, and checked_stream makes sure every file it resumes inside
is the one its finished shards were made from.

"Complete" means checked: every finished shard is hashed against the sha256 recorded when it was made,
the tokenizer's files against theirs, and a complete folder's other files against its manifest. What
is damaged or missing is made again (repairs): a shard from its own span of input, the tokenizer from
its inputs, the rest by the run's last steps; each is said once made (`repaired: <file> (<why>)`).

The progress file holds, per split, one entry per finished shard: where in the input the shard ended
(file, row group, and how many of that row group's tokens it took), the counts before that row group, and
the shard's size and sha256 (for the manifest). A restart continues after the last entry, re-tokenizing
at most one row group of finished work. It also holds the identity (size and footer hash) of every input
file consumed: a file whose content changed under the same name rolls the split back to the last shard
that ended before that file's first token.
"""

import functools
import json
import os
import shutil
from typing import Callable

from stacks_data.dataset import layout
from stacks_data.dataset.files import FileRecord, file_damage, read_json, write_bytes
from stacks_data.dataset.manifest import CONFIG_FILE, MANIFEST_FILE, find_manifests, read_manifest, relative
from stacks_data.errors import OutputError, UserError
from stacks_data.executors.threads import thread_map
from stacks_data.progress import say
from stacks_data.sources.corpus import Shards, ShardStream
from stacks_data.sources.parquet import file_identity
from stacks_data.tokenizer import TOKENIZER_FILE

STATE_FILE = ".pretokenize.json"  # progress, for resuming; lives in the dataset folder, not uploaded
TRAINING_FILE = "training.json"  # how the tokenizer in tokenizer/ was trained

SPLITS = ("val", "train")


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


class ResumeState:
    """What step 1 has done in its folder, kept in the progress file STATE_FILE:
    {"key": settings, "fingerprint": the tokenizer's, "files": {name: identity}, "splits": {split: {...}}}."""

    def __init__(self, path: str, key: dict):
        self.path = path
        self.state = {"key": key, "files": {}, "splits": {split: {"shards": []} for split in SPLITS}}
        self.names: dict[str, str] = {}  # input path -> the name its identity is kept under: see reconcile
        self.checked: set[str] = set()  # the input paths the last reconcile found unchanged
        self.folder = os.path.dirname(path)  # the dataset folder
        self.damaged: dict[str, str] = {}  # file (in the folder) -> why: what this run found and makes again
        self.repairs: dict[str, list[int]] = {split: [] for split in SPLITS}  # finished shards to make again
        self.sound: set[tuple] = set()  # (path, size, sha256, its stat) of the files this run found so

    @staticmethod
    def read_key(path: str) -> dict | None:
        """The settings an existing progress file was made with (None: there is none; {"unreadable":
        True} when it does not read: a folder that must be overwritten)."""
        if not os.path.exists(path):
            return None
        key = ResumeState.saved(path, "key")
        return key if isinstance(key, dict) else {"unreadable": True}

    @staticmethod
    def saved(path: str, name: str):
        """What an existing progress file holds under `name` (None when it does not read)."""
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get(name)
        except (OSError, ValueError, AttributeError):
            return None

    def load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            self.state = json.load(f)

    def save(self) -> None:
        # compact: json's C encoder (an indented dump is pure Python, ~20 ms a shard on the main thread)
        write_bytes(self.path, [json.dumps(self.state, separators=(",", ":")).encode()])

    def split(self, split: str) -> dict:
        return self.state["splits"][split]

    def complete(self) -> bool:
        return all("result" in self.split(split) for split in SPLITS)

    def fingerprint(self, default: str) -> str:
        """The fingerprint of the tokenizer the shards were made with (`default` before any shard)."""
        return self.state.get("fingerprint", default)

    def start_over(self, bin_dir: str) -> None:
        """Forget every shard, and remove their files and the progress file."""
        remove_shards(bin_dir, self.path)
        self.state = ResumeState(self.path, self.state["key"]).state

    def made_with(self, fingerprint: str) -> None:
        """The shards from here on are made with this tokenizer (saved with the next shard)."""
        self.state["fingerprint"] = fingerprint

    def tokenizer_made(self, records: list[FileRecord]) -> None:
        """The tokenizer's files as they are now (its pickle and training.json), saved: a later run
        checks them against this before it reuses them."""
        self.state["tokenizer_files"] = {os.path.basename(r.path): [r.size, r.sha256] for r in records}
        self.save()

    def found_damaged(self, path: str, why: str) -> None:
        self.damaged[relative(path, self.folder)] = why

    def check_shards(self, split: str, bin_dir: str) -> list[tuple[int, str]]:
        """(index, why) of the split's finished shards whose bytes are not the ones recorded when they were
        made; hashed on threads, each file once a run (unless it changes meanwhile)."""
        items = [(os.path.join(bin_dir, shard_name(split, i)), s) for i, s in enumerate(self.split(split)["shards"])]
        whys = thread_map(self._shard_damage, items, min(8, os.cpu_count() or 1))
        return [(i, why) for i, why in enumerate(whys) if why]

    def _shard_damage(self, item: tuple[str, dict]) -> str | None:
        path, shard = item
        return self.damage(path, shard["size"], shard["sha256"], "recorded when it was made")

    def damage(self, path: str, size: int, sha256: str, against: str) -> str | None:
        """files.file_damage, each file hashed once a run (unless it changes meanwhile)."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return "missing"
        key = (path, size, sha256, stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key in self.sound:
            return None
        why = file_damage(path, size, sha256, against)
        if why is None:
            self.sound.add(key)
        return why

    def identity(self, name: str, default):
        """The identity of the input file `name` when it was tokenized (default: never)."""
        return self.state["files"].get(name, default)

    def tokenizing(self, name: str, identity) -> None:
        """The input file `name` is tokenized now, with this identity (saved with the next shard)."""
        self.state["files"][name] = identity



def split_files(paths: list[str]) -> dict[str, list[str]]:
    """Validation is the last file, train the others."""
    return {"val": paths[-1:], "train": paths[:-1]}



def claim_folder(progress: ResumeState, out: str, tok_dir: str, bin_dir: str, training: dict, paths: list[str],
                 overwrite: bool, before_changing: Callable[[], None]) -> bool:
    """Make the folder ready for this run's settings; True when it already holds this exact run, complete
    and checked (every file as recorded).

    What was made with other settings is an error naming the differences, unless `overwrite`: then it
    is removed (with the other steps' outputs when the tokenizer goes, as they were made with it). A
    damaged tokenizer is removed, to be trained again; damaged shards are noted for repair (reconcile).
    before_changing() runs once, before the first change to the folder's finished work.
    """
    changing = functools.cache(before_changing)  # once, before the first change
    _remove_damaged_tokenizer(progress, out, tok_dir, changing)
    differences = _tokenizer_differences(tok_dir, training)
    old_key = ResumeState.read_key(progress.path)
    if old_key and old_key.get("unreadable"):
        differences.append(f"shards: {STATE_FILE} does not read (damaged)")
    elif old_key is not None:
        differences += _differences("shards", old_key, progress.state["key"])
    elif _shard_files(bin_dir):
        differences.append(f"{bin_dir} has .bin shards this tool has no record of")
    if differences:
        _replace(differences, progress, out, tok_dir, bin_dir, overwrite, changing)
        return False
    if old_key is None:
        return False
    progress.load()
    # the folder's other files against its manifest, while it is there (a change below removes it)
    damage = _manifest_damage(progress, out, bin_dir) if progress.complete() else {}
    # changed inputs, missing or damaged shards: then it is not complete
    reconcile(progress, paths, bin_dir, before_change=changing)
    for path, why in damage.items():
        progress.found_damaged(path, why)
    if progress.damaged:
        changing()
    return progress.complete() and not progress.damaged


def claim_tokenizer_inputs(progress: ResumeState, out: str, tok_dir: str, bin_dir: str, training: dict,
                           overwrite: bool, before_changing: Callable[[], None]) -> None:
    """claim_folder's check of the tokenizer, again once its training shards are on disk: a shard that was
    not had no known content then. The tokenizer in the folder must have been trained on these."""
    differences = _tokenizer_differences(tok_dir, training)
    if differences:
        _replace(differences, progress, out, tok_dir, bin_dir, overwrite, before_changing)


def _tokenizer_differences(tok_dir: str, training: dict) -> list[str]:
    """How the tokenizer in the folder (if any) was trained otherwise than `training` says."""
    if not os.path.exists(os.path.join(tok_dir, TOKENIZER_FILE)):
        return []
    trained = read_json(os.path.join(tok_dir, TRAINING_FILE), dict) or {}
    if not trained:
        return [f"tokenizer: {TRAINING_FILE} is missing or does not read"]
    return _differences("tokenizer", {k: trained.get(k) for k in training}, training)


def _replace(differences: list[str], progress: ResumeState, out: str, tok_dir: str, bin_dir: str, overwrite: bool,
             changing: Callable[[], None]) -> None:
    """What the folder holds made otherwise: an error naming the differences, unless `overwrite`: then it
    is removed (with the other steps' outputs when the tokenizer goes, as they were made with it)."""
    if not overwrite:
        raise OutputError("the folder holds outputs made with other flags or inputs: " + "; ".join(differences),
                          out, "pass --overwrite to replace them, or pick another --dataset-name")
    changing()
    if any(d.startswith("tokenizer") for d in differences) and os.path.isdir(tok_dir):
        shutil.rmtree(tok_dir)
        for manifest in find_manifests(out):
            if os.path.dirname(manifest) != out:
                print(f"removing {os.path.dirname(manifest)}: made with the old tokenizer")
                shutil.rmtree(os.path.dirname(manifest))
    old_subdir = (ResumeState.read_key(progress.path) or {}).get("bin_subdir") or ""
    if isinstance(old_subdir, str) and ".." not in old_subdir.split("/") and not os.path.isabs(old_subdir):
        remove_shards(os.path.join(out, old_subdir), progress.path)  # where they were (a folder inside)
    progress.start_over(bin_dir)
    print(f"--overwrite: removed what was made with other flags ({'; '.join(differences)})")


def _remove_damaged_tokenizer(progress: ResumeState, out: str, tok_dir: str, changing: Callable[[], None]) -> None:
    """Remove the tokenizer folder when its pickle or training.json is not as recorded (in the progress
    file; for a folder that predates that record, in the manifest): it is trained again, from its
    inputs, to the same bytes. A replaced pickle is never loaded."""
    recorded = ResumeState.saved(progress.path, "tokenizer_files")
    if not isinstance(recorded, dict):
        prefix = relative(tok_dir, out) + "/"
        recorded = {f["path"][len(prefix):]: [f["size"], f["sha256"]] for f in _manifest_files(out)
                    if f["path"] in (prefix + TOKENIZER_FILE, prefix + TRAINING_FILE)}
    if not os.path.isdir(tok_dir):
        return
    damage = {}
    for name, entry in recorded.items():
        if isinstance(name, str) and isinstance(entry, list) and len(entry) == 2 and "/" not in name:
            if why := progress.damage(os.path.join(tok_dir, name), *entry, "recorded when it was made"):
                damage[os.path.join(tok_dir, name)] = why
    if damage:
        changing()
        for path, why in damage.items():
            progress.found_damaged(path, why)
        shutil.rmtree(tok_dir)


def _manifest_files(out: str) -> list[dict]:
    """The entries of the folder's own manifest ([] when there is none, or it does not read)."""
    try:
        return read_manifest(os.path.join(out, MANIFEST_FILE), out)["files"]
    except (UserError, OSError):
        return []


def _manifest_damage(progress: ResumeState, out: str, bin_dir: str) -> dict[str, str]:
    """A complete folder's files against its manifest: path -> why, for each not as listed (the shards
    were hashed by reconcile: the manifest must list them as recorded)."""
    if not os.path.exists(os.path.join(out, MANIFEST_FILE)):
        return {os.path.join(out, MANIFEST_FILE): "missing"}
    files = _manifest_files(out)
    if not files:
        return {os.path.join(out, MANIFEST_FILE): "does not read"}
    listed = {f["path"]: f for f in files}
    shards = {relative(os.path.join(bin_dir, shard_name(split, i)), out): s
              for split in SPLITS for i, s in enumerate(progress.split(split)["shards"])}
    if any((listed.get(rel) or {}).get("sha256") != s["sha256"] for rel, s in shards.items()):
        return {os.path.join(out, MANIFEST_FILE): "does not list the shards as they were made"}
    others = [f for f in files if f["path"] not in shards]
    whys = thread_map(lambda f: progress.damage(os.path.join(out, *f["path"].split("/")), f["size"], f["sha256"],
                                                "in the manifest"), others, min(8, os.cpu_count() or 1))
    return {os.path.join(out, *f["path"].split("/")): why for f, why in zip(others, whys) if why}


def _differences(what: str, folder: dict, command: dict) -> list[str]:
    out = []
    for k in command:
        if folder.get(k) != command[k]:
            if k == "train_shards" and folder.get(k) and [n for n, _ in folder[k]] == [n for n, _ in command[k]]:
                changed = [n for (n, a), (_, b) in zip(folder[k], command[k]) if a != b and b is not None]
                if changed:  # (a shard not downloaded yet is checked once it is)
                    out.append(f"{what}: training shard(s) {', '.join(changed)} changed content since it was trained")
            elif k == "files":
                out.append(f"{what}: other input files ({len(folder.get(k) or [])} in the folder, "
                           f"{len(command[k])} in the command)")
            else:
                out.append(f"{what}: {k} is {_short(folder.get(k))} in the folder, {_short(command[k])} in the command")
    return out



def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."



def _shard_files(folder: str) -> list[str]:
    return [n for n in os.listdir(folder) if layout.PRETRAIN.shard_file.fullmatch(n)] if os.path.isdir(folder) else []



def remove_shards(folder: str, progress_path: str) -> None:
    for name in _shard_files(folder):
        os.remove(os.path.join(folder, name))
    if os.path.exists(progress_path):
        os.remove(progress_path)



def mark_incomplete(out: str) -> None:
    """Remove manifest.json (the commit mark), then config.json: from here on the folder is visibly
    incomplete."""
    for name in (MANIFEST_FILE, CONFIG_FILE):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))



def reconcile(progress: ResumeState, paths: list[str], bin_dir: str, before_change=lambda: None) -> None:
    """Make the progress file true of the folder and the inputs, before anything is tokenized.

    Per split: an input file whose content changed since it was tokenized rolls the split back to the
    last shard that ended before that file; so does a shard file that is missing or has another size;
    shard files after the last recorded one (written just before a crash) are removed. before_change()
    is called before each such change (e.g. to mark the folder incomplete first).
    """
    # identities are kept under the files' paths relative to the folder that holds them all: the same
    # names for the same shards in another --parquet-dir (e.g. "shard_00001.parquet", "data/a.parquet")
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    progress.names = {path: os.path.relpath(path, common).replace(os.sep, "/") for path in paths}
    progress.checked = set()
    for split, files in split_files(paths).items():
        done = progress.split(split)
        for index, path in enumerate(files):
            known = progress.state["files"].get(progress.names[path])
            if known is None or not os.path.exists(path):
                continue
            if file_identity(path) == known:
                progress.checked.add(path)
            else:
                before_change()
                say(f"{progress.names[path]} changed since it was tokenized: redoing {split} from there")
                _keep(progress, split, sum(1 for s in done["shards"] if (s["file"], s["group"], s["offset"]) <= (index, 0, 0)))
                for later in files[index:]:  # read again: their identities are recorded then
                    progress.state["files"].pop(progress.names[later], None)
                progress.save()
                break
        damaged = progress.check_shards(split, bin_dir)  # made again from their spans of input: repairs
        if damaged:
            before_change()
        for index, why in damaged:
            progress.found_damaged(os.path.join(bin_dir, shard_name(split, index)), why)
        progress.repairs[split] = [index for index, _ in damaged]
        kept = len(done["shards"])
        for name in os.listdir(bin_dir) if os.path.isdir(bin_dir) else []:
            match = layout.PRETRAIN.shard_file.fullmatch(name)
            if match and match.group(1) == split and int(name[len(split) + 1:-4]) >= kept:
                before_change()
                os.remove(os.path.join(bin_dir, name))  # written after the last recorded shard



def resume_point(done: dict) -> dict:
    """Where a split resumes: the row group in which its last finished shard ended."""
    shards = done["shards"]
    return shards[-1] if shards else {"file": 0, "group": 0, "offset": 0, "docs": 0, "chars": 0}



def repair_span(progress: ResumeState, split: str, index: int) -> tuple[dict, dict]:
    """Where finished shard `index` of a split starts and ends in the input: the resume points after
    the shard before it and after it."""
    shards = progress.split(split)["shards"]
    return resume_point({"shards": shards[:index]}), shards[index]


def reading_order(progress: ResumeState, paths: list[str], bin_dir: str) -> list[str]:
    """The input files the run still reads, in the order it reads them, once the progress file is made
    true of the folder (reconcile): the spans of the shards it repairs, then val's and train's files
    from the file each resumes in."""
    reconcile(progress, paths, bin_dir)
    return list(dict.fromkeys(repair_files(progress, paths) + resuming_files(progress, paths)))


def repair_files(progress: ResumeState, paths: list[str]) -> list[str]:
    """The input files the repairs read, in order."""
    out = []
    for split, files in split_files(paths).items():
        for index in progress.repairs[split]:
            start, end = repair_span(progress, split, index)
            out += files[start["file"]:end["file"] + 1]
    return out


def resuming_files(progress: ResumeState, paths: list[str]) -> list[str]:
    """The input files the unfinished splits still read, from the file each resumes in."""
    return [path for split, files in split_files(paths).items() if "result" not in progress.split(split)
            for path in files[resume_point(progress.split(split))["file"]:]]


def unchecked_resume_files(progress: ResumeState, paths: list[str]) -> list[str]:
    """The files whose tokens are in finished shards that the run reads again (the unfinished splits
    resume inside them, or a repair reads them), that the last reconcile could not check (not on disk
    then: evicted or deleted from a cache). They must be downloaded and checked before the run reads
    them: if one changed, what is in the shards is not what follows (or what a repair would make)."""
    again = repair_files(progress, paths)
    for split, files in split_files(paths).items():
        done = progress.split(split)
        if "result" not in done and done["shards"]:
            again.append(files[resume_point(done)["file"]])
    return [path for path in dict.fromkeys(again)
            if progress.names[path] in progress.state["files"] and path not in progress.checked]


def _keep(progress: ResumeState, split: str, n: int) -> None:
    """Keep the first n shards of a split as finished work, forget the rest."""
    done = progress.split(split)
    if n < len(done["shards"]) or "result" in done:
        done.pop("result", None)
        del done["shards"][n:]
        progress.save()



def checked_stream(progress: ResumeState, shards: Shards, bin_dir: str, stream: ShardStream,
                   max_cached: int | None) -> ShardStream:
    """A stream of the files the run reads, once every file it resumes inside is known unchanged:
    reconcile checks the files on disk; one it resumes inside that is not (evicted, deleted) is
    downloaded first and checked in turn (a changed one moves the resume point back, maybe into another)."""
    try:
        while True:
            order = reading_order(progress, shards.paths(), bin_dir)
            if stream.order != order:  # the shards were reset or rolled back
                stream.close()
                stream = ShardStream(shards, order, max_cached)
            unchecked = unchecked_resume_files(progress, shards.paths())
            if not unchecked:
                return stream
            for path in unchecked:
                stream.get(path)
    except BaseException:
        stream.close()
        raise


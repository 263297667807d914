"""
Step 1's promise, kept in one place: resume, never mixed, a changed input rolls back.

The resume state (ResumeState, the progress file in the dataset folder) says what is done. Before the run
changes anything, claim_folder reads the folder once and holds it against the command: other flags are
an error (or removed with --overwrite); changed inputs roll back; damaged or missing shards are noted
for repair. It changes nothing: it says what must change (a Claim), and the step makes the changes
(Claim.apply, which first marks the folder incomplete) once it knows it can go on (the shards it must
download can be).
Then reading_order says what the run still reads, and checked_stream makes sure every file it resumes
inside is the one its finished shards were made from.

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
from dataclasses import dataclass, field

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
HASH_THREADS = min(8, os.cpu_count() or 1)


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def split_files(paths: list[str]) -> dict[str, list[str]]:
    """Validation is the last file, train the others."""
    return {"val": paths[-1:], "train": paths[:-1]}


def input_names(paths: list[str]) -> dict[str, str]:
    """Input path -> the name its identity is kept under: its path relative to the folder that holds them
    all, so the same shards in another --parquet-dir have the same names ("shard_00001.parquet",
    "data/a.parquet")."""
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return {path: os.path.relpath(path, common).replace(os.sep, "/") for path in paths}


class ResumeState:
    """What step 1 has done in its folder, kept in the progress file STATE_FILE:
    {"key": settings, "fingerprint": the tokenizer's, "files": {name: identity}, "splits": {split: {...}}}."""

    def __init__(self, path: str, key: dict):
        self.path = path
        self.state = {"key": key, "files": {}, "splits": {split: {"shards": []} for split in SPLITS}}
        self.names: dict[str, str] = {}  # input path -> the name its identity is kept under (input_names)
        self.checked: set[str] = set()  # the input paths found unchanged since they were tokenized
        self.folder = os.path.dirname(path)  # the dataset folder
        self.damaged: dict[str, str] = {}  # file (in the folder) -> why: what this run found and makes again
        self.repairs: dict[str, list[int]] = {split: [] for split in SPLITS}  # finished shards to make again
        self.trained: dict = {}  # the tokenizer's training.json as claim_folder found it

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
        self.forget()

    def forget(self) -> None:
        """Forget every shard (and their repairs), as for a folder never tokenized."""
        self.state = ResumeState(self.path, self.state["key"]).state
        self.repairs = {split: [] for split in SPLITS}

    def made_with(self, fingerprint: str) -> None:
        """The shards from here on are made with this tokenizer (saved with the next shard)."""
        self.state["fingerprint"] = fingerprint

    def tokenizer_made(self, records: list[FileRecord]) -> None:
        """The tokenizer's files as they are now (its pickle and training.json), saved: a later run
        checks them against this before it reuses them."""
        self.state["tokenizer_files"] = {os.path.basename(r.path): [r.size, r.sha256] for r in records}
        self.save()

    def identity(self, name: str, default):
        """The identity of the input file `name` when it was tokenized (default: never)."""
        return self.state["files"].get(name, default)

    def tokenizing(self, name: str, identity) -> None:
        """The input file `name` is tokenized now, with this identity (saved with the next shard)."""
        self.state["files"][name] = identity

    def keep(self, split: str, n: int) -> bool:
        """Keep the first n shards of a split as finished work, forget the rest (and their repairs);
        True when that changed the state."""
        done = self.split(split)
        self.repairs[split] = [index for index in self.repairs[split] if index < n]
        if n < len(done["shards"]) or "result" in done:
            done.pop("result", None)
            del done["shards"][n:]
            return True
        return False


# ------------------------------------------------------------------------------------ claiming the folder


@dataclass
class Claim:
    """What claim_folder found the folder must change before the run goes on, made by apply() all at
    once, the folder marked incomplete first."""
    progress: ResumeState
    out: str
    complete: bool = False  # the folder already holds this exact run, complete and checked
    remove_tokenizer: str | None = None  # its folder: damaged, or trained otherwise (--overwrite)
    remove_other_steps: bool = False  # made with the old tokenizer (--overwrite)
    shard_folders: list[str] = field(default_factory=list)  # every .bin shard there goes (--overwrite)
    stray_shards: list[str] = field(default_factory=list)  # written after the last recorded shard
    save: bool = False  # the progress state changed (rolled back)
    said: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        """Whether the folder's finished work changes (its repairs included)."""
        return bool(self.remove_tokenizer or self.shard_folders or self.stray_shards or self.save
                    or self.progress.damaged)

    def apply(self) -> None:
        mark_incomplete(self.out)
        for folder in self.shard_folders:
            remove_shards(folder, self.progress.path)
        for path in self.stray_shards:
            os.remove(path)
        if self.save:
            self.progress.save()
        if self.remove_tokenizer:
            # the other steps' outputs first: made with the old tokenizer, they must not outlive it
            for manifest in find_manifests(self.out) if self.remove_other_steps else []:
                if os.path.dirname(manifest) != self.out:
                    print(f"removing {os.path.dirname(manifest)}: made with the old tokenizer")
                    shutil.rmtree(os.path.dirname(manifest))
            shutil.rmtree(self.remove_tokenizer, ignore_errors=True)
        for line in self.said:
            say(line)


@dataclass
class Found:
    """What the dataset folder holds for step 1, read once, before anything in it changes."""
    has_state: bool  # a progress file is there
    saved: dict | None  # what it holds (None: it does not read)
    trained: dict  # the tokenizer's training.json ({}: none, or it does not read)
    manifest: list[dict]  # the folder's own manifest's entries ([]: none, or it does not read)
    tokenizer_files: list[FileRecord]  # the tokenizer's files as recorded when they were made
    tokenizer_damage: dict[str, str]  # path -> why, for those not as recorded


def _read_folder(progress_path: str, out: str, tok_dir: str) -> Found:
    """The progress file, the tokenizer's training.json, the manifest; the tokenizer's files hashed
    against their record (in the progress file; for a folder that predates that record, in the manifest)."""
    saved = read_json(progress_path, dict)
    trained = read_json(os.path.join(tok_dir, TRAINING_FILE), dict) or {}
    try:
        manifest = read_manifest(os.path.join(out, MANIFEST_FILE), out)["files"]
    except (UserError, OSError):
        manifest = []
    recorded = (saved or {}).get("tokenizer_files")
    if not isinstance(recorded, dict):
        prefix = relative(tok_dir, out) + "/"
        recorded = {f["path"][len(prefix):]: [f["size"], f["sha256"]] for f in manifest
                    if f["path"] in (prefix + TOKENIZER_FILE, prefix + TRAINING_FILE)}
    records = [FileRecord(os.path.join(tok_dir, name), *entry) for name, entry in recorded.items()
               if isinstance(name, str) and isinstance(entry, list) and len(entry) == 2 and "/" not in name]
    damage = _damage(records, "recorded when it was made")
    return Found(os.path.exists(progress_path), saved, trained, manifest, records, damage)


def claim_folder(progress: ResumeState, out: str, tok_dir: str, bin_dir: str, training: dict, paths: list[str],
                 overwrite: bool) -> Claim:
    """Hold the folder against this run's settings and inputs, changing nothing: what must change, with
    `progress` loaded with what is done and what is damaged (to be made again).

    What was made with other settings is an error naming the differences, unless `overwrite`: then it
    is to be removed (with the other steps' outputs when the tokenizer goes, as they were made with it).
    A damaged tokenizer is removed, to be trained again (from its inputs, to the same bytes: a replaced
    pickle is never loaded); an input that changed since it was tokenized rolls its split back; damaged
    shards are repaired; shard files after the last recorded one go.
    """
    progress.names = input_names(paths)
    found = _read_folder(progress.path, out, tok_dir)
    progress.trained = found.trained
    claim = Claim(progress, out, remove_tokenizer=tok_dir if found.tokenizer_damage else None)
    progress.damaged = {relative(path, out): why for path, why in found.tokenizer_damage.items()}
    # what differs from the command
    has_tokenizer = os.path.exists(os.path.join(tok_dir, TOKENIZER_FILE)) and not found.tokenizer_damage
    differences = _tokenizer_differences(found.trained, training) if has_tokenizer else []
    old_key = (found.saved or {}).get("key")
    if found.has_state and not isinstance(old_key, dict):
        differences.append(f"shards: {STATE_FILE} does not read (damaged)")
    elif found.has_state:
        differences += _differences("shards", old_key, progress.state["key"])
    elif _shard_files(bin_dir):
        differences.append(f"{bin_dir} has .bin shards this tool has no record of")
    if differences:
        return _replace(claim, differences, tok_dir, bin_dir, old_key, overwrite)
    if not found.has_state:
        return claim
    progress.state = found.saved
    # the folder's other files against its manifest, when it says it is complete (each hashed once: the
    # tokenizer's were, against their record)
    manifest_wrong, listed = _against_manifest(progress, out, bin_dir, found.manifest)
    listed = [r for r in listed if r not in found.tokenizer_files and r.path not in found.tokenizer_damage]
    # changed inputs roll their splits back; then the finished shards that remain are checked
    claim.said = _roll_back(progress, paths, _identities(progress, paths))
    claim.save = bool(claim.said)
    claim.stray_shards = _stray_shards(progress, bin_dir)
    shards = {split: [FileRecord(os.path.join(bin_dir, shard_name(split, i)), s["size"], s["sha256"])
                      for i, s in enumerate(progress.split(split)["shards"])] for split in SPLITS}
    shard_damage = _damage([r for split in SPLITS for r in shards[split]], "recorded when it was made")
    other_damage = _damage(listed, "in the manifest")
    progress.repairs = {split: [i for i, r in enumerate(shards[split]) if r.path in shard_damage] for split in SPLITS}
    progress.damaged.update({relative(path, out): why for path, why in {
        **shard_damage, **other_damage, **manifest_wrong}.items()})
    claim.complete = progress.complete() and not claim.changes
    return claim


def _identities(progress: ResumeState, paths: list[str]) -> dict[str, str]:
    """The identities now of the input files on disk that the progress file has one for."""
    return {path: file_identity(path) for path in paths
            if progress.names[path] in progress.state["files"] and os.path.exists(path)}


def _damage(records: list[FileRecord], against: str) -> dict[str, str]:
    """path -> why, for each file that is not as recorded (files.file_damage), hashed on threads."""
    whys = thread_map(functools.partial(file_damage, against=against), records, HASH_THREADS)
    return {r.path: why for r, why in zip(records, whys) if why}


def claim_tokenizer_inputs(progress: ResumeState, out: str, tok_dir: str, training: dict, bin_dir: str,
                           overwrite: bool) -> Claim:
    """claim_folder's check of the tokenizer, again once its training shards are on disk: a shard that was
    not had no known content then. The tokenizer in the folder must have been trained on these."""
    claim = Claim(progress, out)
    if not os.path.exists(os.path.join(tok_dir, TOKENIZER_FILE)):  # (none, or claim_folder removed it)
        return claim
    differences = _tokenizer_differences(progress.trained, training)
    if not differences:
        return claim
    old_key = progress.state["key"] if os.path.exists(progress.path) else None
    return _replace(claim, differences, tok_dir, bin_dir, old_key, overwrite)


def _tokenizer_differences(trained: dict, training: dict) -> list[str]:
    """How the tokenizer in the folder was trained (its training.json) otherwise than `training` says."""
    if not trained:
        return [f"tokenizer: {TRAINING_FILE} is missing or does not read"]
    return _differences("tokenizer", {k: trained.get(k) for k in training}, training)


def _replace(claim: Claim, differences: list[str], tok_dir: str, bin_dir: str, old_key: dict | None,
             overwrite: bool) -> Claim:
    """What the folder holds made otherwise: an error naming the differences, unless `overwrite`: then it
    is to be removed (with the other steps' outputs when the tokenizer goes, as they were made with it)."""
    if not overwrite:
        raise OutputError("the folder holds outputs made with other flags or inputs: " + "; ".join(differences),
                          claim.out, "pass --overwrite to replace them, or pick another --dataset-name")
    if any(d.startswith("tokenizer") for d in differences) and os.path.isdir(tok_dir):
        claim.remove_tokenizer, claim.remove_other_steps = tok_dir, True
    old_subdir = (old_key if isinstance(old_key, dict) else {}).get("bin_subdir") or ""
    if isinstance(old_subdir, str) and ".." not in old_subdir.split("/") and not os.path.isabs(old_subdir):
        claim.shard_folders.append(os.path.join(claim.out, old_subdir))  # where they were (a folder inside)
    claim.shard_folders.append(bin_dir)
    claim.progress.forget()
    claim.said.append(f"--overwrite: removed what was made with other flags ({'; '.join(differences)})")
    return claim


def _against_manifest(progress: ResumeState, out: str, bin_dir: str, files: list[dict]
                      ) -> tuple[dict[str, str], list[FileRecord]]:
    """A complete folder's manifest: (path -> why, when the manifest itself is wrong; else the other files
    it lists, to check). The shards are checked against their records: it must list them as recorded.
    An incomplete folder's manifest is not checked: it is made anew."""
    manifest = os.path.join(out, MANIFEST_FILE)
    if not progress.complete():
        return {}, []
    if not os.path.exists(manifest):
        return {manifest: "missing"}, []
    if not files:
        return {manifest: "does not read"}, []
    listed = {f["path"]: f for f in files}
    shards = {relative(os.path.join(bin_dir, shard_name(split, i)), out): s
              for split in SPLITS for i, s in enumerate(progress.split(split)["shards"])}
    if any((listed.get(rel) or {}).get("sha256") != s["sha256"] for rel, s in shards.items()):
        return {manifest: "does not list the shards as they were made"}, []
    return {}, [FileRecord(os.path.join(out, *f["path"].split("/")), f["size"], f["sha256"])
                for f in files if f["path"] not in shards]


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


def _roll_back(progress: ResumeState, paths: list[str], identities: dict[str, str]) -> list[str]:
    """Per split, the first input file whose identity now (`identities`) is not the one recorded when it
    was tokenized rolls the split back to the last shard that ended before that file; the files from there
    on are read again (their identities recorded then). The files found unchanged become `checked`.
    Returns what to say."""
    said = []
    for split, files in split_files(paths).items():
        done = progress.split(split)
        for index, path in enumerate(files):
            known = progress.state["files"].get(progress.names[path])
            if known is None or path not in identities:
                continue
            if identities[path] == known:
                progress.checked.add(path)
                continue
            said.append(f"{progress.names[path]} changed since it was tokenized: redoing {split} from there")
            progress.keep(split, sum(1 for s in done["shards"] if (s["file"], s["group"], s["offset"]) <= (index, 0, 0)))
            for later in files[index:]:
                progress.state["files"].pop(progress.names[later], None)
            break
    return said


def _stray_shards(progress: ResumeState, bin_dir: str) -> list[str]:
    """The shard files after the last recorded one of their split (written just before a crash)."""
    stray = []
    for name in sorted(os.listdir(bin_dir)) if os.path.isdir(bin_dir) else []:
        match = layout.PRETRAIN.shard_file.fullmatch(name)
        if match and int(match.group(2)) >= len(progress.split(match.group(1))["shards"]):
            stray.append(os.path.join(bin_dir, name))
    return stray


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


# ------------------------------------------------------------------------------------ what the run reads


def resume_point(done: dict) -> dict:
    """Where a split resumes: the row group in which its last finished shard ended."""
    shards = done["shards"]
    return shards[-1] if shards else {"file": 0, "group": 0, "offset": 0, "docs": 0, "chars": 0}


def repair_span(progress: ResumeState, split: str, index: int) -> tuple[dict, dict]:
    """Where finished shard `index` of a split starts and ends in the input: the resume points after
    the shard before it and after it."""
    shards = progress.split(split)["shards"]
    return resume_point({"shards": shards[:index]}), shards[index]


def reading_order(progress: ResumeState, paths: list[str]) -> list[str]:
    """The input files the run still reads, in the order it reads them: the spans of the shards it
    repairs, then val's and train's files from the file each resumes in."""
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
    resume inside them, or a repair reads them), that claim_folder could not check (not on disk then:
    evicted or deleted from a cache). They must be downloaded and checked before the run reads them: if
    one changed, what is in the shards is not what follows (or what a repair would make)."""
    again = repair_files(progress, paths)
    for split, files in split_files(paths).items():
        done = progress.split(split)
        if "result" not in done and done["shards"]:
            again.append(files[resume_point(done)["file"]])
    return [path for path in dict.fromkeys(again)
            if progress.names[path] in progress.state["files"] and path not in progress.checked]


def checked_stream(progress: ResumeState, shards: Shards, bin_dir: str, stream: ShardStream,
                   max_cached: int | None) -> ShardStream:
    """A stream of the files the run reads, once every file it resumes inside is known unchanged:
    claim_folder checked the files on disk; one it resumes inside that was not (evicted, deleted) is
    downloaded first and checked in turn (a changed one moves the resume point back, maybe into another)."""
    try:
        while True:
            order = reading_order(progress, shards.paths())
            unchecked = unchecked_resume_files(progress, shards.paths())
            if stream.order != order:  # the shards were reset or rolled back
                stream.close()
                stream = ShardStream(shards, order, max_cached)
            if not unchecked:
                return stream
            said = _roll_back(progress, shards.paths(), {path: file_identity(stream.get(path)) for path in unchecked})
            if said:
                Claim(progress, progress.folder, stray_shards=_stray_shards(progress, bin_dir), save=True,
                      said=said).apply()
    except BaseException:
        stream.close()
        raise

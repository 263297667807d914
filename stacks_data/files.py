"""Writing output files atomically: a temp name in the same folder, then a rename."""

import json
import os
import pickle
import re


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def torch_save(obj, path: str) -> None:
    import torch  # heavy: only the steps that write .pt files pay for it, not tokenizer workers

    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def torch_save_plain(obj, path: str) -> None:
    """torch_save for payloads of plain Python objects (no tensors): the same bytes, ~10x faster.

    torch.save calls its Python persistent_id hook (which looks for tensor storages) on every
    object it pickles, i.e. once per int of a token list; without tensors it always answers None,
    so dropping the hook changes nothing in the file (tests/test_core_eval.py checks the bytes).
    """
    import torch

    tmp = path + ".tmp"
    torch.save(obj, tmp, pickle_module=_PlainPickle)
    os.replace(tmp, path)


class _PlainPickler(pickle.Pickler):
    def __init_subclass__(cls, **kwargs):
        # torch.save pickles with a subclass of pickle_module.Pickler that defines persistent_id
        super().__init_subclass__(**kwargs)
        if "persistent_id" in cls.__dict__:
            del cls.persistent_id


class _PlainPickle:
    """A pickle_module for torch.save: the standard pickle minus the persistent_id hook."""
    Pickler = _PlainPickler
    Unpickler = pickle.Unpickler


def remove_outputs(folder: str, pattern: str) -> int:
    """Remove the files in `folder` whose names fully match the regex `pattern`, and the temp files of
    interrupted writes; returns how many. Outputs of an earlier run must never mix with new ones."""
    if not os.path.isdir(folder):
        return 0
    regex = re.compile(pattern)
    names = [n for n in os.listdir(folder)
             if (regex.fullmatch(n) or n.endswith(".tmp")) and os.path.isfile(os.path.join(folder, n))]
    for name in names:
        os.remove(os.path.join(folder, name))
    return len(names)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000

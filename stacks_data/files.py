"""Writing output files atomically: a temp name in the same folder, then a rename."""

import json
import os


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


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000

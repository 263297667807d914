"""The dataset card (README.md): metadata that parses, numbers equal to config.json's, the same bytes for the
same folder wherever it lies, and upload writes and publishes it."""

import json
import os
import re
import shutil

import pytest
import yaml

from fixtures import repo_files
from stacks_data.steps import card
from stacks_data.cli import main, run_step
from stacks_data.errors import InputError
from test_roundtrip import built  # noqa: F401  (the dataset all four steps made)


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def rows(body: str, first_cell: str) -> list[list[str]]:
    """The cells of the table rows whose first cell is first_cell."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in body.splitlines()
            if line.startswith(f"| {first_cell} |")]


def number(cell: str) -> int:
    return int(cell.replace(",", "").split()[0])


@pytest.fixture(scope="module")
def written(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("card") / "ds"
    shutil.copytree(built, folder)
    run_step("card", [str(folder)])
    return folder, (folder / "README.md").read_text()


def test_the_metadata_parses(written):
    meta, body = split_card(written[1])
    assert meta == {
        "license": "odc-by", "language": ["en"], "task_categories": ["text-generation"],
        "size_categories": ["n<1K"],  # 180 train + 60 val documents
        "source_datasets": ["karpathy/fineweb-edu-100b-shuffle", "HuggingFaceTB/smol-smoltalk", "cais/mmlu",
                            "openai/gsm8k", "allenai/ai2_arc"],
        "tags": ["stacks-data", "pretokenized", "tokenizer", "nanochat", "sft"], "pretty_name": "ds"}
    assert body.lstrip().startswith("# ds\n")


def test_the_numbers_are_config_json_s(written):
    folder, text = written
    _, body = split_card(text)
    pre = json.loads((folder / "config.json").read_text())
    sft = json.loads((folder / "sft" / "config.json").read_text())
    by_split = {}  # the split tables: step 1's first, then SFT's
    for r in rows(body, "train") + rows(body, "val"):
        by_split.setdefault(r[0], []).append([number(c) for c in r[1:]])
    for split in ("train", "val"):
        assert by_split[split][0] == [pre[f"{split}_shards"], pre[f"{split}_tokens"], pre[f"{split}_documents"]]
        assert by_split[split][1] == [sft[f"{split}_shards"], sft[f"{split}_tokens"], sft[f"{split}_conversations"]]
    assert f"| fingerprint | `{pre['tokenizer_fingerprint']}`" in body
    assert f"| `tokenizer/tokenizer.pkl` sha256 | `{pre['tokenizer_sha256']}` |" in body
    assert f"--vocab-size {pre['vocab_size']}" in body and f"--shard-size {pre['shard_size']}" in body
    contents = rows(body, "pretrain")[0]
    assert number(contents[3]) == pre["train_tokens"] + pre["val_tokens"]
    assert number(contents[4]) == pre["train_documents"] + pre["val_documents"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert number(contents[1]) == len(manifest["files"])
    shards = rows(body, "`train_??????.bin`")[0]
    assert number(shards[1]) == pre["train_shards"]
    for task in json.loads((folder / "core_eval" / "config.json").read_text())["tasks"]:
        assert number(rows(body, task["label"])[0][2]) == task["num_examples"]
    # the tokenizer report's table, and the images the Hub page shows
    assert "| sample | bytes | chars | ours tokens |" in body and "](tokenizer_report.png)" in body


def test_the_same_folder_gives_the_same_bytes_wherever_it_lies(written, tmp_path):
    folder, text = written
    run_step("card", [str(folder)])
    assert (folder / "README.md").read_text() == text
    shutil.copytree(folder, tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "README.md").unlink()
    run_step("card", [str(tmp_path / "elsewhere")])
    assert (tmp_path / "elsewhere" / "README.md").read_bytes() == text.encode()
    assert "/" + str(folder).split("/")[1] not in text  # no local path: /tmp/... appears nowhere


def test_document_statistics_are_config_json_s(written):
    folder, text = written
    configs = [json.loads((folder / "config.json").read_text()), json.loads((folder / "sft" / "config.json").read_text())]
    for i, config in enumerate(configs):  # step 1's table, then SFT's
        for split, d in config["documents"].items():
            cells = rows(text, f"`{split}`")[i]
            assert number(cells[1]) == d["count"]
            assert [number(x) for x in cells[2].split(" / ")] == [d["length"][k] for k in ("min", "p50", "p90", "p99", "max")]
            assert cells[3].startswith(f"{d['max_docs_in_window']['1024']:,} ({d['max_docs_in_bos_window']['1024']:,})")
    stale = copy_with(folder, lambda config: config.pop("documents"))  # a step 1 made before the statistics
    assert text.count("Document statistics") == 2 and card.card(str(stale)).count("Document statistics") == 1


def copy_with(folder, change):
    import tempfile

    copy = os.path.join(tempfile.mkdtemp(), "ds")
    shutil.copytree(folder, copy)
    config = json.loads(open(os.path.join(copy, "config.json")).read())
    change(config)
    open(os.path.join(copy, "config.json"), "w").write(json.dumps(config))
    return copy


def test_a_folder_without_step_1_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no step 1"):
        run_step("card", [str(tmp_path / "empty")])


def test_upload_writes_and_publishes_the_card(built, tmp_path, hub, capsys):
    folder = tmp_path / "ds"
    shutil.copytree(built, folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["upload", str(folder), "--hf-user", "me", "--dry-run"])
    assert exit.value.code == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(re.fullmatch(r"README\.md  [\d.]+ KB", line) for line in listed)
    assert not (folder / "README.md").exists() and not hub.requests  # a dry run writes nothing
    run_step("upload", [str(folder), "--hf-user", "me"])
    assert repo_files(hub, "me/ds")["README.md"] == (folder / "README.md").read_bytes() == \
        card.card(str(folder)).encode()
    assert hub.validated == [split_card(card.card(str(folder)))[0]]  # the client had the Hub check it


def test_a_folder_of_one_later_step_uploads_without_a_card(built, tmp_path, capsys):
    shutil.copytree(built / "sft", tmp_path / "ds" / "sft")  # as `download --steps sft` leaves it
    capsys.readouterr()
    run_step("upload", [str(tmp_path / "ds"), "--dry-run"])
    out = capsys.readouterr().out
    assert "no dataset card: " in out and "README.md" not in out and "would upload " in out

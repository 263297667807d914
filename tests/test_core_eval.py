"""CORE eval pre-tokenization: prompts, indices, truncation, seeding, bad input, bundle download, upload."""

import io
import json
import os
import random
import zipfile

import pytest
import torch

from fixtures import published_files, repo_files
from stacks_data.steps import core_eval
from stacks_data.cli import run_step
from stacks_data.dataset.files import torch_save, torch_save_plain
from stacks_data.errors import FlagError, InputError, NetworkError
from stacks_data.tokenizer import RustBPETokenizer

CORPUS = [
    "Capital of France? paris. Color of the sky? blue, green or red. Opposite of hot? cold, warm.",
    "Number of legs of a cat? two or four. the cat sat down. the dog sat down. Tom ran fast. Tom hid fast.",
    "we ate songs. we sang songs. Largest planet? Jupiter. Red planet? Mars. Our star? the Sun.",
    "Answer: hello hello hello world. The sky is blue. Question: what is it?",
]

META_CSV = "Eval Task,Task Category,Random baseline,Description\nmc,x,25,\"a, b\"\nsch,x,50,y\nlm,x,0,z\nlid,x,9.1,w\n"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    tok = RustBPETokenizer.train_from_iterator(CORPUS * 20, 400)
    path = tmp_path_factory.mktemp("tok") / "ds" / "tokenizer"
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return RustBPETokenizer.from_directory(tok_dir)


def write_bundle(root, tasks, files, csv=META_CSV):
    """tasks: list of core.yaml entries (dicts); files: {dataset_uri: list of rows or raw text}."""
    import yaml
    os.makedirs(os.path.join(root, "eval_data"), exist_ok=True)
    with open(os.path.join(root, "core.yaml"), "w") as f:
        yaml.safe_dump({"icl_tasks": tasks}, f, sort_keys=False)
    with open(os.path.join(root, "eval_meta_data.csv"), "w") as f:
        f.write(csv)
    for uri, rows in files.items():
        text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
        with open(os.path.join(root, "eval_data", uri), "w") as f:
            f.write(text)
    return str(root)


def task_of(**entry):
    entry = {"label": "mc", "dataset_uri": "t.jsonl", "num_fewshot": [0], "icl_task_type": "multiple_choice", **entry}
    return entry


def one_task(tmp_path, rows, **entry):
    """Write a one-task bundle and return its Task."""
    entry = task_of(**entry)
    write_bundle(tmp_path / "bundle", [entry], {entry["dataset_uri"]: rows})
    return core_eval.load_bundle(str(tmp_path / "bundle"))[0]


def check_seq(seq, tok, prompt, prefix_or_span, scored):
    """tokens are <|bos|> + the prompt's tokens, and tokens[start:end] decode to the scored text."""
    assert seq["tokens"] == [tok.get_bos_token_id()] + tok.encode(prompt)
    assert seq["end_idx"] == len(seq["tokens"])
    assert tok.decode(seq["tokens"][seq["start_idx"]:seq["end_idx"]]) == scored
    if prefix_or_span is not None:  # the text before the scored span, written out by hand
        assert seq["start_idx"] == 1 + len(tok.encode(prefix_or_span))


# ---------------------------------------------------------------- seeding


def test_fewshot_indices_equal_the_list_definition():
    for n in (2, 3, 7, 40, 300):
        for idx in range(0, n, max(1, n // 13)):
            for k in sorted({0, 1, 3, 10, n - 1}):
                if k > n - 1:
                    continue
                expected = random.Random(1234 + idx).sample([i for i in range(n) if i != idx], k)
                assert core_eval.fewshot_indices(n, idx, k) == expected, (n, idx, k)


def test_seeds_are_pinned():
    # worked out once from random.Random(1337).shuffle / Random(1234 + idx).sample; pinned here
    rows = list(range(4))
    random.Random(core_eval.SHUFFLE_SEED).shuffle(rows)
    assert rows == [1, 0, 3, 2]
    assert [core_eval.fewshot_indices(4, idx, 2) for idx in range(4)] == [[2, 1], [3, 2], [3, 1], [0, 1]]


# ---------------------------------------------------------------- prompts and indices, by hand

MC_ROWS = [  # file order A, B, C, D; Random(1337) order is B, A, D, C
    {"query": "Capital of France?", "choices": ["paris", "rome"], "gold": 0, "extra": "ignored"},
    {"query": "Color of the sky?", "choices": ["blue", "green", "red"], "gold": 0},
    {"query": "Opposite of hot?", "choices": ["cold", "warm"], "gold": 0},
    {"query": "Number of legs of a cat?", "choices": ["two", "four"], "gold": 1},
]


def test_multiple_choice_prompts_and_indices(tmp_path, tok):
    task = one_task(tmp_path, MC_ROWS, num_fewshot=[1], continuation_delimiter="\n")
    data = core_eval.tokenize_task(task, tok, 2048)
    # example idx -> (few-shot prefix, query, choices, gold); few-shot picks [2], [3], [3], [0] in shuffled order
    expected = [
        ("Number of legs of a cat?\nfour\n\n", "Color of the sky?", ["blue", "green", "red"], 0),
        ("Opposite of hot?\ncold\n\n", "Capital of France?", ["paris", "rome"], 0),
        ("Opposite of hot?\ncold\n\n", "Number of legs of a cat?", ["two", "four"], 1),
        ("Color of the sky?\nblue\n\n", "Opposite of hot?", ["cold", "warm"], 0),
    ]
    seqs = iter(data["sequences"])
    for idx, (few, query, choices, gold) in enumerate(expected):
        for j, choice in enumerate(choices):
            seq = next(seqs)
            assert (seq["example_idx"], seq["seq_idx"]) == (idx, j)
            check_seq(seq, tok, few + query + "\n" + choice, few + query + "\n", choice)
    assert next(seqs, None) is None
    assert data["num_seqs_per_example"] == {0: 3, 1: 2, 2: 2, 3: 2}
    assert data["gold_labels"] == {0: 0, 1: 0, 2: 1, 3: 0}
    assert (data["task_type"], data["label"], data["num_examples"]) == ("multiple_choice", "mc", 4)
    assert data["random_baseline"] == 25.0 and type(data["random_baseline"]) is float


def test_schema_prompts_and_indices(tmp_path, tok):
    rows = [{"context_options": ["the cat", "the dog"], "continuation": "sat down.", "gold": 0},
            {"context_options": ["Tom ran", "Tom hid"], "continuation": "fast.", "gold": 0},
            {"context_options": ["we ate", "we sang"], "continuation": "songs.", "gold": 1}]
    task = one_task(tmp_path, rows, label="sch", icl_task_type="schema", num_fewshot=[1])
    data = core_eval.tokenize_task(task, tok, 2048)
    # Random(1337) keeps 3 rows in order; few-shot picks [2], [2], [1]
    expected = [("we sang songs.\n\n", ["the cat", "the dog"], " sat down."),
                ("we sang songs.\n\n", ["Tom ran", "Tom hid"], " fast."),
                ("Tom ran fast.\n\n", ["we ate", "we sang"], " songs.")]
    seqs = iter(data["sequences"])
    for idx, (few, options, continuation) in enumerate(expected):
        for j, option in enumerate(options):
            seq = next(seqs)
            assert (seq["example_idx"], seq["seq_idx"]) == (idx, j)
            # the options end in different letters, so the common suffix is exactly the continuation
            check_seq(seq, tok, few + option + continuation, few + option, continuation)
    assert data["gold_labels"] == {0: 0, 1: 0, 2: 1}
    assert data["num_seqs_per_example"] == {0: 2, 1: 2, 2: 2}
    assert data["random_baseline"] == 50.0


def test_language_modeling_prompts_and_indices(tmp_path, tok):
    rows = [{"context": "  Largest planet? ", "continuation": "Jupiter"},
            {"context": "Red planet?", "continuation": "Mars"},
            {"context": "Our star?", "continuation": "the Sun"}]
    task = one_task(tmp_path, rows, label="lm", icl_task_type="language_modeling", num_fewshot=[1],
                    continuation_delimiter="\nAnswer: ")
    data = core_eval.tokenize_task(task, tok, 2048)
    expected = [("Our star?\nAnswer: the Sun\n\n", "Largest planet?", "Jupiter"),
                ("Our star?\nAnswer: the Sun\n\n", "Red planet?", "Mars"),
                ("Red planet?\nAnswer: Mars\n\n", "Our star?", "the Sun")]
    assert len(data["sequences"]) == 3
    for idx, (seq, (few, context, continuation)) in enumerate(zip(data["sequences"], expected)):
        assert (seq["example_idx"], seq["seq_idx"]) == (idx, 0)
        # start = length of the stripped prompt without the continuation ("...Answer:")
        check_seq(seq, tok, few + context + "\nAnswer: " + continuation, few + context + "\nAnswer:",
                  " " + continuation)
    assert data["gold_labels"] == {} and data["num_seqs_per_example"] == {0: 1, 1: 1, 2: 1}


def test_zero_shot_and_non_string_fields(tmp_path, tok):
    rows = [{"context": "The sky is", "continuation": 42}]  # not a string: rendered with str()
    task = one_task(tmp_path, rows, label="lm", icl_task_type="language_modeling")
    (seq,) = core_eval.tokenize_task(task, tok, 2048)["sequences"]
    check_seq(seq, tok, "The sky is 42", "The sky is", " 42")


def test_a_lone_surrogate_in_a_row_is_encoded(tmp_path, tok):
    task = one_task(tmp_path, [{"context": "Smile \ud83d", "continuation": "now"}], label="lm",
                    icl_task_type="language_modeling")
    (seq,) = core_eval.tokenize_task(task, tok, 2048)["sequences"]
    check_seq(seq, tok, "Smile \ud83d now", "Smile \ud83d", " now")


def test_truncation_keeps_the_last_tokens_and_shifts_indices(tmp_path, tok):
    task = one_task(tmp_path, MC_ROWS, num_fewshot=[1], continuation_delimiter="\n")
    full = core_eval.tokenize_task(task, tok, 2048)["sequences"]
    max_len = min(len(s["tokens"]) for s in full) - 3
    cut = core_eval.tokenize_task(task, tok, max_len)["sequences"]
    for a, b in zip(full, cut):
        n = len(a["tokens"]) - max_len
        assert b["tokens"] == a["tokens"][n:] and len(b["tokens"]) == max_len
        assert (b["start_idx"], b["end_idx"]) == (a["start_idx"] - n, a["end_idx"] - n)
        assert b["tokens"][b["start_idx"]:b["end_idx"]] == a["tokens"][a["start_idx"]:a["end_idx"]]
    # cutting into the scored span is an error naming the task and the example
    with pytest.raises(InputError, match=r"cut into the scored span .*\(task mc: example 0 \(.*t.jsonl:2\)\)"):
        core_eval.tokenize_task(task, tok, 2)


# ---------------------------------------------------------------- against the plain definition


def reference(rows, task_type, d, k, tok, max_seq_len):
    """The spec, literally: full prompt strings per example, one encode per prompt."""
    rows = list(rows)
    random.Random(1337).shuffle(rows)
    bos, out = tok.get_bos_token_id(), []
    for idx, row in enumerate(rows):
        shots = [rows[i] for i in random.Random(1234 + idx).sample([i for i in range(len(rows)) if i != idx], k)]
        if task_type == "multiple_choice":
            few = "".join(f"{e['query']}{d}{e['choices'][e['gold']]}\n\n" for e in shots)
            toks = [[bos] + tok.encode(f"{few}{row['query']}{d}{c}") for c in row["choices"]]
            p = next(i for i in range(min(map(len, toks)) + 1) if i == min(map(len, toks)) or len({t[i] for t in toks}) > 1)
            spans = [(p, len(t)) for t in toks]
        elif task_type == "schema":
            few = "".join(f"{e['context_options'][e['gold']]}{d}{e['continuation']}\n\n" for e in shots)
            toks = [[bos] + tok.encode(f"{few}{o}{d}{row['continuation']}") for o in row["context_options"]]
            m = min(map(len, toks))
            s = next(i for i in range(m + 1) if i == m or len({t[-i - 1] for t in toks}) > 1)
            spans = [(len(t) - s, len(t)) for t in toks]
        else:
            few = "".join(f"{str(e['context']).strip()}{d}{e['continuation']}\n\n" for e in shots)
            ctx = str(row["context"]).strip()
            without = [bos] + tok.encode((few + ctx + d).strip())
            toks = [[bos] + tok.encode(f"{few}{ctx}{d}{row['continuation']}")]
            assert toks[0][:len(without)] == without
            spans = [(len(without), len(toks[0]))]
        for j, (t, (s, e)) in enumerate(zip(toks, spans)):
            n = max(0, len(t) - max_seq_len)
            out.append({"tokens": t[n:], "start_idx": s - n, "end_idx": e - n, "example_idx": idx, "seq_idx": j})
    return out


def test_matches_plain_definition_with_awkward_whitespace(tmp_path, tok):
    """Reusing few-shot tokens must give exactly the tokens of the full prompt strings, including
    rows that start with spaces or newlines (where reuse is not safe and the full prompt is encoded)."""
    mc = [{"query": "\nQuestion: what is it?", "choices": [" blue", "red"], "gold": 0},
          {"query": " Color of the sky?", "choices": ["blue", "\ngreen"], "gold": 1},
          {"query": "Opposite of hot?", "choices": ["cold", "warm", 7], "gold": 2},
          {"query": "hello world", "choices": ["two", "four"], "gold": 1},
          {"query": 12, "choices": ["  two", "four\n"], "gold": 0}]
    sch = [{"context_options": ["\nthe cat", "the dog"], "continuation": "sat down.", "gold": 0},
           {"context_options": ["Tom ran", " Tom hid"], "continuation": "\nfast.", "gold": 1},
           {"context_options": ["we ate", "we sang"], "continuation": "songs.", "gold": 1},
           {"context_options": ["hello", "world"], "continuation": " hello", "gold": 0}]
    lm = [{"context": " \nLargest planet?", "continuation": "Jupiter"},
          {"context": "Red planet?  ", "continuation": "Mars"},
          {"context": "\nOur star?", "continuation": " the Sun"},
          {"context": "The sky is", "continuation": "blue"},
          {"context": "hello", "continuation": "world\n"}]
    for rows, task_type, d in [(mc, "multiple_choice", " "), (mc, "multiple_choice", "\nAnswer: "),
                               (sch, "schema", " "), (sch, "schema", ""), (lm, "language_modeling", " "),
                               (lm, "language_modeling", "\nAnswer: ")]:
        for k in (0, 2, len(rows) - 1):
            task = one_task(tmp_path, rows, icl_task_type=task_type, num_fewshot=[k], continuation_delimiter=d)
            for max_len in (2048, 40):
                got = core_eval.tokenize_task(task, tok, max_len)["sequences"]
                assert got == reference(rows, task_type, d, k, tok, max_len), (task_type, repr(d), k, max_len)
    # an empty context leaves the language_modeling prompt starting with the delimiter: no token reuse
    lm[0]["context"] = " \n"
    task = one_task(tmp_path, lm, icl_task_type="language_modeling")
    assert core_eval.tokenize_task(task, tok, 2048)["sequences"] == reference(lm, "language_modeling", " ", 0, tok, 2048)
    # ... and as a few-shot example it starts the prompt with a space that strip() removes from
    # the prompt without the continuation only: both implementations reject it
    task = one_task(tmp_path, lm, icl_task_type="language_modeling", num_fewshot=[2])
    with pytest.raises(AssertionError):
        reference(lm, "language_modeling", " ", 2, tok, 2048)
    with pytest.raises(InputError, match="does not tokenize to a strict prefix"):
        core_eval.tokenize_task(task, tok, 2048)


# ---------------------------------------------------------------- bad input


def bad_task_error(tmp_path, text, **entry):
    task = one_task(tmp_path, text, **entry)
    with pytest.raises(InputError) as e:
        core_eval.load_examples(task)
    return str(e.value)


def test_malformed_json_names_file_and_line(tmp_path):
    text = json.dumps(MC_ROWS[0]) + "\n\n" + '{"query": "x", "choices": [1,\n'
    err = bad_task_error(tmp_path, text)
    assert err.startswith("malformed JSON") and f"({tmp_path}/bundle/eval_data/t.jsonl:3)" in err


def test_missing_keys_name_file_and_line(tmp_path):
    text = json.dumps(MC_ROWS[0]) + "\n" + json.dumps({"query": "q", "choices": ["a"]}) + "\n"
    assert "missing key(s) ['gold'] for a multiple_choice task (mc) (" in bad_task_error(tmp_path, text)
    assert "t.jsonl:2)" in bad_task_error(tmp_path, text)
    text = json.dumps({"context": "c"}) + "\n"
    err = bad_task_error(tmp_path, text, icl_task_type="language_modeling")
    assert err.startswith("missing key(s) ['continuation']") and "t.jsonl:1)" in err
    text = json.dumps({"context_options": ["a", "b"], "gold": 0}) + "\n"
    assert bad_task_error(tmp_path, text, icl_task_type="schema").startswith("missing key(s) ['continuation']")


@pytest.mark.parametrize("gold", [2, -1, True, "0", 1.0])
def test_gold_out_of_range(tmp_path, gold):
    text = json.dumps(MC_ROWS[0]) + "\n" + json.dumps({"query": "q", "choices": ["a", "b"], "gold": gold}) + "\n"
    err = bad_task_error(tmp_path, text)
    assert err.startswith(f"gold {gold!r} is not an index into 'choices'") and "t.jsonl:2)" in err
    text = json.dumps({"context_options": ["a", "b"], "continuation": "c", "gold": gold}) + "\n"
    err = bad_task_error(tmp_path, text, icl_task_type="schema")
    assert err.startswith("gold") and "t.jsonl:1)" in err


def test_choices_must_be_a_list(tmp_path):
    text = json.dumps({"query": "q", "choices": "ab", "gold": 0}) + "\n"
    assert bad_task_error(tmp_path, text).startswith("'choices' must be a non-empty list")


def test_unknown_task_type_names_core_yaml_line(tmp_path):
    write_bundle(tmp_path, [], {"t.jsonl": MC_ROWS})
    (tmp_path / "core.yaml").write_text(
        "icl_tasks:\n"
        "- label: mc\n"
        "  dataset_uri: t.jsonl\n"
        "  num_fewshot: [0]\n"
        "  icl_task_type: multiple_choice\n"
        "\n"
        "- label: sch  # line 7\n"
        "  dataset_uri: t.jsonl\n"
        "  num_fewshot: [0]\n"
        "  icl_task_type: generation_task\n")
    with pytest.raises(InputError, match=r"task 'sch': unknown icl_task_type 'generation_task'.*core.yaml:7\)"):
        core_eval.load_bundle(str(tmp_path))


def test_label_missing_from_meta_csv(tmp_path):
    write_bundle(tmp_path, [task_of(label="nope")], {"t.jsonl": MC_ROWS})
    with pytest.raises(InputError, match=r"no row with Eval Task 'nope' \(task at .*core.yaml:2\) \(.*eval_meta_data.csv\)"):
        core_eval.load_bundle(str(tmp_path))


def test_meta_csv_bad_baseline_names_line(tmp_path):
    write_bundle(tmp_path, [task_of()], {"t.jsonl": MC_ROWS}, csv=META_CSV + "bad,x,lots,y\n")
    with pytest.raises(InputError, match=r"Random baseline 'lots' is not a number \(.*eval_meta_data.csv:6\)"):
        core_eval.load_bundle(str(tmp_path))


def test_too_few_rows_for_the_shots(tmp_path):
    assert "2 examples, too few for 2-shot prompts" in bad_task_error(tmp_path, MC_ROWS[:2], num_fewshot=[2])


def test_language_modeling_continuation_must_add_tokens(tmp_path, tok):
    text = "\n" + json.dumps({"context": "hello", "continuation": ""}) + "\n"  # line 2 (after a blank line)
    task = one_task(tmp_path, text, label="lm", icl_task_type="language_modeling", continuation_delimiter="")
    with pytest.raises(InputError, match=r"the prompt without the continuation .*\(task lm: example 0 \(.*t.jsonl:2\)\)"):
        core_eval.tokenize_task(task, tok, 2048)
    # the fixture tokenizer merged "he" (the first token of "hello"), so "h" is not a token prefix of "hello"
    assert tok.decode(tok.encode("hello")[:1]) == "he"
    rows = [{"context": "h", "continuation": "ello"}]
    task = one_task(tmp_path, rows, label="lm", icl_task_type="language_modeling", continuation_delimiter="")
    with pytest.raises(InputError, match=r"does not tokenize to a strict prefix.*example 0"):
        core_eval.tokenize_task(task, tok, 2048)


# ---------------------------------------------------------------- the step end to end

BUNDLE_TASKS = [
    {"label": "mc", "dataset_uri": "mc.jsonl", "num_fewshot": [1], "icl_task_type": "multiple_choice",
     "continuation_delimiter": "\n"},
    {"label": "sch", "dataset_uri": "sch.jsonl", "num_fewshot": [0], "icl_task_type": "schema"},
    {"label": "lm", "dataset_uri": "lm.jsonl", "num_fewshot": [2], "icl_task_type": "language_modeling"},
]
BUNDLE_FILES = {
    "mc.jsonl": MC_ROWS,
    "sch.jsonl": [{"context_options": ["the cat", "the dog"], "continuation": "sat down.", "gold": 1}],
    "lm.jsonl": [{"context": "Red planet?", "continuation": "Mars"}, {"context": "Our star?", "continuation": "the Sun"},
                 {"context": "The sky is", "continuation": "blue"}],
}


def run_core(out_dir, *flags):
    run_step("core-eval", ["--out-dir", str(out_dir), "--dataset-name", "ds", *flags])


def out_files(out_dir):
    folder = os.path.join(out_dir, "ds", "core_eval")
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.fixture
def workdir(tmp_path, tok_dir):
    """--out-dir with the fixture tokenizer in ds/tokenizer and a bundle in ./bundle."""
    tok = RustBPETokenizer.from_directory(tok_dir)
    tok.save(str(tmp_path / "out" / "ds" / "tokenizer"))
    write_bundle(tmp_path / "bundle", BUNDLE_TASKS, BUNDLE_FILES)
    return tmp_path


def test_outputs_config_and_worker_independence(workdir, tok):
    out1, out2 = workdir / "out", workdir / "out2"
    run_core(out1, "--eval-bundle", str(workdir / "bundle"), "--skip-upload", "--num-workers", "1")
    os.makedirs(out2 / "ds")
    os.symlink(out1 / "ds" / "tokenizer", out2 / "ds" / "tokenizer")
    run_core(out2, "--eval-bundle", str(workdir / "bundle"), "--skip-upload", "--num-workers", "2")
    files = out_files(out1)
    assert files == out_files(out2)  # byte-identical for 1 and 2 workers
    assert sorted(files) == ["config.json", "lm.pt", "manifest.json", "mc.pt", "sch.pt"]
    config = json.loads(files["config.json"])
    assert config == {"max_seq_len": 2048, "bos_id": tok.get_bos_token_id(),
                      "tokenizer_fingerprint": tok.fingerprint(),
                      "source": {"eval_bundle": str(workdir / "bundle")}, "tasks": [
        {"label": "mc", "file": "mc.pt", "task_type": "multiple_choice", "num_examples": 4, "num_sequences": 9},
        {"label": "sch", "file": "sch.pt", "task_type": "schema", "num_examples": 1, "num_sequences": 2},
        {"label": "lm", "file": "lm.pt", "task_type": "language_modeling", "num_examples": 3, "num_sequences": 3},
    ]}
    mc = torch.load(io.BytesIO(files["mc.pt"]))
    task = core_eval.load_bundle(str(workdir / "bundle"))[0]
    assert mc == core_eval.tokenize_task(task, tok, 2048)
    assert set(mc) == {"task_type", "label", "random_baseline", "num_examples", "sequences",
                       "num_seqs_per_example", "gold_labels"}
    sch = torch.load(io.BytesIO(files["sch.pt"]))
    assert sch["gold_labels"] == {0: 1} and sch["random_baseline"] == 50.0


def test_rerun_replaces_files_of_an_earlier_run(workdir):
    out = workdir / "out"
    folder = out / "ds" / "core_eval"
    folder.mkdir(parents=True)
    (folder / "old_task.pt").write_bytes(b"stale")
    run_core(out, "--eval-bundle", str(workdir / "bundle"), "--skip-upload", "--num-workers", "1")
    assert sorted(out_files(out)) == ["config.json", "lm.pt", "manifest.json", "mc.pt", "sch.pt"]


def test_a_bad_row_in_the_last_task_is_found_before_any_work(workdir, monkeypatch):
    with open(workdir / "bundle" / "eval_data" / "lm.jsonl", "a") as f:
        f.write('{"context": "no continuation"}\n')

    def no_work(*args, **kwargs):
        raise AssertionError("outputs were staged before every row was checked")

    monkeypatch.setattr(core_eval, "StagedFolder", no_work)
    with pytest.raises(InputError, match=r"missing key.*lm.jsonl:4"):
        run_core(workdir / "out", "--eval-bundle", str(workdir / "bundle"), "--skip-upload", "--num-workers", "2")


def test_torch_save_plain_writes_torch_save_bytes(tmp_path):
    payload = {"a": [{"tokens": list(range(300)), "start_idx": 3}], "b": {1: 2}, "c": 25.0, "d": "x"}
    os.makedirs(tmp_path / "1")
    os.makedirs(tmp_path / "2")
    torch_save(payload, str(tmp_path / "1" / "t.pt"))
    torch_save_plain(payload, str(tmp_path / "2" / "t.pt"))
    assert (tmp_path / "1" / "t.pt").read_bytes() == (tmp_path / "2" / "t.pt").read_bytes()
    assert torch.load(str(tmp_path / "2" / "t.pt")) == payload


def test_upload(workdir, hub, monkeypatch):
    monkeypatch.delenv("HF_USER", raising=False)
    with pytest.raises(FlagError, match="--hf-user"):  # checked before any work
        run_core(workdir / "out", "--eval-bundle", str(workdir / "bundle"), "--num-workers", "1")
    assert not os.path.exists(workdir / "out" / "ds" / "core_eval")
    run_core(workdir / "out", "--eval-bundle", str(workdir / "bundle"), "--num-workers", "1", "--hf-user", "me")
    assert sorted(repo_files(hub, "me/ds")) == [f"core_eval/{n}" for n in (
        "config.json", "lm.pt", "manifest.json", "mc.pt", "sch.pt")]
    assert repo_files(hub, "me/ds") == published_files(workdir / "out" / "ds")


# ---------------------------------------------------------------- downloading the bundle


def bundle_zip(bundle_dir) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for root, _, names in os.walk(bundle_dir):
            for name in sorted(names):
                path = os.path.join(root, name)
                z.write(path, os.path.join("eval_bundle", os.path.relpath(path, bundle_dir)))
    return buf.getvalue()


def test_download_retries_faults_then_extracts(workdir, file_server, tok):
    (workdir / "served" / "eval_bundle.zip").write_bytes(bundle_zip(workdir / "bundle"))
    file_server.faults["/eval_bundle.zip"] = ["500", "drop", "truncate"]
    out = workdir / "dl"
    path = core_eval.fetch_bundle(f"{file_server.url}/eval_bundle.zip", str(out), backoff=0)
    assert path == str(out / "eval_bundle")
    assert file_server.requests.count("/eval_bundle.zip") == 4
    assert sorted(os.listdir(out)) == [".locks", "eval_bundle"]  # no zip, .part or temp folder left
    assert (out / "eval_bundle" / "eval_data" / "mc.jsonl").read_bytes() == (workdir / "bundle" / "eval_data" / "mc.jsonl").read_bytes()
    # once there, it is not downloaded again
    core_eval.fetch_bundle(f"{file_server.url}/eval_bundle.zip", str(out), backoff=0)
    assert file_server.requests.count("/eval_bundle.zip") == 4


def test_step_downloads_bundle_by_default(workdir, file_server, monkeypatch):
    (workdir / "served" / "eval_bundle.zip").write_bytes(bundle_zip(workdir / "bundle"))
    file_server.faults["/eval_bundle.zip"] = ["truncate"]
    monkeypatch.setattr("stacks_data.remote.http.time.sleep", lambda s: None)
    run_core(workdir / "out", "--eval-bundle-url", f"{file_server.url}/eval_bundle.zip", "--skip-upload",
             "--num-workers", "1")
    assert os.path.isfile(workdir / "out" / "eval_bundle" / "core.yaml")
    assert sorted(out_files(workdir / "out")) == ["config.json", "lm.pt", "manifest.json", "mc.pt", "sch.pt"]


def test_corrupt_zip_is_retried_then_rejected(workdir, file_server):
    data = bytearray(bundle_zip(workdir / "bundle"))
    at = data.find(b"Capital of France")  # inside a stored member: the CRC no longer matches
    data[at] ^= 0xFF
    (workdir / "served" / "eval_bundle.zip").write_bytes(bytes(data))
    out = workdir / "dl"
    with pytest.raises(NetworkError, match="3 attempts"):
        core_eval.fetch_bundle(f"{file_server.url}/eval_bundle.zip", str(out), retries=2, backoff=0)
    assert file_server.requests.count("/eval_bundle.zip") == 3
    assert os.listdir(out) == [".locks"]  # nothing half-done under any name


def test_failed_extraction_leaves_no_bundle(workdir, file_server, monkeypatch):
    (workdir / "served" / "eval_bundle.zip").write_bytes(bundle_zip(workdir / "bundle"))
    real_extractall = zipfile.ZipFile.extractall

    def crash(self, path, *args, **kwargs):
        self.extract(self.namelist()[0], path)  # part of the bundle is on disk, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", crash)
    out = workdir / "dl"
    with pytest.raises(OSError, match="No space left"):
        core_eval.fetch_bundle(f"{file_server.url}/eval_bundle.zip", str(out), backoff=0)
    assert sorted(os.listdir(out)) == [".locks", "eval_bundle.zip"]  # the checked zip is kept, no partial folder
    monkeypatch.setattr(zipfile.ZipFile, "extractall", real_extractall)
    core_eval.fetch_bundle(f"{file_server.url}/eval_bundle.zip", str(out), backoff=0)
    assert file_server.requests.count("/eval_bundle.zip") == 1  # reused the kept zip
    assert len(core_eval.load_bundle(str(out / "eval_bundle"))) == 3

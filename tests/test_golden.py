"""Golden bytes: every file that the four steps write on a small fixture hashes to what it hashed before the
package was restructured (issue 18). A change that only moves code must not move a byte.

The inputs are named by relative paths (the run's cwd is the fixture's folder), so that config.json and the
report, which say where the inputs came from, are the same in every temporary folder. One hash moved on
purpose since: step 1's progress file (.pretokenize.json, not an output) records the tokenizer's files
(issue 19: a rerun checks them before reusing them), and is written compact (issue 22: json's C encoder,
off the main thread's per-shard cost)."""

import hashlib
import json
import os
import re

import test_chat_eval
import test_core_eval
import test_sft
from fixtures import write_corpus
from stacks_data.cli import run_step

GOLDEN = json.loads("""
{
    ".lock.chat-eval": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ".lock.core-eval": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ".lock.pretrain": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ".lock.sft": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ".lock.tokenizer": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ".pretokenize.json": "e2f7851d62addcc6b6a0a04cf8dece6d902dca0a700f65497f4c542aa4c724d6",
    "chat_eval/ARC-Challenge.pt": "1503d3c9450e779a1ef7117ecdafd30f0624cd803d4c68391749f7dad7811ada",
    "chat_eval/ARC-Easy.pt": "7ffe163e7fadd45e93e215ba82d4721618b3b3e24ce0b97defa2e01071d430b3",
    "chat_eval/MMLU.pt": "97dd7be3201ae2e44f57ac113972004e702fe4923f89f0d05e2ad5f6f5b87b86",
    "chat_eval/config.json": "6beb3cf373329e815272ba6f99022bdcbfd09e1d03860b09fb31884625bc54c7",
    "chat_eval/manifest.json": "0bba4d61762599f1c6fc8ed44c33b867ece4020adc1e5fdb9c79173edaf60274",
    "config.json": "9934584a04285d17f40ed0aa723a58171253f4897687b1558e93521b90ce476e",
    "core_eval/config.json": "cea947b610171088d6c9cd1a2d21c3d6f2b727dc0d8a76485fc480deeeaa0455",
    "core_eval/lm.pt": "a86f2ba08d6fb8186ce4e60419d6485bf5ba37d09c90246c5071fb4ed067dee0",
    "core_eval/manifest.json": "34d35ccb102309955c6678100f2a06858c79535cb6e68eecf3afff8ee42fd39d",
    "core_eval/mc.pt": "4b0c17547391db041046a4e4211a24d00e4d515522a20b3b45a21c69f378351b",
    "core_eval/sch.pt": "e5d51294b93e5d1a9dabc683fd1291f91acf9453751eee7b954b8370ff6fa3d6",
    "manifest.json": "aff8023af04a96d6bdb8ca34378d2ed073075ee59bd7fbc890f7b776a5586d56",
    "sft/config.json": "31ad44cbc1891982736efac211fa78524cf2777342b427d9a73e207ebebdc951",
    "sft/manifest.json": "1475f44db379132921799d192fee4b6371da2493e064c3bee1eac612b205f0d1",
    "sft/sft_train_000000.bin": "c4406a350a340386bdcd9e88d60e89ce75217b27b2eb906e05f3af20423233ef",
    "sft/sft_train_000000_mask.bin": "8894b4299b90fd4b11a27d80a9bcec325cca633362421ab72a1fa01a59e7b0ef",
    "sft/sft_train_000001.bin": "3693101deef7b51a8d06063838084e8e244fe89088d2c48253328fe6f7bcd6b3",
    "sft/sft_train_000001_mask.bin": "2a6084d9fee7559ca018d2ed6f6f4fef3f041a2f506b2e60dbb45e7730f63d4b",
    "sft/sft_train_000002.bin": "4846dedaa8f18f5b28f199789299f429a17e693a5949e3d28df40b6caa1ebef0",
    "sft/sft_train_000002_mask.bin": "6747ff5a3a0f554915553bdf19c1df1f163e84588d8b892ca7af0191cfac1232",
    "sft/sft_train_000003.bin": "b2e764e1b9fbad2ad9c75ad9d000840e8f0c4e04672b8086cb03d274e957df3d",
    "sft/sft_train_000003_mask.bin": "68d7c78ac1483543a97aa48065cd926264af1b94ee2852762129988f75018c4e",
    "sft/sft_train_000004.bin": "d998c14a49f4a95a1d7a83678b6547b068f0a3c276869f43b79ef7882402aa19",
    "sft/sft_train_000004_mask.bin": "83c44f3e2f02c3f00e1c48409bd98b23e9dc639da7e63b2355b943d626ab2476",
    "sft/sft_train_000005.bin": "218133e92f9d600a279a359aa3b084f2a6e045ea3dcf5ce3503ff11bca039908",
    "sft/sft_train_000005_mask.bin": "5029e82af94076819bbbf0fd4655f8e2b216ab1640b6a46c85bee93bd800f830",
    "sft/sft_train_000006.bin": "5797c4081fcb15cfba74d10613f5d5124a85269901c444547ba6f9d6be8e6e4d",
    "sft/sft_train_000006_mask.bin": "0f7e8ce5c81efc72c58d25813789906c9f644de84abb86fe12d47a47465ce471",
    "sft/sft_train_000007.bin": "a14f2d560c6e0bc51df3f23b918342ff2597e056b4f499e348c688f946ed8283",
    "sft/sft_train_000007_mask.bin": "fb6d1b9142f43dab92504c2abc844e1eb27d23aca4792ef20144602b2ea35930",
    "sft/sft_train_000008.bin": "6e30f6074463eb3531da57f669e23ea9f5390d824cff5a4157408a67cfe93a14",
    "sft/sft_train_000008_mask.bin": "6089875edf5f3229e634649516a92b3dfceed9e9915f3b6beb8f3fd39f883f95",
    "sft/sft_train_000009.bin": "47ebc5810bb72243aefd6c27825213f647ce5c06bcc7b32d214a9e91c34d0d6d",
    "sft/sft_train_000009_mask.bin": "70a035e1e4ab0585618fdc2d2d66ea0e095b956d1904399cc771a08784290895",
    "sft/sft_train_000010.bin": "7d437446bd9c26dd36d7b7d2adc851fc8dcb35486c604c30267510cde9d67ca7",
    "sft/sft_train_000010_mask.bin": "89ac12fac09510295f98e64ac10288e65f20a2ae5cdf6a2f57b5ccaa4e14174e",
    "sft/sft_train_000011.bin": "e95ad4e500045b43764d8be15ee09d11de2e44a806bbd3a547608196272a38b8",
    "sft/sft_train_000011_mask.bin": "292525775953c10272fbad2ee6a3b161f9e5a5b60b40af992d2be291f1d6502e",
    "sft/sft_train_000012.bin": "3d3700fffb520e2c6c2dbc92d9753e96b0dafed1f608f7934258f1734e668dfa",
    "sft/sft_train_000012_mask.bin": "125ed08ef234051deef651cc3797be754bd6e14f641552b06d62118960f78b15",
    "sft/sft_train_000013.bin": "ef181c97608525d03debc58e5ba49a01c4a332db64f65bf7bd47f39d2cef73bd",
    "sft/sft_train_000013_mask.bin": "2dcce6d8040e7efc624be319da2aee08d660fc2d7e41af94e937415139ede903",
    "sft/sft_train_000014.bin": "062cde60ed67256f24953457127c6a8e63943278d0b574084840d042af1899a6",
    "sft/sft_train_000014_mask.bin": "fb2f17377f4d9edc297cb17af1b2d58ece455c904058182e2beb4fce9e728b2c",
    "sft/sft_train_000015.bin": "39523f314dc465f949385d80cdaec209cff766fd0bfa847ee02b0b8c04ed0a88",
    "sft/sft_train_000015_mask.bin": "f3651f06df2c9bf1a3a5435abd865b3d45d1ac6582a82540ccd7d1a5b7603d32",
    "sft/sft_val_000000.bin": "1248d97e134f3842fe33510a8cecbffb584dc65c8cd77337a2a6d940b7e1ff76",
    "sft/sft_val_000000_mask.bin": "69619f40364f893b8ab0698310de72f702a6b7110a2abba0b52ecbb1be230ee6",
    "sft/sft_val_000001.bin": "c0413f7578071f4d6c3f2d79f493c03d781877248bc9997dede089b0ceb657ef",
    "sft/sft_val_000001_mask.bin": "17da500332589c16ee2da6772a3e11bb6049ad78cd38e35dd3a4acc1e774b491",
    "sft/sft_val_000002.bin": "503dfb2935bb6cb8af234cdb9c9180963793105f6a5af35241daf853c2dfb08d",
    "sft/sft_val_000002_mask.bin": "f354bb04243e9a8b6eb393e7c333aa4906ceedbb393298a60e2da75cef4c2b1b",
    "tokenizer/token_bytes.pt": "38f5987435e86fc3d6d4ddfda4e2830bafe9e0d21ca2c883e9a66ae51c271a7e",
    "tokenizer/token_bytes_exact.pt": "36ec0d82c3992fe48beeb265409436c8aff606fd7da67f3a96fd1beee1435054",
    "tokenizer/tokenizer.pkl": "cfc2793ac7e81fc593ef62887850e4839ad7cc2ba3003a4b3af0d3e822bad043",
    "tokenizer/training.json": "c02c080bd40091c444da844a3a8b2aa0dfff75ea4ebd155e802547e5fcb5afc7",
    "tokenizer_comparison.md": "a94d5063302413df45ce5f615e40d5a979857513b582f3976046dff6060060dc",
    "tokenizer_report.png": "192b634017b3bd8b7e6fffa598c90404c497e06898b859f06098e6b8cf2d3566",
    "train_000000.bin": "05d8c14376044cbf4052d740ae73892112f7c1a23d1c474baad0cefa4f607394",
    "train_000001.bin": "d445ae6d2a83e8cea45b399a867fab8e5970bac28b905799028673a991baf742",
    "train_000002.bin": "b3747d90ed35971770c0f91d799be8c6a8acbe0c7a22023571d23ed88b10e8ee",
    "train_000003.bin": "fb88057f181b2d63869df5126465b60a14e48f0e622569841d8219e0a76df563",
    "train_000004.bin": "36423733f48b157100864d8242117083bd4d031f9ccf04138067a60594cb89a0",
    "train_000005.bin": "e2b2bc370a48cd8fee1349dbeb71f847a85924901c1d01dc532a58cd68868468",
    "train_000006.bin": "464a045ba6a7e4a037d3fe089807041d2b76e0faac1c5b396a2ef6c13c2af49e",
    "train_000007.bin": "4ac9498914838ada2ef4414f189782ae8d87aa46c69c4a37418a06da0d0297cb",
    "train_000008.bin": "9c5b02d675605fc12e6b0c8d07b04ec16eac32383a70ea976918c14e3f96faf1",
    "train_000009.bin": "ffbc8ff122580a762d08cc05db387b3123cf5ea9ef21e1ec9e3fc31b009f23c9",
    "train_000010.bin": "4f9f84556b673d6bf66575d9c8039386c2d327aecb046276ceb41bb5fec9059b",
    "train_000011.bin": "c0210de49b659d04a3e83e5577e3d145063ab79d63823adf9587f8bd57cd7a07",
    "train_000012.bin": "6134b7b9dde80929787348f6fb65d235b83c76906be23ebb42df9de05a9f045c",
    "train_000013.bin": "3db06b2aaf3a7923ddd6cd717063b706222563995e6ee39d181ad4678c98f847",
    "train_000014.bin": "09c7d487f8c6176a2a819b08de3f082e034fb916fe0ea7d04749d75c38a3c34e",
    "train_000015.bin": "648eb1d73465a333b3d1224a526051039a77a85580d78a2520967247db8ec4b1",
    "train_000016.bin": "06a404b616be2fe2e3c82c9374e32d2712032eceb73586411eff782c798c11b3",
    "val_000000.bin": "0f49aaaa4bbf08a13fbafd902f02226ceff8c1db597d723505b737df49319bdb",
    "val_000001.bin": "500b4e059dd4bca42c382cac654bce1d238083805f10507cdb25f2a0a48da359",
    "val_000002.bin": "514bbe590ef1fc1399416166aae40c4cdb734a571cdd010d20e763ff80468cff",
    "val_000003.bin": "dd4eb0d515816f10a984aec8abeb081d08de5e9f487703a84ec46dddfcfcb282",
    "val_000004.bin": "df1c100b5e2a288bdf1de47f7d41f10e0ca3c9567e97769f9ca959007c9320f6",
    "val_000005.bin": "14c67def4a89279886df2a7152602e037a37d70a997345f5e6d54de9047753a4",
    "val_000006.bin": "1cd3dec6844614eee9897d94b6afe274cbbfe4e79fb9b40f0cd8afec54f0d52e"
}
""")


def build(root):
    """out/ds made by all four steps from the inputs test_roundtrip uses, named relative to root."""
    write_corpus(root / "parquet", num_files=4, docs_per_file=60)
    (root / "baselines").mkdir()
    test_core_eval.write_bundle(root / "bundle", test_core_eval.BUNDLE_TASKS, test_core_eval.BUNDLE_FILES)
    test_sft.make_hub(str(root / "mirror"))
    test_chat_eval.make_hub(str(root / "mirror"))
    (root / "words.txt").write_text("\n".join(test_sft.WORDS))
    steps = {
        "pretrain": "--parquet-dir parquet --num-shards 4 --tok-train-shards 2 --vocab-size 320 --shard-size 1000 "
                    "--num-workers 1 --baselines-dir baselines",
        "core-eval": "--eval-bundle bundle --num-workers 1",
        "sft": "--hf-mirror mirror --words-file words.txt --simple-spelling-size 20 --spelling-bee-size 10 "
               "--shard-size 400 --identity-file words.txt --skip-invalid --num-workers 1",
        "chat-eval": "--hf-mirror mirror",
    }
    for step, flags in steps.items():
        run_step(step, flags.split() + ["--out-dir", "out", "--dataset-name", "ds", "--skip-upload"])
    return root / "out" / "ds"


def hashes(folder, root) -> dict:
    """{path in the folder: sha256} of every file in it, the hidden ones (locks, resume state) included.

    config.json says where the inputs were (absolute paths): `root` is read as <root> in every file, and the
    manifests' lines for a config.json carry the size and hash of the config so read."""
    contents = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            contents[os.path.relpath(path, folder).replace(os.sep, "/")] = \
                open(path, "rb").read().replace(str(root).encode(), b"<root>")

    def config_line(match):
        config = contents[match["path"].decode()]
        return b"%s%d%s%s" % (match[1], len(config), match[4], hashlib.sha256(config).hexdigest().encode())

    for path in [p for p in contents if p.endswith("manifest.json")]:
        contents[path] = re.sub(rb'("path": "(?P<path>[^"]*config\.json)",\s*"size": )(\d+)(,\s*"sha256": ")[0-9a-f]{64}',
                                config_line, contents[path])
    return {path: hashlib.sha256(data).hexdigest() for path, data in contents.items()}


def test_every_step_writes_the_golden_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = hashes(build(tmp_path), tmp_path)
    if os.environ.get("STACKS_DATA_GOLDEN_PRINT"):  # to see the table when an output format changes on purpose
        print(json.dumps(got, indent=4, sort_keys=True))
    assert got == GOLDEN

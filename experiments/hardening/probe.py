"""Every bad-input case of issue 32 (items 2, 3, 4, 5 and 7) tried once, each classified as ``clear`` (a clear
error naming the file or ids, or the defined result), ``silent`` (loads or runs and gives something wrong) or
``crash`` (a traceback, or a message that misleads).

    PYTHONPATH=<the tree to probe> python experiments/hardening/probe.py OUT.json

``results_before.json`` probed commit c0968dd (``git archive c0968dd``), ``results_after.json`` this tree. Uses
the tiny random teacher of the tests and two shared training files (``BERTAPPROX_SHARED``, default ../shared).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers only (the tiny teacher folder, trained_student)
from conftest import TRAIN, make_tiny_teacher_folder, trained_student  # noqa: E402

import bertapprox_hf  # noqa: E402
from bertapprox_hf import BertApproxModel  # noqa: E402
from bertapprox_hf.cli import main  # noqa: E402
from bertapprox_hf.pipeline.teacher import Teacher  # noqa: E402
from bertapprox_hf.pipeline.vocab_builder import VocabularyConfig, build_vocabulary  # noqa: E402

print("probing", bertapprox_hf.__file__, file=sys.stderr)
logging.disable(logging.NOTSET)
warnings.simplefilter("ignore")
ROOT = Path(tempfile.mkdtemp(prefix="probe-"))
TEACHER = make_tiny_teacher_folder(ROOT / "teacher")
teacher = Teacher.from_pretrained(str(TEACHER), device="cpu")
FILES = [str(TRAIN / f"{name}.jsonl") for name in ("msmarco_queries", "reuters21578_sentences")]
vocab = build_vocabulary(FILES, teacher, VocabularyConfig(min_count=2, max_words=200, max_ngrams=50, max_skipgrams=20,
                         dtype="float32"), show_progress_bar=False, max_per_source=150)  # fmt: skip
STUDENT = ROOT / "student"
trained_student(vocab).save_pretrained(STUDENT)
trained_student(vocab, noise=0.2).save_pretrained(ROOT / "other")
trained_student(vocab, pair_rank=4).save_pretrained(ROOT / "pairs")
results: list[dict] = []


def record(group, name, outcome, detail=""):
    results.append({"group": group, "case": name, "outcome": outcome, "detail": detail[:300]})
    print(f"{group:10s} {name:45s} {outcome:8s} {detail[:140]!r}", file=sys.stderr)


def expect_error(group, name, run, token):
    """clear: a ValueError/OSError naming ``token``; silent: no error; crash: anything else."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            run()
    except (ValueError, OSError) as error:
        text = str(error)
        record(group, name, "clear" if token in text else "crash", f"{type(error).__name__}: {text}")
    except Exception as error:
        record(group, name, "crash", f"{type(error).__name__}: {error}")
    else:
        record(group, name, "silent")


def cli(group, name, argv, token, expect_code=2):
    """clear: the expected exit code and (for 2) one error line naming ``token``; silent: 0 where 2 was due."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except BaseException as error:
        record(group, name, "crash", f"{type(error).__name__}: {error}")
        return
    lines = [line for line in err.getvalue().splitlines() if line.startswith("bertapprox: error:")]
    if expect_code == 0:
        record(group, name, "clear" if code == 0 else "crash", (lines or [""])[0])
    elif code == 0:
        record(group, name, "silent")
    else:
        ok = code == 2 and len(lines) == 1 and token in lines[0]
        record(group, name, "clear" if ok else "crash", (lines or [err.getvalue()[-200:]])[0])


def copy(name="student") -> Path:
    target = Path(tempfile.mkdtemp(dir=ROOT)) / name
    return Path(shutil.copytree(ROOT / name, target))


def edit_config(folder, key, value):
    config = json.loads((folder / "config.json").read_text())
    if value is None:
        config.pop(key)
    else:
        config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def lines(folder):
    return (folder / "vocab.txt").read_text().split("\n")[:-1]


def write_lines(folder, entries):
    (folder / "vocab.txt").write_text("\n".join(entries) + "\n")
    return folder


# --- item 2: damaged or mismatched model folders -------------------------------------------------------
load = BertApproxModel.from_pretrained
G = "folder"
for key, new in (("normalize", False), ("pair_rank", 4), ("context_layers", 1), ("pooling_rounds", 2),
                 ("entry_adapter_rank", 4)):  # fmt: skip
    expect_error(G, f"config {key} changed", lambda k=key, v=new: load(edit_config(copy(), k, v)), "config.json")
    expect_error(G, f"config {key} missing", lambda k=key: load(edit_config(copy(), k, None)), "config.json")


def other_weights(name):
    folder = copy()
    shutil.copy(ROOT / name / "model.safetensors", folder / "model.safetensors")
    return folder


expect_error(G, "another student's weights, same widths", lambda: load(other_weights("other")), "model.safetensors")
expect_error(G, "another architecture's weights (pairs)", lambda: load(other_weights("pairs")), "model.safetensors")


def vocab_edit(kind):
    folder = copy()
    entries = lines(folder)
    if kind == "edited":
        entries[7] = "not an entry"
    elif kind == "swapped":
        entries[5], entries[6] = entries[6], entries[5]
    elif kind == "permuted":
        entries = [entries[0]] + list(np.random.default_rng(0).permutation(entries[1:]))
    else:
        entries = entries[:2] + [f"other {i}" for i in range(len(entries) - 2)]
    return write_lines(folder, entries)


for kind in ("edited", "swapped", "permuted", "another student's"):
    expect_error(G, f"vocab.txt {kind}, same length", lambda k=kind: load(vocab_edit(k)), "vocab.txt")


def flipped():
    folder = copy()
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    return folder


expect_error(G, "flipped byte in a tensor", lambda: load(flipped()), "model.safetensors")


def nan_folder():
    model = trained_student(vocab)
    with torch.no_grad():
        model.rho[0].down.weight[0, 0] = float("nan")
    folder = Path(tempfile.mkdtemp(dir=ROOT)) / "nan"
    model.save_pretrained(folder)
    return folder


expect_error(G, "NaN in a weight", lambda: load(nan_folder()), "rho.0.down.weight")


def old_folder():
    folder = copy()
    with contextlib.suppress(FileNotFoundError):
        os.remove(folder / "integrity.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(folder)
    ours = [w for w in caught if "integrity.json" in str(w.message)]
    return len(ours)


try:
    count = old_folder()
    record(G, "old folder without a record (loads, 1 warning)", "clear" if count == 1 else "silent", f"{count}")
except Exception as error:
    record(G, "old folder without a record (loads, 1 warning)", "crash", str(error))

# --- item 3 (decode) ----------------------------------------------------------------------------------
tokenizer = vocab.tokenizer()
for ids in ([len(vocab)], [-1], [2, 10**9]):
    expect_error("decode", f"decode {ids}", lambda i=ids: tokenizer.decode(i), "[0, ")

# --- item 4: the command line on bad input ------------------------------------------------------------
G = "cli"
dirty = ROOT / "dirty.jsonl"
good = [{"id": f"d{i}", "text": f"the bank raised its rate {i}"} for i in range(6)]
bad = [{"id": "n1", "text": None}, {"id": "n2", "text": 42}, {"id": "s1", "text": "x \ud800 y"}]
dirty.write_text("".join(json.dumps(r) + "\n" for r in good[:3] + bad + good[3:]))
cli(G, "targets build: text null/int, lone surrogate",
    ["targets", "build", "--corpus", str(dirty), "--teacher", str(TEACHER), "--out", str(ROOT / "t1"),
     "--device", "cpu"], "", expect_code=0)  # fmt: skip
cli(G, "vocab build: text null/int, lone surrogate",
    ["vocab", "build", "--corpus", str(dirty), "--teacher", str(TEACHER), "--out", str(ROOT / "v1"),
     "--min-count", "1", "--device", "cpu"], "", expect_code=0)  # fmt: skip
cli(
    G,
    "index: text null/int, lone surrogate",
    ["index", "--model", str(STUDENT), "--corpus", str(dirty), "--out", str(ROOT / "i1")],
    "",
    expect_code=0,
)

from bertapprox_hf.pipeline.targets import build_targets, load_targets  # noqa: E402

corpus = ROOT / "corpus.jsonl"
corpus.write_text("".join(json.dumps(r) + "\n" for r in good * 3))
build_targets(str(corpus), teacher, str(ROOT / "t2"), shard_size=5, show_progress_bar=False)
shard = ROOT / "t2" / "shard_00001.parquet"
shard.write_bytes(shard.read_bytes()[:-40])
expect_error(G, "truncated shard: load names it", lambda: len(load_targets(str(ROOT / "t2"))), "shard_00001")
cli(G, "truncated shard: targets build repairs it",
    ["targets", "build", "--corpus", str(corpus), "--teacher", str(TEACHER), "--out", str(ROOT / "t2"),
     "--shard-size", "5", "--device", "cpu"], "", expect_code=0)  # fmt: skip
try:
    n = len(load_targets(str(ROOT / "t2")))
    record(G, "truncated shard: loads after the repair", "clear" if n == 18 else "silent", str(n))
except Exception as error:
    record(G, "truncated shard: loads after the repair", "crash", str(error))

noconfig = copy()
os.remove(noconfig / "config.json")
cli(G, "model folder without config.json", ["encode", "--model", str(noconfig), "x"], "config.json")
loop = ROOT / "loop"
os.symlink(loop, loop)
cli(G, "model path is a symlink loop", ["encode", "--model", str(loop), "x"], "symbolic link")
latin = copy()
(latin / "vocab.txt").write_bytes((latin / "vocab.txt").read_bytes().replace(b"the", b"th\xe9", 1))
cli(G, "vocab.txt not UTF-8", ["encode", "--model", str(latin), "x"], "vocab.txt")
cli(G, "index a corpus file that is missing", ["index", "--model", str(STUDENT), "--corpus", str(ROOT / "nope.jsonl"),
    "--out", str(ROOT / "i0")], "nope.jsonl")  # fmt: skip

# --- item 5: ids ----------------------------------------------------------------------------------------
G = "ids"
dup = ROOT / "dup.jsonl"
dup.write_text("".join(json.dumps(r) + "\n" for r in good + [good[1], good[4]]))
cli(G, "index: duplicate document ids", ["index", "--model", str(STUDENT), "--corpus", str(dup), "--out",
    str(ROOT / "i2")], "'d1'")  # fmt: skip
unique = ROOT / "unique.jsonl"
unique.write_text("".join(json.dumps(r) + "\n" for r in good))
main(["index", "--model", str(STUDENT), "--corpus", str(unique), "--out", str(ROOT / "i3")])
queries = ROOT / "queries.tsv"
queries.write_text("q1\tbank rate\nq2\tinterest\nq1\tsomething else\n")
for output in ("run.trec", "run.json"):
    cli(G, f"search: duplicate query ids ({output})", ["search", "--index", str(ROOT / "i3"), "--queries",
        str(queries), "--output", str(ROOT / output)], "'q1'")  # fmt: skip
latin_queries = ROOT / "latin.tsv"
latin_queries.write_bytes("q1\tcaf\xe9\n".encode("latin-1"))
cli("cli", "queries file not UTF-8", ["search", "--index", str(ROOT / "i3"), "--queries", str(latin_queries),
    "--output", str(ROOT / "r.trec")], "latin.tsv")  # fmt: skip

# --- item 7: teacher window count and the metrics log of a resumed run --------------------------------
G = "window"
from bertapprox_hf.model.tokenization_bertapprox import BagEncoder  # noqa: E402

hf = teacher.tokenizer
special = set(hf.all_special_tokens)
pieces = [t for t, _ in sorted(hf.get_vocab().items(), key=lambda kv: kv[1]) if t not in special]
encoder = BagEncoder(["[PAD]", "[UNK]", *pieces], "[UNK]", special_tokens={"[PAD]", "[UNK]"}, teacher_window=64,
                     wordpiece_entries=len(pieces))  # fmt: skip
texts = ["hello [CLS] world", "a [SEP] b", "the [PAD] [PAD] rate", "[MASK] bank", "[CLS]abc[SEP]", "x [UNK] y"]
texts += [f"a{chr(cp)}b {chr(cp)}" for cp in (0x2B820, 0x2B850, 0x2B8FF, 0x2B91F)]
for text in texts:
    ours, theirs = encoder.teacher_token_count(text), len(hf(text)["input_ids"])
    record(G, f"count {text!r}", "clear" if ours == theirs else "silent", f"{ours} vs teacher {theirs}")

from bertapprox_hf.training import Trainer, load_config  # noqa: E402

vocab.save(str(ROOT / "vocab"))
build_targets(FILES, teacher, str(ROOT / "targets"), shard_size=256, show_progress_bar=False, max_per_source=150)


def config(out):
    return load_config(None, [f"data.vocab={ROOT / 'vocab'}", f"data.targets={ROOT / 'targets'}",
                              "data.val_fraction=0.1", f"run.output_dir={out}", "run.device=cpu", "run.log_every=2",
                              "model.num_heads=4", "model.intermediate_size=64", "optim.batch_size=32",
                              "optim.max_steps=12", "run.checkpoint_every=5", "eval.every_steps=6"])  # fmt: skip


with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    Trainer(config(ROOT / "run")).train(stop_after=7)
    resumed = Trainer(config(ROOT / "run"))
    resumed.resume()
    resumed.train()
log = [(r["event"], r["step"]) for r in map(json.loads, (ROOT / "run" / "metrics.jsonl").read_text().splitlines())]
record("training", "metrics.jsonl after a resume", "clear" if len(log) == len(set(log)) else "silent",
       f"{len(log) - len(set(log))} duplicate records")  # fmt: skip

Path(sys.argv[1]).write_text(json.dumps(results, indent=1))
shutil.rmtree(ROOT, ignore_errors=True)

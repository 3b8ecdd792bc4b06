"""scripts/gpu_session.sh end to end on this CPU: a tiny bundle, every step a lent GPU would run, in about a minute.

A GPU is lent for minutes, so the script must work the first time: this runs it with a tiny teacher and a few
hundred real texts (the bundle path, crops, the contextual table, two variants side by side, the packing).
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

from .conftest import DATA, REPO, load_script, make_tiny_teacher_folder

TEXTS_PER_FILE = 120


@pytest.fixture(scope="module")
def gpu_bundle():
    return load_script("gpu_bundle")


def test_the_gpu_session_runs_end_to_end_on_a_tiny_bundle(gpu_bundle, shared_data, tmp_path):
    data = tmp_path / "data"
    for name in gpu_bundle.CORPUS_FILES:  # the first texts of each real corpus file
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        with open(DATA / name, encoding="utf-8") as source:
            (data / name).write_text("".join(next(source) for _ in range(TEXTS_PER_FILE)))
    teacher = make_tiny_teacher_folder(tmp_path / "all-MiniLM-L6-v2")  # the name the recipes' folders use
    gpu_bundle.pack(str(teacher), str(data), str(tmp_path / "bundle"))

    out, work = tmp_path / "out", tmp_path / "work"
    settings = {
        "BUNDLE": str(tmp_path / "bundle"),
        "OUT": str(out),
        "WORK": str(work),
        "PER_SOURCE": "60",
        "MORE_PER_SOURCE": "30",
        "CONTEXTUAL": "1",
        "CONTEXT_TEXTS": "300",  # a sample of the 630 training texts
        "CROPS": "2",
        "CONFIG": "configs/minilm-full-contextual.yaml",
        "VARIANTS": "pairs:model.pair_rank=16 ctx:model.context_layers=1,model.pair_rank=16",
        "COMMON": "optim.batch_size=16 model.intermediate_size=64 data.max_val=40 data.tokenize_workers=1",
        "TRAIN_SECONDS": "30",
        "CALIBRATION_STEPS": "20",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(["bash", "scripts/gpu_session.sh"], cwd=REPO, env={**os.environ, **settings},
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    timeline = (out / "timeline.txt").read_text()
    assert result.returncode == 0, timeline + result.stdout[-3000:] + result.stderr[-3000:]
    assert "targets 420,targets-more 210,targets-rest 210,targets-crops" in timeline
    assert '"entries_seen"' in timeline, "the contextual table was built"
    table = json.loads((work / "vocab-contextual-full-all-MiniLM-L6-v2" / "vocabulary.json").read_text())["table"]
    assert table["texts"] == 300, "the table reads a sample of CONTEXT_TEXTS training texts"
    for variant in ("pairs", "ctx"):
        assert f"{variant}: " in timeline and "'spearman_passage'" in timeline.split(f"{variant}: ")[1]
        assert (out / variant / "weights.safetensors").is_file(), "each student comes back as its trainable weights"
    trained = json.loads((work / "run-ctx" / "best" / "training.json").read_text())["config"]
    assert trained["data"]["targets"][-1] == str(work / "targets-crops-all-MiniLM-L6-v2")
    assert trained["data"]["vocab"] == str(work / "vocab-contextual-full-all-MiniLM-L6-v2")
    assert trained["model"]["context_layers"] == 1 and trained["model"]["pair_rank"] == 16
    with tarfile.open(out / "session.tar.gz") as archive:
        names = archive.getnames()
    assert {"run-ctx/report.json", "run-pairs/metrics.jsonl", "timeline.txt"} <= {n.removeprefix("./") for n in names}

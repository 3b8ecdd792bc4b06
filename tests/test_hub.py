"""Model cards, the Hub folder (``bertapprox push``), and loading it by Hub id with transformers and ST."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bertapprox_hf.cli import main
from bertapprox_hf.hub.model_card import render_model_card, write_model_card

from .conftest import offline_hub_cache, trained_student

RESULTS = Path(__file__).parent / "data" / "results_minilm.json"
REPO_ID = "bertapprox-test/tiny-student"
TEXTS = ["What is the interest rate of the bank?", "new york city", "", "😀 Привет", "oil prices rose " * 200]


@pytest.fixture(scope="module")
def student(tiny_vocab, tmp_path_factory):
    """A small student saved the way training saves it: with training.json, and report.json in the run folder."""
    model = trained_student(tiny_vocab)
    run = tmp_path_factory.mktemp("run")
    model.save_pretrained(run / "best")
    metrics = {"count_all": 120, "cosine_all": 0.8123, "spearman_all": 0.7011, "count_query": 50, "cosine_query": 0.83}
    config = {
        "data": {"vocab": str(run / "no-vocab-here"), "targets": [str(run / "no-targets-here")], "val_fraction": 0.03},
        "optim": {"epochs": 8.0, "batch_size": 128, "lr": 0.002, "warmup_ratio": 0.05, "weight_decay": 0.01},
        "loss": {"mse": 1.0, "cosine": 1.0, "relational": 0.0, "temperature": 0.05},
    }
    (run / "best" / "training.json").write_text(json.dumps({"step": 500, "metrics": metrics, "config": config}))
    report = {"train_seconds": 61.5, "steps": 600, "best_step": 500, "trainable_parameters": 1, "best": metrics}
    (run / "report.json").write_text(json.dumps({**report, "processes": 1, "mixed_precision": "no"}))
    return model, run / "best"


def test_save_pretrained_writes_sentence_transformers_files(student, tiny_vocab, tmp_path):
    from sentence_transformers import SentenceTransformer

    model, folder = student
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.base.modules.transformer.Transformer"]
    st_config = json.loads((folder / "sentence_bert_config.json").read_text())
    assert st_config["modality_config"]["text"]["method_output_name"] == "pooler_output"
    assert st_config["processing_kwargs"]["text"]["max_length"] == model.config.max_bag_size
    assert json.loads((folder / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == (
        model.config.similarity
    )
    # φ narrower than the embedding: sentence-transformers must report the embedding size, not hidden_size
    narrow = trained_student(tiny_vocab, hidden_size=16)
    narrow.save_pretrained(tmp_path / "narrow")
    st = SentenceTransformer(str(tmp_path / "narrow"), trust_remote_code=True, device="cpu")
    assert st.get_embedding_dimension() == narrow.config.output_dim != narrow.config.hidden_size
    np.testing.assert_allclose(st.encode(TEXTS), narrow.encode(TEXTS), atol=1e-6)


def test_card_metadata_and_numbers_come_from_results(student, tmp_path):
    from huggingface_hub import ModelCard

    _, folder = student
    results = json.loads(RESULTS.read_text())
    text = write_model_card(
        tmp_path / "README.md", folder, repo_id=REPO_ID, results=RESULTS, base_model="org/teacher", license="mit"
    )
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "sentence-transformers"
    assert data["pipeline_tag"] == "sentence-similarity"
    assert data["base_model"] == "org/teacher" and data["license"] == "mit"
    assert {"sentence-transformers", "bertapprox", "feature-extraction"} <= set(data["tags"])
    # model-index: every metric of every "student" row, value for value
    found = {(r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    expected = {}
    names = {"scifact": "BEIR SciFact", "dl19": "TREC DL 2019 passage (judged pool)"}
    metrics = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100", "recall@1000": "Recall@1000"}
    for row in results["retrieval"]:
        if row["system"] == "student":
            expected.update({(names[row["dataset"]], name): row[key] for key, name in metrics.items()})
    sts = next(r for r in results["sts"] if r["system"] == "student")
    expected.update({("STS Benchmark", "Spearman"): sts["spearman"], ("STS Benchmark", "Pearson"): sts["pearson"]})
    assert found == expected  # and no timing or pct_teacher field slipped in as a metric
    assert {r.dataset_type for r in card.data.eval_results} == {
        "BeIR/scifact",
        "microsoft/ms_marco",
        "sentence-transformers/stsb",
    }
    # body: % of teacher, the speed ratio and its machine, the training record, the usage snippets
    assert "79.5% of the teacher's nDCG@10 on scifact (93.2% with teacher-encoded documents)" in text
    assert "| stsb | this model | 0.7412 | 0.7466 | 90.4% |" in text
    assert "61.8× the teacher on queries" in text and "cpu: AMD EPYC 7R13 Processor; cores: 2" in text
    assert "| BM25 | 10.4× | not measured | retrieval runs" in text and "/work/shared" not in text
    assert "| all | 120 | 0.8123 | 0.7011 |" in text and "8.0 epochs, batch 128" in text
    assert "loss: mse × 1.0, cosine × 1.0." in text
    assert f'AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True)' in text
    assert "word order" in text.lower() and "domain shift" in text


def test_card_tolerates_missing_parts(student, tmp_path):
    from huggingface_hub import ModelCard

    _, folder = student
    partial = {"run": "partial", "retrieval": [{"dataset": "scifact", "system": "student", "ndcg@10": 0.5}]}
    broken = {"speed": {"error": "out of memory"}, "sts": "garbage", "retrieval": [1, None, {"dataset": 3}]}
    for results in (None, {}, partial, broken, {"speed": {"speedup": {}}, "settings": [1]}):
        text = render_model_card(folder, results=results, training_report={})
        card = ModelCard(text)
        assert "not measured" in text
        assert card.data.library_name == "sentence-transformers"
    assert "the speed benchmark failed: out of memory" in render_model_card(folder, results=broken)
    # the shape without per-system speedups: speed.speedup, with the machine inside speed
    speed = {"speed": {"speedup": {"student": {"queries": 50.0}}, "machine": {"cpu": "Some CPU"}}}
    text = render_model_card(folder, results=speed)
    assert "50.0× the teacher on queries" in text and "| this model | 50.0× |" in text and "cpu: Some CPU" in text
    text = render_model_card(folder, results=partial)
    assert "| scifact | this model | 0.5000 | not measured |" in text  # no teacher row: no ratio
    assert [r.metric_value for r in ModelCard(text).data.eval_results] == [0.5]
    with pytest.raises(FileNotFoundError, match="benchmark results not found"):
        render_model_card(folder, results=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        render_model_card(folder, results=tmp_path / "bad.json")


# Runs in a fresh interpreter where bertapprox_hf cannot be imported: only the remote code in the folder runs.
# Loads the repository by its Hub id (from an offline Hub cache) and by local path, with transformers and
# sentence-transformers, and runs the model card's two usage snippets as written.
LOADER = textwrap.dedent(
    """
    import json, sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "bertapprox_hf":
                raise ImportError("bertapprox_hf must not be imported here")
    sys.meta_path.insert(0, Block())
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer
    repo_id, folder, texts, snippets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    out = {}
    for name in (repo_id, folder):
        model = AutoModel.from_pretrained(name, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=True)
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        st = SentenceTransformer(name, trust_remote_code=True, device="cpu")
        out[name] = {
            "forward": model(**batch).pooler_output.tolist(), "encode": model.encode(texts).tolist(),
            "st": st.encode(texts).tolist(), "st_dim": st.get_embedding_dimension(),
            "st_similarity": st.similarity_fn_name, "module": type(model).__module__,
        }
    for i, snippet in enumerate(snippets):
        scope = {}
        exec(snippet, scope)
        out[f"snippet{i}"] = scope["embeddings"].tolist()
    print(json.dumps(out))
    """
)


def test_dry_run_folder_loads_by_hub_id_with_transformers_and_sentence_transformers(
    student, tmp_path, capsys, monkeypatch
):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("--dry-run must not call the Hub")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "create_repo", no_network)
    monkeypatch.setattr(huggingface_hub, "upload_folder", no_network)
    model, folder = student
    out = tmp_path / "hub"
    args = ["push", "--model", str(folder), "--repo-id", REPO_ID, "--results", str(RESULTS), "--out", str(out)]
    assert main(args + ["--base-model", "sentence-transformers/all-MiniLM-L6-v2", "--dry-run"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["dry_run"] and listing["folder"] == str(out)
    sizes = {f["path"]: f["bytes"] for f in listing["files"]}
    assert sizes == {p.name: p.stat().st_size for p in out.iterdir()}
    assert listing["total_bytes"] == sum(sizes.values())
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "configuration_bertapprox.py",
        "modeling_bertapprox.py",
        "tokenization_bertapprox.py",
        "text_normalization.py",
        "training.json",
        "results.json",
    } <= set(sizes)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_bertapprox.BertApproxModel"
    assert config["teacher"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "is_local" not in json.loads((out / "tokenizer_config.json").read_text())
    assert main(args + ["--dry-run"]) == 2  # the folder is not empty now
    assert "--overwrite" in capsys.readouterr().err

    snippets = re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S)
    assert len(snippets) == 3 and all(REPO_ID in s for s in snippets)
    scope = {}  # the Encoder snippet needs bertapprox_hf: run it here, on the folder
    exec(snippets[2].replace(f'"{REPO_ID}"', repr(str(out))), scope)
    sample = ["what is the interest rate of the bank?", "new york city"]
    np.testing.assert_allclose(scope["embeddings"], model.encode(sample), atol=0.02)  # int8
    snippets = snippets[:2]
    cache = offline_hub_cache(out, tmp_path / "hf-cache", REPO_ID)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": ""}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    command = [sys.executable, "-c", LOADER, REPO_ID, str(out), json.dumps(TEXTS), json.dumps(snippets)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    expected = model.encode(TEXTS)
    for name in (REPO_ID, str(out)):
        assert not loaded[name]["module"].startswith("bertapprox_hf")
        for key in ("forward", "encode", "st"):
            np.testing.assert_allclose(np.array(loaded[name][key]), expected, atol=1e-6, err_msg=f"{name} {key}")
        assert loaded[name]["st_dim"] == model.config.output_dim
        assert loaded[name]["st_similarity"] == model.config.similarity
    for key in ("snippet0", "snippet1"):
        np.testing.assert_allclose(np.array(loaded[key]), model.encode(sample), atol=1e-6)


def test_push_creates_the_repo_and_uploads_the_folder(student, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def upload_folder(**kwargs):
        calls["upload_folder"] = {**kwargs, "files": sorted(os.listdir(kwargs["folder_path"]))}
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc",
            commit_message="m",
            commit_description="",
            oid="abc",
        )

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    _, folder = student
    assert main(["push", "--model", str(folder), "--repo-id", REPO_ID, "--private"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert calls["create_repo"] == (REPO_ID, {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload_folder"]["repo_id"] == REPO_ID
    assert {"README.md", "model.safetensors", "modules.json"} <= set(calls["upload_folder"]["files"])
    assert summary["commit"].endswith("/commit/abc") and not summary["dry_run"]
    assert not os.path.exists(summary["folder"])  # the temporary folder is gone


def test_push_bad_input_gives_clear_errors(student, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    _, folder = student
    assert main(["push", "--model", str(tmp_path / "missing"), "--repo-id", REPO_ID, "--dry-run"]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert main(["push", "--model", str(folder), "--repo-id", "no-owner", "--dry-run"]) == 2
    assert "owner/name" in capsys.readouterr().err
    assert main(["push", "--model", str(folder), "--repo-id", "owner/bad name!", "--dry-run"]) == 2
    assert "invalid repo id" in capsys.readouterr().err
    args = ["push", "--model", str(folder), "--repo-id", REPO_ID, "--dry-run", "--results", str(tmp_path / "x.json")]
    assert main(args) == 2
    assert "benchmark results not found" in capsys.readouterr().err

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "create_repo", offline)
    assert main(["push", "--model", str(folder), "--repo-id", REPO_ID]) == 2
    assert "upload to the Hub repository bertapprox-test/tiny-student failed" in capsys.readouterr().err


def test_card_names_further_pooling_rounds_and_context_blocks():
    from bertapprox_hf.hub.model_card.sections import render_details

    config = {"num_heads": 8, "entry_bias": True, "pooling_rounds": 1}
    assert "rounds" not in render_details({"config": config, "parameters": {}, "report": {}})
    two = render_details({"config": {**config, "pooling_rounds": 2}, "parameters": {}, "report": {}})
    assert "8 heads with learned queries and a learned per-entry score; 2 rounds" in two
    assert "| 0 residual MLP block(s) on each entry" in two
    blocks = {**config, "context_layers": 1, "intermediate_size": 1024, "context_intermediate_size": 256}
    card = render_details({"config": blocks, "parameters": {}, "report": {}})
    assert "1 residual MLP block(s) on each entry's φ plus its text's pooled vector, inner 256" in card


def test_card_says_what_the_entry_table_holds():
    from bertapprox_hf.hub.model_card.sections import render_details

    config = {"vocab_size": 100, "embedding_dim": 768, "num_heads": 8}
    plain = render_details({"config": config, "parameters": {}, "report": {}})
    assert "from the teacher: each entry's embedding read alone" in plain
    vocabulary = {"table": {"kind": "contextual+isolated", "texts": 92278}}
    both = render_details({"config": config, "parameters": {}, "report": {}, "vocabulary": vocabulary})
    assert "the mean of the teacher's states of its tokens in 92,278 training texts, beside its embedding" in both

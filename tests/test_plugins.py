"""Plugins: the built-in indexers, failures recorded by name, and a real third-party plugin package
installed with pip (entry-point group ``bertapprox.plugins``) next to a broken one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("pluggy")

from bertapprox_hf import hookimpl  # noqa: E402
from bertapprox_hf.plugins import PluginManager  # noqa: E402
from indexers.base import Indexer  # noqa: E402
from indexers.faiss_indexer import FaissIndexer  # noqa: E402
from indexers.faiss_shards import ShardedFaissIndexer  # noqa: E402
from indexers.pyserini_indexer import PyseriniIndexer  # noqa: E402

DIST = "bertapprox-test-plugin"
GOOD, BROKEN = "bertapprox-test-demo", "bertapprox-test-broken"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "0.0.1"

[project.entry-points."bertapprox.plugins"]
{GOOD} = "bertapprox_test_plugin.plugin"
{BROKEN} = "bertapprox_test_broken"

[tool.setuptools]
packages = ["bertapprox_test_plugin", "bertapprox_test_broken"]
"""

PLUGIN = '''
"""A third-party bertapprox plugin: a brute-force numpy indexer and one benchmark."""

import json
import os

import numpy as np

from indexers.base import Indexer, SearchResults
from bertapprox_hf import hookimpl

CALLS = []


class MemoryIndexer(Indexer):
    name = "test-memory"

    def __init__(self, dim, similarity="dot", ids=None, rows=None):
        self.dim, self.similarity, self.meta = dim, similarity, {}
        self.ids = list(ids or [])
        self.rows = np.zeros((0, dim), np.float32) if rows is None else rows

    @classmethod
    def create(cls, dim, similarity="dot", **options):
        return cls(dim, similarity)

    def add(self, ids, embeddings):
        rows = np.asarray(embeddings, np.float32)
        if self.similarity == "cosine":
            rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        self.rows = np.concatenate([self.rows, rows])
        self.ids.extend(ids)

    def __len__(self):
        return len(self.ids)

    def save(self, path):
        os.makedirs(path, exist_ok=True)
        np.save(os.path.join(path, "rows.npy"), self.rows)
        with open(os.path.join(path, "ids.json"), "w") as handle:
            json.dump(self.ids, handle)
        self.write_meta(path)

    @classmethod
    def load(cls, path, **options):
        with open(os.path.join(path, "meta.json")) as handle:
            meta = json.load(handle)
        with open(os.path.join(path, "ids.json")) as handle:
            ids = json.load(handle)
        return cls(meta["dim"], meta["similarity"], ids, np.load(os.path.join(path, "rows.npy")))

    def search_embeddings(self, embeddings, k):
        scores = embeddings @ self.rows.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids = [[self.ids[i] for i in row] for row in order]
        return SearchResults(ids, [scores[n, row].tolist() for n, row in enumerate(order)])


@hookimpl
def bertapprox_indexers():
    CALLS.append("indexers")
    return {"test-memory": MemoryIndexer}


@hookimpl
def bertapprox_benchmark_datasets():
    CALLS.append("datasets")
    return {"test-bench": "a benchmark that only echoes its settings"}


@hookimpl
def bertapprox_run_benchmark(name, model, options):
    CALLS.append(("run", name))
    if name != "test-bench":
        return None
    return {"benchmark": name, "model": str(model), "k": options.get("k", 10)}
'''

BROKEN_MODULE = 'raise ImportError("bertapprox_test_broken needs the module nowhere_to_be_found")\n'


class Letters:
    """A toy encoder: letter counts, 26-d."""

    dim = 26
    similarity = "cosine"

    def encode(self, texts, batch_size=64):
        rows = np.zeros((len(texts), 26), np.float32)
        for row, text in enumerate(texts):
            for char in text.lower():
                if "a" <= char <= "z":
                    rows[row, ord(char) - 97] += 1
        return rows + 1e-3


# --- built-ins and failure records ----------------------------------------------------------------------
def test_builtin_indexers():
    manager = PluginManager(entry_points=False)
    builtin = {"faiss": FaissIndexer, "faiss-shards": ShardedFaissIndexer, "pyserini": PyseriniIndexer}
    assert manager.indexers() == builtin
    assert manager.get_indexer("faiss") is FaissIndexer and manager.failures == []
    report = manager.format_report()
    assert "faiss  (built-in)\n  indexers: faiss" in report and "pyserini  (built-in)" in report
    with pytest.raises(ValueError, match="no indexer named 'annoy'; available: faiss, faiss-shards, pyserini"):
        manager.get_indexer("annoy")


def test_a_failing_plugin_is_recorded_by_name_and_the_others_still_work():
    class Raises:
        @hookimpl
        def bertapprox_indexers(self):
            raise RuntimeError("boom")

    class NotAClass:
        @hookimpl
        def bertapprox_indexers(self):
            return {"odd": 42, "faiss": FaissIndexer}

    class Misspelt:
        @hookimpl
        def bertapprox_indexer(self):  # no such hook
            return {}

    class Benchmarks:
        @hookimpl
        def bertapprox_benchmark_datasets(self):
            return ["listed-only"]

    manager = PluginManager(entry_points=False, disabled=["bench"])
    assert manager.register(Raises(), "raises") == "raises"
    manager.register(NotAClass(), "not-a-class")
    assert manager.register(Misspelt(), "misspelt") is None
    manager.register(Benchmarks(), "benchmarks")
    assert set(manager.indexers()) == {"faiss", "faiss-shards", "pyserini"}
    assert manager.benchmark_datasets() == {"listed-only": ""}
    failures = [(f.name, f.stage, f.error) for f in manager.failures]
    assert ("raises", "hook bertapprox_indexers", "RuntimeError: boom") in failures
    assert ("not-a-class", "hook bertapprox_indexers", "indexer 'odd' is int, not a class") in failures
    assert ("not-a-class", "hook bertapprox_indexers", "indexer 'faiss' is already provided by faiss") in failures
    assert [f[:2] for f in failures if "unknown hook 'bertapprox_indexer'" in f[2]] == [("misspelt", "register")]
    assert "misspelt" not in manager.plugin_names()
    with pytest.raises(ValueError, match="does not implement running it"):
        manager.run_benchmark("listed-only", "model")
    report = manager.format_report()
    assert "failed plugins (4):" in report and "raises [registered in code]: hook bertapprox_indexers failed" in report


def test_plugins_can_be_disabled(monkeypatch):
    monkeypatch.setenv("BERTAPPROX_DISABLE_PLUGINS", "pyserini, other")
    assert set(PluginManager(entry_points=False).indexers()) == {"faiss", "faiss-shards"}


# --- a third-party plugin, installed ----------------------------------------------------------------------
def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """``pip install -e`` a plugin package with a good and a broken entry point; uninstalled afterwards."""
    root = tmp_path_factory.mktemp("plugin-package")
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (root / "bertapprox_test_plugin").mkdir()
    (root / "bertapprox_test_plugin" / "__init__.py").write_text("")
    (root / "bertapprox_test_plugin" / "plugin.py").write_text(PLUGIN)
    (root / "bertapprox_test_broken").mkdir()
    (root / "bertapprox_test_broken" / "__init__.py").write_text(BROKEN_MODULE)
    result = pip("install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(root))
    assert result.returncode == 0, result.stderr
    try:
        yield root
    finally:
        pip("uninstall", "--yes", "--quiet", DIST)
        for name in [m for m in sys.modules if m.startswith(("bertapprox_test_plugin", "bertapprox_test_broken"))]:
            del sys.modules[name]


def test_installed_plugin_is_discovered_and_its_hooks_called(installed_plugin, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(installed_plugin))  # the editable install's path hook works only in new processes
    manager = PluginManager()
    assert GOOD in manager.plugin_names() and BROKEN not in manager.plugin_names()
    broken = [f for f in manager.failures if f.name == BROKEN]
    assert len(broken) == 1 and broken[0].stage == "load"
    assert broken[0].error.startswith("ImportError: bertapprox_test_broken needs")
    assert "bertapprox_test_broken (bertapprox-test-plugin 0.0.1)" == broken[0].source

    memory = manager.get_indexer("test-memory")
    assert issubclass(memory, Indexer)
    docs = ["the cat sat", "zebra quiz", "a dog barked", "jazz fuzz buzz"]
    index = memory.build(docs, Letters(), show_progress_bar=False)
    index.save(tmp_path / "memory")
    loaded = manager.get_indexer(json.loads((tmp_path / "memory" / "meta.json").read_text())["indexer"]).load(
        tmp_path / "memory"
    )
    results = loaded.search(["buzz jazz", "cat"], k=2, query_encoder=Letters())
    assert results.ids[0][0] == "3" and results.ids[1][0] == "0"

    assert manager.benchmark_datasets()["test-bench"].startswith("a benchmark")
    assert manager.run_benchmark("test-bench", "some/model", {"k": 5}) == {
        "benchmark": "test-bench",
        "model": "some/model",
        "k": 5,
    }
    calls = sys.modules["bertapprox_test_plugin.plugin"].CALLS
    assert "indexers" in calls and "datasets" in calls and ("run", "test-bench") in calls
    info = {i.name: i for i in manager.plugins()}[GOOD]
    assert info.indexers == ["test-memory"] and list(info.benchmarks) == ["test-bench"]


def test_plugins_list_command_shows_plugins_and_failures(installed_plugin, tmp_path, monkeypatch, capsys):
    from bertapprox_hf.cli import main

    # a fresh process, as a user runs it: the plugin is found through its installed entry point alone
    command = [sys.executable, "-m", "bertapprox_hf.cli", "plugins", "list"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "faiss  (built-in)" in out and "indexers: test-memory" in out
    assert f"{GOOD}  (bertapprox_test_plugin.plugin (bertapprox-test-plugin 0.0.1))" in out
    assert "benchmark: test-bench - a benchmark that only echoes its settings" in out
    assert "failed plugins (1):" in out and f"{BROKEN} [bertapprox_test_broken" in out
    assert "load failed: ImportError: bertapprox_test_broken needs" in out

    monkeypatch.syspath_prepend(str(installed_plugin))
    assert main(["plugins", "list", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in report["failures"]] == [BROKEN]
    assert {p["name"] for p in report["plugins"]} >= {"faiss", "pyserini", GOOD}
    assert main(["benchmark", "run", "test-bench", "--model", "m", "--set", "k=3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "test-bench", "model": "m", "k": 3}
    assert main(["benchmark", "list"]) == 0
    assert "test-bench\t" in capsys.readouterr().out

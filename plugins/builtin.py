"""The plugins that ship with bertapprox: the Faiss and Pyserini indexers, and the benchmarks.

Their hooks import only the indexer modules (which import faiss / start Java only when an index is
made or loaded) and the benchmark registry (no heavy import), so listing plugins stays cheap.
"""

from __future__ import annotations

from bertapprox_hf import hookimpl


class FaissPlugin:
    """``faiss``: Flat, HNSW and IVF-PQ indexes, and ``faiss-shards``: Faiss shards searched as one index
    (``pip install 'bertapprox-hf[index]'``)."""

    @hookimpl
    def bertapprox_indexers(self) -> dict[str, type]:
        from indexers.faiss_indexer import FaissIndexer
        from indexers.faiss_shards import ShardedFaissIndexer

        return {FaissIndexer.name: FaissIndexer, ShardedFaissIndexer.name: ShardedFaissIndexer}


class PyseriniPlugin:
    """``pyserini``: dense indexes in Pyserini's format, searched by its FaissSearcher (Java ≥ 21)."""

    @hookimpl
    def bertapprox_indexers(self) -> dict[str, type]:
        from indexers.pyserini_indexer import PyseriniIndexer

        return {PyseriniIndexer.name: PyseriniIndexer}


class BenchmarksPlugin:
    """``bench``: BEIR, TREC DL / MS MARCO, STS and fidelity benchmarks of the teacher, the student and the
    baselines (``pip install 'bertapprox-hf[bench]'``; see :mod:`benchmarks.registry`)."""

    @hookimpl
    def bertapprox_benchmark_datasets(self) -> dict[str, str]:
        from benchmarks.registry import descriptions

        return descriptions()

    @hookimpl
    def bertapprox_run_benchmark(self, name: str, model, options: dict) -> dict | None:
        from benchmarks.registry import run

        return run(name, model, options)


class CommandsPlugin:
    """``commands``: ``bertapprox index``, ``search``, ``plugins`` and ``benchmark`` (see :mod:`plugins.commands`),
    and ``bertapprox cluster`` (encoding on a Ray cluster: :mod:`plugins.cluster`)."""

    @hookimpl
    def bertapprox_add_commands(self, commands) -> None:
        from . import cluster
        from .commands import add_commands

        add_commands(commands)
        cluster.add_commands(commands)


# The objects the entry points name (pyproject.toml, [project.entry-points."bertapprox.plugins"]).
faiss = FaissPlugin()
pyserini = PyseriniPlugin()
bench = BenchmarksPlugin()
commands = CommandsPlugin()

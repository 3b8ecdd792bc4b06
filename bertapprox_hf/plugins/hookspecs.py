"""Hook specifications of bertapprox plugins (pluggy project name ``"bertapprox"``).

A plugin is a module or an object with functions marked ``@hookimpl``; it implements any subset
of the hooks below. Third-party plugins are found through the entry-point group
``bertapprox.plugins``; in the plugin package's ``pyproject.toml``::

    [project.entry-points."bertapprox.plugins"]
    myplugin = "my_package.bertapprox_plugin"      # a module (or module:object)

and in ``my_package/bertapprox_plugin.py``::

    from bertapprox_hf import hookimpl

    class MyIndexer: ...  # implements the Indexer interface of indexers/base.py (subclassing it is simplest)

    @hookimpl
    def bertapprox_indexers():
        return {"my-indexer": MyIndexer}

    @hookimpl
    def bertapprox_benchmark_datasets():
        return {"my-set": "what it measures"}

    @hookimpl
    def bertapprox_run_benchmark(name, model, options):
        if name != "my-set":
            return None
        return {"ndcg@10": ...}

``bertapprox plugins list`` shows what was found, and the plugins that failed to load.
"""

from __future__ import annotations

import argparse
from typing import Any

import pluggy

PROJECT_NAME = "bertapprox"
ENTRY_POINT_GROUP = "bertapprox.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def bertapprox_add_commands(commands: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``bertapprox`` command line, as ``pytest_addoption`` adds options.

    ``commands`` is the top-level subparsers object: ``commands.add_parser("name", help=...)``. Each command's
    parser (or each of its subcommands' parsers) sets ``set_defaults(handler=function)``, where
    ``function(args) -> int`` runs it and returns the exit code. Import heavy modules inside the handler,
    not here: every ``bertapprox`` call builds the whole parser. A name another plugin took first is an error
    recorded against this plugin.
    """


@hookspec
def bertapprox_indexers() -> dict[str, type]:
    """The indexer classes this plugin provides, by the name users choose them with.

    Each class implements :class:`indexers.base.Indexer` (``create``, ``add``, ``build``, ``save``,
    ``load``, ``search``); subclassing it is the simple way. Keep heavy imports (faiss, Java, ...)
    out of this hook: do them when an index is made or loaded.

    Returns:
        ``{"name": IndexerClass, ...}``
    """


@hookspec
def bertapprox_benchmark_datasets() -> dict[str, str]:
    """The benchmarks this plugin can run, by name, each with a one-line description.

    Returns:
        ``{"name": "description", ...}`` (a list of names is accepted too).
    """


@hookspec(firstresult=True)
def bertapprox_run_benchmark(name: str, model: Any, options: dict) -> dict | None:
    """Run the benchmark ``name`` on ``model`` and return its results.

    Args:
        name: a benchmark name, as listed by :func:`bertapprox_benchmark_datasets`.
        model: a model folder (student or teacher) or an encoder object with ``encode(texts, batch_size)``.
        options: free-form settings (``k``, ``batch_size``, ``device``, ``out`` folder, ...); ignore unknown keys.

    Returns:
        A JSON-able dict of results (metric name → value, plus anything worth recording), or ``None``
        when ``name`` is not one of this plugin's benchmarks (the next plugin is then asked).
    """

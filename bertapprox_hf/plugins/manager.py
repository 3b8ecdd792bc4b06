"""The plugin manager: every plugin declared in the ``bertapprox.plugins`` entry points.

The built-in plugins (the Faiss and Pyserini indexers, the benchmarks, and the ``index``, ``search``,
``plugins`` and ``benchmark`` commands) live in the outer ``plugins/`` package and are declared there by this
distribution's own entry points, so the core never imports them; third-party packages declare theirs the
same way.

A plugin that fails (its import raises, its hooks do not fit the specifications, a hook raises or
returns something unusable) is recorded in :attr:`PluginManager.failures` with its name and the
error, logged as a warning, and left out; it never stops the others. ``bertapprox plugins list``
prints the plugins, what they provide and the failures.

Set ``BERTAPPROX_DISABLE_PLUGINS=name1,name2`` to skip plugins by name.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME

logger = logging.getLogger(__name__)

INDEXER_METHODS = ("build", "add", "save", "load", "search")
DISTRIBUTION = "bertapprox-hf"  # whose entry points are the built-in plugins


@dataclass
class PluginFailure:
    """A plugin that could not be used, and why."""

    name: str  # the plugin's (entry point's) name
    stage: str  # "load", "register", or "hook <hook name>"
    error: str  # "ExceptionType: message"
    source: str = ""  # "module:object (distribution version)" for entry points, "built-in" otherwise

    def __str__(self) -> str:
        where = f" [{self.source}]" if self.source else ""
        return f"{self.name}{where}: {self.stage} failed: {self.error}"


@dataclass
class PluginInfo:
    """A registered plugin and what it provides."""

    name: str
    source: str
    indexers: list[str] = field(default_factory=list)
    benchmarks: dict[str, str] = field(default_factory=dict)
    missing_modules: list[str] = field(default_factory=list)  # modules its indexers need that are not installed


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class PluginManager:
    """bertapprox's plugins: indexers by name, benchmarks by name, and the failures."""

    def __init__(self, builtins: bool = True, entry_points: bool = True, disabled: list[str] | None = None) -> None:
        """``builtins``: load the plugins this distribution declares; ``entry_points``: load those of others."""
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.sources: dict[str, str] = {}
        if disabled is None:
            disabled = [n.strip() for n in os.environ.get("BERTAPPROX_DISABLE_PLUGINS", "").split(",") if n.strip()]
        for name in disabled:
            self.pm.set_blocked(name)
        if builtins or entry_points:
            self.load_entry_points(builtins=builtins, others=entry_points)
        self._indexers: dict[str, tuple[str, type]] | None = None
        self._benchmarks: dict[str, tuple[str, str]] | None = None

    # --- registration -----------------------------------------------------------------------------
    def _register(self, plugin: Any, name: str, source: str) -> bool:
        if self.pm.is_blocked(name):
            return False
        try:
            self.pm.register(plugin, name=name)
        except Exception as error:  # pluggy.PluginValidationError, a name already taken, ...
            self._fail(name, "register", error, source)
            return False
        self.sources[name] = source
        self._indexers = self._benchmarks = None
        return self._hooks_known(name)

    def _hooks_known(self, name: str) -> bool:
        """Unregister (and record) a just-registered plugin that implements hooks no spec declares,
        e.g. a misspelt hook name, which pluggy would otherwise ignore silently."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as error:
            self.pm.unregister(name=name)
            self._fail(name, "register", error)
            return False
        return True

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register a plugin object (module, class instance) by hand; returns its name, None if it failed."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        return name if self._register(plugin, name, "registered in code") else None

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP, builtins: bool = True, others: bool = True) -> int:
        """Load the plugins the installed distributions declare in ``group``; returns how many loaded.

        ``builtins`` / ``others``: those this distribution declares / those of other distributions (built-ins
        load first, so they keep their names). Each entry point goes through pluggy's
        ``load_setuptools_entrypoints`` on its own, so one that fails to import is recorded and the others
        still load.
        """

        def is_builtin(entry_point) -> bool:
            dist = getattr(entry_point, "dist", None)
            return dist is not None and dist.name == DISTRIBUTION

        chosen = [ep for ep in importlib.metadata.entry_points(group=group) if (builtins if is_builtin(ep) else others)]
        chosen.sort(key=lambda ep: not is_builtin(ep))
        loaded = 0
        for entry_point in chosen:
            name = entry_point.name
            dist = getattr(entry_point, "dist", None)
            if is_builtin(entry_point):
                source = "built-in"
            else:
                source = entry_point.value + (f" ({dist.name} {dist.version})" if dist is not None else "")
            if self.pm.get_plugin(name) is not None or self.pm.is_blocked(name):
                continue
            try:
                count = self.pm.load_setuptools_entrypoints(group, name=name)
            except Exception as error:  # ImportError, SyntaxError, PluginValidationError, ...
                self._fail(name, "load", error, source)
                continue
            if count:
                self.sources[name] = source
                loaded += count if self._hooks_known(name) else 0
        self._indexers = self._benchmarks = None
        return loaded

    def _fail(self, name: str, stage: str, error: BaseException | str, source: str = "") -> None:
        text = error if isinstance(error, str) else _error_text(error)
        failure = PluginFailure(name, stage, text, source or self.sources.get(name, ""))
        self.failures.append(failure)
        logger.warning("bertapprox plugin %s", failure)

    def plugin_names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin()]

    # --- calling hooks one plugin at a time ---------------------------------------------------------
    def _each(self, hook_name: str, **kwargs: Any):
        """``(plugin name, result)`` of each plugin implementing the hook, in registration order;
        a plugin whose hook raises is recorded as a failure and skipped."""
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order (pluggy calls them in reverse)
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            try:
                yield impl.plugin_name, impl.function(**args)
            except Exception as error:
                self._fail(impl.plugin_name, f"hook {hook_name}", error)

    # --- commands ---------------------------------------------------------------------------------
    def add_commands(self, commands: argparse._SubParsersAction) -> None:
        """Let each plugin add its subcommands to the ``bertapprox`` parser; one that fails is recorded."""
        for plugin, _ in self._each("bertapprox_add_commands", commands=commands):
            logger.debug("bertapprox plugin %s added its commands", plugin)

    # --- indexers ---------------------------------------------------------------------------------
    def indexers(self) -> dict[str, type]:
        """Indexer classes by name (the first plugin to offer a name keeps it; built-ins come first)."""
        return {name: cls for name, (_, cls) in self._indexer_table().items()}

    def _indexer_table(self) -> dict[str, tuple[str, type]]:
        if self._indexers is not None:
            return self._indexers
        table: dict[str, tuple[str, type]] = {}
        for plugin, offered in self._each("bertapprox_indexers"):
            if offered is None:
                continue
            if not isinstance(offered, dict):
                self._fail(plugin, "hook bertapprox_indexers", f"returned {type(offered).__name__}, not a dict")
                continue
            for name, cls in offered.items():
                problem = _indexer_problem(name, cls)
                if problem:
                    self._fail(plugin, "hook bertapprox_indexers", problem)
                elif name in table:
                    self._fail(
                        plugin, "hook bertapprox_indexers", f"indexer {name!r} is already provided by {table[name][0]}"
                    )
                else:
                    table[name] = (plugin, cls)
        self._indexers = table
        return table

    def get_indexer(self, name: str) -> type:
        """The indexer class called ``name``; ValueError listing the known ones otherwise."""
        table = self._indexer_table()
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            failed = sorted({f.name for f in self.failures})
            hint = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
            raise ValueError(f"no indexer named {name!r}; available: {known}{hint}")
        return table[name][1]

    # --- benchmarks -------------------------------------------------------------------------------
    def benchmark_datasets(self) -> dict[str, str]:
        """Benchmark names → descriptions, over all plugins."""
        return {name: description for name, (_, description) in self._benchmark_table().items()}

    def _benchmark_table(self) -> dict[str, tuple[str, str]]:
        if self._benchmarks is not None:
            return self._benchmarks
        table: dict[str, tuple[str, str]] = {}
        for plugin, offered in self._each("bertapprox_benchmark_datasets"):
            if offered is None:
                continue
            if isinstance(offered, (list, tuple)):
                offered = {name: "" for name in offered}
            if not isinstance(offered, dict) or not all(isinstance(n, str) for n in offered):
                self._fail(plugin, "hook bertapprox_benchmark_datasets", "expected a dict (or list) of names")
                continue
            for name, description in offered.items():
                if name in table:
                    self._fail(
                        plugin,
                        "hook bertapprox_benchmark_datasets",
                        f"{name!r} is already provided by {table[name][0]}",
                    )
                else:
                    table[name] = (plugin, str(description or ""))
        self._benchmarks = table
        return table

    def run_benchmark(self, name: str, model: Any, options: dict | None = None) -> dict:
        """Run benchmark ``name`` through the plugin that lists it; its errors propagate."""
        table = self._benchmark_table()
        if name not in table:
            raise ValueError(f"no benchmark named {name!r}; available: {', '.join(sorted(table)) or 'none'}")
        plugin_name = table[name][0]
        hook = self.pm.hook.bertapprox_run_benchmark
        impls = [impl for impl in hook.get_hookimpls() if impl.plugin_name == plugin_name]
        if not impls:
            raise ValueError(f"plugin {plugin_name!r} lists benchmark {name!r} but does not implement running it")
        kwargs = {"name": name, "model": model, "options": dict(options or {})}
        result = impls[0].function(**{arg: kwargs[arg] for arg in impls[0].argnames if arg in kwargs})
        if not isinstance(result, dict):
            raise ValueError(
                f"plugin {plugin_name!r} returned {type(result).__name__} for benchmark {name!r}, not a dict"
            )
        return result

    # --- reporting --------------------------------------------------------------------------------
    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with its indexers and benchmarks."""
        indexers, benchmarks = self._indexer_table(), self._benchmark_table()
        infos = []
        for name in self.plugin_names():
            info = PluginInfo(name, self.sources.get(name, ""))
            for indexer_name, (plugin, cls) in indexers.items():
                if plugin == name:
                    info.indexers.append(indexer_name)
                    for module in getattr(cls, "requires", ()):
                        if importlib.util.find_spec(module) is None and module not in info.missing_modules:
                            info.missing_modules.append(module)
            info.benchmarks = {b: d for b, (plugin, d) in benchmarks.items() if plugin == name}
            infos.append(info)
        return infos

    def report(self) -> dict:
        """JSON-able: ``{"plugins": [...], "failures": [...]}``."""
        plugins = [asdict(info) for info in self.plugins()]
        return {"plugins": plugins, "failures": [asdict(failure) for failure in self.failures]}

    def format_report(self) -> str:
        """The text ``bertapprox plugins list`` prints."""
        lines = []
        for info in self.plugins():
            lines.append(f"{info.name}  ({info.source})")
            if info.indexers:
                lines.append(f"  indexers: {', '.join(info.indexers)}")
            for name, description in info.benchmarks.items():
                lines.append(f"  benchmark: {name}" + (f" - {description}" if description else ""))
            if info.missing_modules:
                lines.append(f"  not installed: {', '.join(info.missing_modules)}")
        if self.failures:
            lines.append("")
            lines.append(f"failed plugins ({len(self.failures)}):")
            lines.extend(f"  {failure}" for failure in self.failures)
        return "\n".join(lines)


def _indexer_problem(name: Any, cls: Any) -> str | None:
    """Why ``cls`` cannot serve as indexer ``name``, or None."""
    if not isinstance(name, str) or not name:
        return f"indexer names must be non-empty strings, got {name!r}"
    if not isinstance(cls, type):
        return f"indexer {name!r} is {type(cls).__name__}, not a class"
    missing = [method for method in INDEXER_METHODS if not callable(getattr(cls, method, None))]
    if missing:
        return f"indexer {name!r} ({cls.__name__}) lacks {', '.join(missing)}"
    return None


def get_plugin_manager(**kwargs: Any) -> PluginManager:
    """A new manager with the built-in and installed plugins (the entry points are read now)."""
    return PluginManager(**kwargs)

"""Plugins: pluggy hooks for commands, indexers and benchmarks, and the manager that loads them.

Plugin authors mark their hooks with ``from bertapprox_hf import hookimpl`` (as ``pytest.hookimpl``) and
declare the plugin in the ``bertapprox.plugins`` entry-point group; :mod:`.hookspecs` lists the hooks.
"""

from .hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME, hookimpl, hookspec
from .manager import PluginFailure, PluginInfo, PluginManager, get_plugin_manager

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "PluginFailure",
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
]

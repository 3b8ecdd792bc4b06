"""bertapprox plugins: pluggy hooks for indexers and benchmarks (see :mod:`plugins.hookspecs`)."""

from .hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME, hookimpl, hookspec

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "hookimpl", "hookspec"]

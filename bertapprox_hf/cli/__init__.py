"""The ``bertapprox`` command line.

The core's commands come from one module per stage (:mod:`.data`: vocabularies, targets, candidates;
:mod:`.models`: students and ``encode``; :mod:`.export`: ONNX, TorchScript and the Hub). Plugins add theirs
through the ``bertapprox_add_commands`` hook: the built-in ones give ``index``, ``search``, ``plugins`` and
``benchmark``. Each command's parser sets ``handler(args) -> int``.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import run_main
from . import data, export, models

CORE_COMMANDS = (data, models, export)


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """The whole parser: the core's commands, then those of the installed plugins (``plugins=False``: none)."""
    parser = argparse.ArgumentParser(prog="bertapprox", description="Distil, run, index and share bertapprox students.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in CORE_COMMANDS:
        group.add_commands(commands)
    if plugins:
        from ..plugins import PluginManager

        PluginManager().add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: args.handler(args))  # a user error: one line and exit code 2; a bug: its traceback


if __name__ == "__main__":
    sys.exit(main())

"""The ``serve`` plugin: adds ``bertapprox serve`` and ``bertapprox drift`` (declared in this distribution's
``bertapprox.plugins`` entry points)."""

from __future__ import annotations

from bertapprox_hf import hookimpl


class ServePlugin:
    """``serve``: the HTTP server and the drift report (``pip install 'bertapprox-hf[serve]'``)."""

    @hookimpl
    def bertapprox_add_commands(self, commands) -> None:
        from .cli import add_commands

        add_commands(commands)


serve = ServePlugin()

"""The plugins that ship with bertapprox-hf, declared in its ``bertapprox.plugins`` entry points: the Faiss and
Pyserini indexers, the benchmarks, and the ``index``, ``search``, ``plugins`` and ``benchmark`` commands.
The hooks they implement are specified in :mod:`bertapprox_hf.plugins.hookspecs`."""

"""HTTP serving of a bertapprox student: embeddings (TEI and OpenAI shapes), search over an index, health,
Prometheus metrics, a quality-drift watch against the teacher and a small search page.

``pip install 'bertapprox-hf[serve]'``, then ``bertapprox serve --model STUDENT [--index INDEX] [--teacher T]``
(or :func:`serving.app.create_app` in Python). See ``docs/deployment.md``.
"""

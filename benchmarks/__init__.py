"""Benchmarks: `python -m benchmarks.<name> --help`.

Quality (``beir``, ``msmarco``, ``sts``, ``fidelity``) of the teacher, the student, the asymmetric mode,
model2vec and BM25 side by side; ``speed``; ``report`` runs a suite of them into one results folder.
"""

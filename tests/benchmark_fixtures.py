"""Session fixtures shared by the benchmark tests: a saved small student, a cache folder, a small model2vec.

Import the fixtures by name into a test module. Their folders sit at fixed names under the session's base
temporary folder, so test modules of one session share them (disk work is done once).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import trained_student

# model2vec distils every teacher token (~60 s for MiniLM's 30k); tests keep ~3k short ones (the special
# tokens included), which exercises the same distillation and loading code in a few seconds.
SMALL_MODEL2VEC_PATTERN = r"^(?!(?:[a-z]{1,4}|##[a-z]{1,2}|\[(?:PAD|UNK|CLS|SEP|MASK)\])$).*"


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """The benchmarks' cache folder for this session."""
    folder = tmp_path_factory.getbasetemp() / "bench-cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def student_dir(minilm_vocab, tmp_path_factory) -> str:
    """A small student of the MiniLM teacher, saved like a training run's ``best`` folder."""
    folder = tmp_path_factory.getbasetemp() / "bench-student"
    if not (folder / "config.json").is_file():
        trained_student(minilm_vocab).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def small_model2vec(minilm_path, bench_cache) -> str:
    """A model2vec model distilled from MiniLM (PCA 256, short tokens only), where the benchmarks' cache
    looks for the teacher's distillation: the benchmarks find it instead of distilling."""
    from model2vec.distill import distill

    from benchmarks.model2vec_baseline import cache_folder
    from benchmarks.systems import MODEL2VEC_PCA_DIMS

    folder = cache_folder(minilm_path, bench_cache / "model2vec", MODEL2VEC_PCA_DIMS)
    if not (folder / "model.safetensors").is_file():
        model = distill(
            model_name=minilm_path, pca_dims=MODEL2VEC_PCA_DIMS, token_remove_pattern=SMALL_MODEL2VEC_PATTERN
        )
        model.save_pretrained(str(folder))
    return str(folder)

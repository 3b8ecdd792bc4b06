"""A student saved by an earlier version of the code (``tests/data/legacy_student``) still loads and embeds the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertapprox_hf import BertApproxModel, Encoder

from .test_save_load import run_loader

LEGACY = Path(__file__).parent / "data" / "legacy_student"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((LEGACY / "expected_embeddings.json").read_text(encoding="utf-8"))


def test_auto_model_with_the_saved_remote_code(expected, tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(LEGACY, folder)
    result = run_loader(folder, expected["texts"], tmp_path)
    assert result["model"] == "BertApproxModel"
    np.testing.assert_allclose(result["encode"], expected["embeddings"], atol=TOLERANCE, rtol=0)


def test_bertapprox_model_from_pretrained(expected):
    model = BertApproxModel.from_pretrained(str(LEGACY))
    assert model.config.pooling_rounds == 2 and model.config.context_layers == 1 and model.config.pair_rank == 4
    np.testing.assert_allclose(model.encode(expected["texts"]), expected["embeddings"], atol=TOLERANCE, rtol=0)


def test_encoder_from_pretrained(expected):
    encoder = Encoder.from_pretrained(str(LEGACY), device="cpu", cache_size=0)
    np.testing.assert_allclose(encoder.encode(expected["texts"]), expected["embeddings"], atol=TOLERANCE, rtol=0)

"""Model card templates (Hugging Face model card format), shipped as package data.

``MODEL_CARD`` is the template :func:`bertapprox_hf.hub.model_card.render_model_card` fills.
"""

from pathlib import Path

MODEL_CARD = Path(__file__).resolve().parent / "model_card.md"

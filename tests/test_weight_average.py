"""The weight average: its arithmetic, swapping weights in and out, and saving it with a checkpoint."""

from __future__ import annotations

import pytest
import torch

from bertapprox_hf.training.averaging import AVERAGE_FILE, WeightAverage


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[1].bias.requires_grad_(False)  # frozen parameters are not averaged
    return model


def test_average_follows_the_formula_and_skips_frozen_parameters():
    model = make_model()
    average = WeightAverage(model, decay=0.9)
    assert set(average.shadow) == {"0.weight", "0.bias", "1.weight"}
    expected = model[0].weight.detach().clone()
    for n in range(1, 31):
        with torch.no_grad():
            model[0].weight.add_(0.1 * n)
        average.update(model)
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * model[0].weight.detach()
    torch.testing.assert_close(average.shadow["0.weight"], expected)
    assert not torch.allclose(average.shadow["0.weight"], model[0].weight)


def test_applied_swaps_the_average_in_and_the_live_weights_back():
    model = make_model()
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.mul_(3)
    live = model[0].weight.detach().clone()
    with average.applied(model):
        torch.testing.assert_close(model[0].weight, average.shadow["0.weight"])
    torch.testing.assert_close(model[0].weight, live)
    with pytest.raises(RuntimeError), average.applied(model):
        raise RuntimeError("an evaluation that fails")
    torch.testing.assert_close(model[0].weight, live)  # restored even then


def test_save_and_load_round_trip_and_refusals(tmp_path):
    model = make_model()
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model[0].bias.add_(1)
    average.update(model)
    average.save(str(tmp_path))
    assert (tmp_path / AVERAGE_FILE).is_file()
    other = WeightAverage(make_model(), decay=0.99)
    other.load(str(tmp_path))
    assert other.updates == 1
    torch.testing.assert_close(other.shadow["0.bias"], average.shadow["0.bias"])

    with pytest.raises(FileNotFoundError, match="optim.ema_decay"):
        other.load(str(tmp_path / "elsewhere"))
    different = WeightAverage(torch.nn.Linear(4, 3), decay=0.99)
    with pytest.raises(ValueError, match="other parameters"):
        different.load(str(tmp_path))
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)


def test_a_damaged_average_is_refused_with_its_path(tmp_path):
    model = make_model()
    average = WeightAverage(model, decay=0.9)
    average.save(str(tmp_path))
    path = tmp_path / AVERAGE_FILE
    path.write_bytes(path.read_bytes()[:40])  # cut short, as by a full disk
    with pytest.raises(ValueError, match="damaged"):
        average.load(str(tmp_path))
    from safetensors.torch import save_file

    save_file({name: value for name, value in average.shadow.items()}, str(path))  # no metadata
    with pytest.raises(ValueError, match="not a weight average"):
        average.load(str(tmp_path))

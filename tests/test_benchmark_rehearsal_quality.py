"""`benchmarks/rehearsal_quality.py`: the referee's per-class agreement and the settings parser, on hand-made cases."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from .utils import load_benchmark


class ReadPixelReferee:
    """A referee whose prediction is written in the first pixel of each flattened image."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        return images[:, 0].round().astype(np.int64)


def test_rehearsal_agreement_per_class_and_group(tmp_path):
    benchmark = load_benchmark("rehearsal_quality")
    # Old classes 0 (3 samples, referee agrees on 2) and 1 (1 sample, agrees); new class 2 (2 samples, agrees on 0).
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    referee_says = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    is_old = torch.tensor([True, True, True, True, False, False])
    images = torch.zeros(6, 1, 2, 2)
    images[:, 0, 0, 0] = referee_says
    path = tmp_path / "rehearsal.safetensors"
    save_file({"images": images, "labels": labels, "is_old": is_old}, str(path))

    report = benchmark.rehearsal_agreement(ReadPixelReferee(), path)

    assert report["old"]["agreement"] == pytest.approx(3 / 4)
    assert report["old"]["per_class"] == {
        0: {"count": 3, "agreement": pytest.approx(2 / 3)},
        1: {"count": 1, "agreement": 1.0},
    }
    assert report["new"]["agreement"] == 0.0
    assert report["new"]["per_class"] == {2: {"count": 2, "agreement": 0.0}}


def test_parse_settings():
    benchmark = load_benchmark("rehearsal_quality")
    assert benchmark.parse_settings("20:0:first,dpmsolver++:10:1.0:confident:guided") == [
        ("ddim", 20, 0.0, "first", "label"),
        ("dpmsolver++", 10, 1.0, "confident", "guided"),
    ]
    # The default comparison parses, and starts from the library's own rehearsal (DDIM, 20 steps, eta 0, first).
    assert benchmark.parse_settings(benchmark.SAMPLER_SETTINGS)[0] == ("ddim", 20, 0.0, "first", "label")


class MeanPixel(torch.nn.Module):
    """Features: each image's mean and standard deviation."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([images.mean(dim=(1, 2, 3)), images.std(dim=(1, 2, 3))], dim=1)


def test_compare_samplers_measures_each_scheduler_on_a_saved_model(tmp_path):
    from jdcl.quality import QualityReference

    from .utils import tiny_unet

    benchmark = load_benchmark("rehearsal_quality")
    tiny_unet().save_pretrained(tmp_path / "unet")
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    reference = QualityReference(MeanPixel(), real, torch.tensor([0, 1] * 4))
    settings = benchmark.parse_settings("ddim:2:0:first:label,dpmsolver++:2:0:first:label,heun:2:0:first:label")
    rows = benchmark.compare_samplers(
        ReadPixelReferee(), reference, tmp_path / "unet", [0, 1], 3, real.flatten(1).numpy(), np.zeros(8), settings
    )
    assert [row["scheduler"] for row in rows] == ["ddim", "dpmsolver++", "heun"]
    for row in rows:
        assert row["fd"] >= 0.0 and np.isfinite(row["kid"]) and set(row["fd_per_class"]) == {"0", "1"}
        assert 0.0 <= row["agreement"] <= 1.0 and row["num_generated"] >= 6
    # Two steps are two UNet passes per image, except for Heun's second order (its last step is first order).
    assert rows[0]["model_evaluations"] == rows[0]["num_generated"] * 2
    assert rows[2]["model_evaluations"] == rows[2]["num_generated"] * 3
    # Another solver from the same noise gives other images.
    assert rows[0]["fd"] != rows[1]["fd"]


def test_train_on_rehearsal_scores_only_the_rehearsed_classes():
    benchmark = load_benchmark("rehearsal_quality")
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 4.0
    rehearsal_y = np.repeat([0, 1], 20)
    rehearsal_x = centres[rehearsal_y] + rng.normal(size=(40, 3)) * 0.1
    # Class 2 is in the test set but not rehearsed: it must not count against the rehearsal.
    test_y = np.repeat([0, 1, 2], 10)
    test_x = centres[test_y] + rng.normal(size=(30, 3)) * 0.1
    assert benchmark.train_on_rehearsal_test_on_real(rehearsal_x, rehearsal_y, test_x, test_y) == 1.0

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
    assert benchmark.parse_settings("20:0:first,10:1.0:confident") == [(20, 0.0, "first"), (10, 1.0, "confident")]
    # The default comparison parses, and starts from the library's own rehearsal (20 steps, eta 0, first).
    assert benchmark.parse_settings(benchmark.SAMPLER_SETTINGS)[1] == (20, 0.0, "first")


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

"""Fréchet distance and KID (`jdcl.quality`): closed forms, agreement with torchmetrics, the extractors, bad input."""

import importlib.util
import json
import sys

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

from jdcl.quality import (
    DinoV2FeatureExtractor,
    InceptionFeatureExtractor,
    QualityReference,
    RefereeClassifier,
    RefereeFeatureExtractor,
    frechet_distance,
    kernel_distance,
    load_or_train_referee,
)
from jdcl.tensor_data import TensorData


def features_with_moments(mean: torch.Tensor, std: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Samples whose sample mean is exactly `mean` and sample covariance exactly `diag(std**2)`."""
    noise = torch.randn(count, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    noise = noise - noise.mean(dim=0)
    # Whiten: the sample covariance (with torchmetrics' N - 1) becomes the identity.
    covariance = noise.T @ noise / (count - 1)
    noise = noise @ torch.linalg.inv(torch.linalg.cholesky(covariance)).T
    return noise * std + mean


def random_images(count: int, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def small_referee(in_channels: int = 1, seed: int = 0) -> RefereeFeatureExtractor:
    torch.manual_seed(seed)
    return RefereeFeatureExtractor(RefereeClassifier(in_channels=in_channels, num_classes=3, num_features=16))


# ------------------------------------------------------------------------------------------------- distances


def test_identical_sets_are_at_distance_zero():
    features = torch.randn(200, 6, dtype=torch.float64)
    assert frechet_distance(features, features.clone()) == pytest.approx(0.0, abs=1e-6)
    kid, _ = kernel_distance(features, features.clone(), subsets=10, subset_size=100)
    shifted, _ = kernel_distance(features, features + 1.0, subsets=10, subset_size=100)
    # The unbiased MMD of a set with itself is zero on average over subsets only: small beside a real difference.
    assert abs(kid) < 0.05 * shifted


def test_frechet_distance_of_gaussians_is_the_closed_form():
    mean_a, std_a = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 2.0, 0.5, 1.5])
    mean_b, std_b = torch.tensor([1.0, -1.0, 0.0, 0.5]), torch.tensor([0.5, 1.0, 1.5, 1.5])
    real = features_with_moments(mean_a.double(), std_a.double(), 500, seed=0)
    generated = features_with_moments(mean_b.double(), std_b.double(), 300, seed=1)
    # Diagonal covariances: ||m_a - m_b||^2 + sum (s_a - s_b)^2.
    expected = float(((mean_a - mean_b) ** 2).sum() + ((std_a - std_b) ** 2).sum())
    assert frechet_distance(real, generated) == pytest.approx(expected, rel=1e-6)


def test_kid_grows_with_the_shift_between_sets():
    real = torch.randn(300, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    near = torch.randn(300, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    far = torch.randn(300, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 1.0
    assert kernel_distance(real, near, subsets=20)[0] < kernel_distance(real, far, subsets=20)[0]


def test_kid_leaves_the_global_random_state_alone_and_is_seeded():
    real, generated = torch.randn(120, 4, dtype=torch.float64), torch.randn(100, 4, dtype=torch.float64) + 0.5
    torch.manual_seed(123)
    first = kernel_distance(real, generated, subsets=5, subset_size=50, seed=7)
    after = torch.rand(3)
    torch.manual_seed(123)
    second = kernel_distance(real, generated, subsets=5, subset_size=50, seed=7)
    assert first == second
    assert torch.equal(torch.rand(3), after)


def test_reference_matches_torchmetrics_on_the_same_images():
    extractor = small_referee()
    real, generated = random_images(150, seed=0), random_images(120, seed=1) * 0.5
    labels = torch.randint(0, 3, (150,), generator=torch.Generator().manual_seed(0))
    measured = QualityReference(extractor, real, labels, batch_size=64, kid_subsets=10, kid_subset_size=100)
    result = measured.measure(generated)

    fid = FrechetInceptionDistance(feature=extractor)
    fid.update(real, real=True)
    fid.update(generated, real=False)
    assert result["fd"] == pytest.approx(float(fid.compute()), rel=1e-4)
    kid = KernelInceptionDistance(feature=extractor, subsets=10, subset_size=100)
    kid.update(real, real=True)
    kid.update(generated, real=False)
    torch.manual_seed(0)
    kid_mean, kid_std = kid.compute()
    assert result["kid"] == pytest.approx(float(kid_mean), rel=1e-4, abs=1e-8)
    assert result["kid_std"] == pytest.approx(float(kid_std), rel=1e-4, abs=1e-8)


def test_per_class_distances_compare_each_class_with_its_own_real_images():
    extractor = small_referee()
    real = torch.cat([random_images(60, seed=0) * 0.2 - 0.5, random_images(60, seed=1) * 0.2 + 0.5])
    labels = torch.tensor([0] * 60 + [1] * 60)
    reference = QualityReference(extractor, real, labels, kid_subsets=5)
    # Generated class 0 looks like real class 0, generated class 1 like real class 0 too.
    generated = torch.cat([random_images(40, seed=2) * 0.2 - 0.5, random_images(40, seed=3) * 0.2 - 0.5])
    result = reference.measure(generated, torch.tensor([0] * 40 + [1] * 40))
    assert result["per_class"]["0"] < result["per_class"]["1"]
    # One class only: measured against that class's real images; a class with one image has no distance.
    only_first = reference.measure(generated[:40], torch.tensor([0] * 39 + [1]), classes=[0, 1])
    assert only_first["per_class"]["1"] is None
    assert reference.measure(generated[:40], classes=[0])["fd"] < reference.measure(generated[:40], classes=[1])["fd"]


# ------------------------------------------------------------------------------------------------ extractors


@pytest.fixture
def dinov2_folder(tmp_path):
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=7
    )
    Dinov2Model(config).save_pretrained(tmp_path / "dinov2")
    BitImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 28, "width": 28},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(tmp_path / "dinov2")
    return tmp_path / "dinov2"


def test_dinov2_extractor_reads_the_cls_embedding_with_its_processors_preprocessing(dinov2_folder):
    extractor = DinoV2FeatureExtractor.from_pretrained(str(dinov2_folder))
    assert (extractor.resize_to, extractor.crop_to, extractor.num_features) == (32, 28, 32)
    grey = random_images(4, channels=1, size=16)
    features = extractor(grey)
    assert features.shape == (4, 32)
    # A grey image is read as the RGB image with three equal channels.
    torch.testing.assert_close(features, extractor(grey.expand(-1, 3, -1, -1)))
    # The CLS embedding of the model on the preprocessed pixels.
    pixels = torch.nn.functional.interpolate(
        grey.expand(-1, 3, -1, -1).add(1).div(2), size=(32, 32), mode="bicubic", antialias=True
    )[:, :, 2:30, 2:30]
    pixels = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(features, extractor.model(pixel_values=pixels).pooler_output)


def test_dinov2_distances_run_end_to_end(dinov2_folder):
    extractor = DinoV2FeatureExtractor.from_pretrained(str(dinov2_folder))
    reference = QualityReference(
        extractor, random_images(40, seed=0), torch.zeros(40, dtype=torch.long), kid_subsets=5
    )
    assert (
        reference.measure(random_images(30, seed=0)[:30])["fd"] < reference.measure(-random_images(30, seed=1))["fd"]
    )


def test_dinov2_that_cannot_be_loaded_says_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match="downloaded once from the Hub.*referee"):
        DinoV2FeatureExtractor.from_pretrained(str(tmp_path / "missing"))


def test_dinov2_without_transformers_says_what_to_install(monkeypatch):
    # transformers is an extra (`jdcl[quality]`): an environment without it imports nothing of it.
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ValueError, match=r"pip install jdcl\[quality\]"):
        DinoV2FeatureExtractor.from_pretrained("facebook/dinov2-base")


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_inception_without_torch_fidelity_says_what_to_install():
    with pytest.raises(ValueError, match="pip install torch-fidelity"):
        InceptionFeatureExtractor()


# ------------------------------------------------------------------------------------------------ the referee


def separable_data(count: int, seed: int) -> TensorData:
    """Three classes of 8x8 images: dark, middle and bright, with noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    images = labels.view(-1, 1, 1, 1) * 100.0 + 20 + torch.rand(count, 1, 8, 8, generator=generator) * 30
    return TensorData(images=images.to(torch.uint8), labels=labels.long())


def test_referee_is_trained_once_kept_and_trained_again_for_other_settings(tmp_path, monkeypatch):
    train, test = separable_data(300, seed=0), separable_data(90, seed=1)
    folder = tmp_path / "referee"
    first = load_or_train_referee(folder, train, test, num_classes=3, num_steps=60, show_progress=False)
    assert first.test_accuracy > 0.9
    record = json.loads((folder / "referee.json").read_text())
    assert record["test_accuracy"] == first.test_accuracy
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()

    import jdcl.quality.referee as referee_module

    def no_training(*args, **kwargs):
        raise AssertionError("the kept referee was trained again")

    monkeypatch.setattr(referee_module, "train_referee", no_training)
    again = load_or_train_referee(folder, train, test, num_classes=3, num_steps=60, show_progress=False)
    images = random_images(5)
    torch.testing.assert_close(again(images), first(images))
    with pytest.raises(AssertionError, match="trained again"):
        load_or_train_referee(folder, train, test, num_classes=3, num_steps=61, show_progress=False)


# ------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "real, generated, message",
    [
        (random_images(10), random_images(0), "holds 0 image"),
        (random_images(10), random_images(1), "holds 1 image"),
        (random_images(10), torch.rand(5, 8, 8), r"must be a tensor of images \(N, C, H, W\)"),
        (random_images(10), random_images(5, channels=3), r"C in \[1\]"),
    ],
    ids=["empty", "one-image", "no-channel-axis", "wrong-channels"],
)
def test_bad_image_sets_are_refused_clearly(real, generated, message):
    reference = QualityReference(small_referee(), real, torch.zeros(len(real), dtype=torch.long), kid_subsets=2)
    with pytest.raises(ValueError, match=message):
        reference.measure(generated)


def test_bad_feature_sets_and_references_are_refused_clearly():
    with pytest.raises(ValueError, match="differ in length"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        kernel_distance(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="one label per image"):
        QualityReference(small_referee(), random_images(10), torch.zeros(9, dtype=torch.long))
    reference = QualityReference(small_referee(), random_images(10), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="fewer than two images of the classes"):
        reference.measure(random_images(5), classes=[2])

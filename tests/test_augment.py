import pytest
import torch

from jdcl.augment import TwoViewAugmentation


def _images(channels: int, resolution: int, batch: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    # Smooth images with structure, so that crops and flips actually move content.
    ramp = torch.linspace(-1, 1, resolution)
    base = (ramp[None, :] * ramp[:, None].abs()).expand(batch, channels, resolution, resolution)
    return (base + 0.3 * torch.rand(batch, channels, resolution, resolution, generator=generator)).clamp(-1, 1)


@pytest.mark.parametrize("channels, resolution", [(1, 16), (3, 32), (1, 8)])
def test_views_shape_range_dtype_and_difference(channels, resolution):
    images = _images(channels, resolution)
    augment = TwoViewAugmentation(resolution, channels)
    torch.manual_seed(0)
    diffusion_view, classifier_view = augment(images)
    for view in (diffusion_view, classifier_view):
        assert view.shape == images.shape
        assert view.dtype == images.dtype and view.device == images.device
        assert view.min() >= -1.0 and view.max() <= 1.0
    assert not torch.allclose(diffusion_view, images)
    assert not torch.allclose(classifier_view, images)
    assert not torch.allclose(diffusion_view, classifier_view)
    # The diffusion view is mild (flip + 85-100% crop), the classifier view strong (RandAugment + Cutout).
    flipped_or_not = torch.minimum(
        (diffusion_view - images).abs().mean(dim=(1, 2, 3)),
        (diffusion_view - images.flip(-1)).abs().mean(dim=(1, 2, 3)),
    )
    assert flipped_or_not.mean() < (classifier_view - images).abs().mean()


def test_cutout_zeroes_a_square():
    images = torch.full((8, 3, 16, 16), 0.7)
    augment = TwoViewAugmentation(16, 3, classifier_crop_padding=0, randaugment_n=0, cutout_size=6)
    torch.manual_seed(0)
    _, classifier_view = augment(images)
    zeroed = classifier_view == 0.0
    assert torch.equal(zeroed[:, :1].expand_as(zeroed), zeroed)
    counts = zeroed[:, 0].sum(dim=(1, 2))
    assert (counts > 0).all() and (counts <= 36).all()
    assert torch.allclose(classifier_view[~zeroed], torch.tensor(0.7))


def test_disabled_returns_input():
    images = _images(3, 16)
    diffusion_view, classifier_view = TwoViewAugmentation(16, 3, enabled=False)(images)
    assert diffusion_view is images and classifier_view is images


@pytest.mark.parametrize("channels", [1, 3])
def test_deterministic_under_manual_seed(channels):
    images = _images(channels, 16)
    augment = TwoViewAugmentation(16, channels)
    torch.manual_seed(7)
    first = augment(images)
    torch.manual_seed(7)
    second = augment(images)
    torch.manual_seed(8)
    third = augment(images)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], third[1])


@pytest.mark.parametrize("group_size", [1, 8])
def test_grayscale_matches_rgb_of_repeated_gray(group_size):
    # The 1-channel path runs RandAugment on a 3-channel copy; it must equal augmenting the gray image as RGB.
    gray = _images(1, 16, batch=16)
    torch.manual_seed(3)
    _, gray_view = TwoViewAugmentation(16, 1, randaugment_group_size=group_size)(gray)
    torch.manual_seed(3)
    _, rgb_view = TwoViewAugmentation(16, 3, randaugment_group_size=group_size)(gray.expand(-1, 3, -1, -1))
    assert gray_view.shape == (16, 1, 16, 16)
    assert torch.allclose(rgb_view, rgb_view[:, :1].expand_as(rgb_view), atol=1e-5)
    assert torch.allclose(gray_view, rgb_view[:, :1], atol=1e-5)


def test_bad_inputs_raise():
    augment = TwoViewAugmentation(16, 1)
    with pytest.raises(ValueError, match=r"built for \[B, 1, 16, 16\]"):
        augment(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="floating point"):
        augment(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"images\[None\]"):
        augment(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="num_channels must be 1 or 3"):
        TwoViewAugmentation(16, 2)
    with pytest.raises(ValueError, match="diffusion_crop_scale"):
        TwoViewAugmentation(16, 1, diffusion_crop_scale=(0.9, 0.5))

import pytest
import torch

from jdcl.augment import TwoViewAugmentation
from jdcl.randaugment import FixMatchRandAugment


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


def _reflect_crops(images: torch.Tensor, padding: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(images, (padding,) * 4, mode="reflect")
    size = images.shape[-1]
    return [
        padded[..., top : top + size, left : left + size]
        for top in range(2 * padding + 1)
        for left in range(2 * padding + 1)
    ]


@pytest.mark.parametrize("horizontal_flip", [False, True])
def test_weak_view_is_a_reflect_padded_crop_flipped_only_when_asked(horizontal_flip):
    # The authors' weak view: RandomHorizontalFlip + RandomCrop(32, padding=4, padding_mode="reflect"), 2 at 16x16.
    images = _images(1, 16, batch=32)
    augment = TwoViewAugmentation(16, 1, horizontal_flip=horizontal_flip)
    torch.manual_seed(0)
    weak = augment.weak_view(images)
    crops = _reflect_crops(images, 2)
    flipped = _reflect_crops(images.flip(-1), 2)
    for index in range(len(images)):
        plain = any(torch.equal(weak[index], crop[index]) for crop in crops)
        mirrored = any(torch.equal(weak[index], crop[index]) for crop in flipped)
        assert plain or (horizontal_flip and mirrored)
    moved = [not torch.equal(weak[index], images[index]) for index in range(len(images))]
    assert sum(moved) > len(images) // 2
    if horizontal_flip:
        assert any(not any(torch.equal(weak[index], crop[index]) for crop in crops) for index in range(len(images))), (
            "no image was flipped"
        )


def test_strong_view_adds_randaugment_and_a_gray_cutout_to_a_weak_view():
    # A single gray level per image: the weak view keeps it; the strong view's Cutout (half the side) sets a clipped
    # square to mid-gray (0 in [-1, 1]) in every image, and its ops change the level of some.
    images = torch.linspace(-0.9, 0.9, 64).view(64, 1, 1, 1).expand(64, 1, 16, 16).contiguous()
    augment = TwoViewAugmentation(16, 1, horizontal_flip=False)
    torch.manual_seed(0)
    weak, strong = augment.weak_view(images), augment.strong_view(images)
    assert torch.equal(weak, images)
    zeroed = (strong == 0.0).flatten(1).sum(dim=1)
    assert (zeroed > 0).all() and (zeroed <= 8 * 8).all()
    kept = strong != 0.0
    changed = [not torch.allclose(strong[i][kept[i]], images[i][kept[i]], atol=1e-3) for i in range(len(images))]
    assert 0 < sum(changed) < len(images)  # each of two ops is applied with probability 1/2, one is Identity


def test_fixmatch_ops_on_hand_computed_cases():
    from jdcl import randaugment

    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(2, 1, 8, 8).contiguous()
    magnitudes, signs = torch.tensor([5.0, 9.0]), torch.tensor([1.0, -1.0])
    # Brightness: a blend with black at v * 0.9 / 10 + 0.05 (0.5 and 0.86).
    out = randaugment._brightness(ramp, magnitudes, signs)
    assert torch.allclose(out[0], ramp[0] * 0.5) and torch.allclose(out[1], ramp[1] * 0.86)
    # Solarize: levels at or above (256 - int(v * 25.6)) / 255 inverted (128 / 255 for v = 5).
    out = randaugment._solarize(ramp, magnitudes, signs)
    expected = torch.where(ramp[0] >= 128 / 255, 1 - ramp[0], ramp[0])
    assert torch.equal(out[0], expected)
    # TranslateX: int(v * 0.03 * 8) pixels (1 for v = 5, 2 for v = 9 the other way), black where the image leaves.
    out = randaugment._translate_x(ramp, magnitudes, signs)
    assert torch.allclose(out[0, ..., 1:], ramp[0, ..., :-1]) and (out[0, ..., 0] == 0).all()
    assert torch.allclose(out[1, ..., :-2], ramp[1, ..., 2:]) and (out[1, ..., -2:] == 0).all()
    # Posterize: int(v * 0.4) + 4 bits kept (6 and 7).
    out = randaugment._posterize(ramp, magnitudes, signs)
    assert torch.allclose(out[0], ((ramp[0] * 255).to(torch.uint8) & 0b11111100).float() / 255)
    # AutoContrast stretches each channel to [0, 1].
    out = randaugment._auto_contrast(ramp * 0.5 + 0.2, magnitudes, signs)
    assert torch.allclose(out, ramp, atol=1e-6)
    # No Invert in FixMatch's pool: 14 ops, Identity among them.
    assert len(randaugment.FIXMATCH_OPS) == 14 and None in randaugment.FIXMATCH_OPS


def test_fixmatch_randaugment_draws_ops_per_image_and_is_seeded():
    images = _images(3, 16, batch=1).expand(64, -1, -1, -1).contiguous().add(1).div(2)
    randaugment = FixMatchRandAugment()
    torch.manual_seed(5)
    first = randaugment(images)
    torch.manual_seed(5)
    assert torch.equal(first, randaugment(images))
    distinct = {tuple(image.flatten()[:64].tolist()) for image in first}
    assert len(distinct) > 10  # one image, many augmentations: the ops are drawn per image
    assert first.min() >= 0.0 and first.max() <= 1.0
    with pytest.raises(ValueError, match="2 <= m <= 10"):
        FixMatchRandAugment(m=30)

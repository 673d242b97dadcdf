"""FixMatch's RandAugment for a batch at once, on the images' device: a port of the op pool of the authors'
`dataloading/transforms/randaugment.py` (after kekmodel's FixMatch-pytorch) to kornia's functional ops."""

import torch
from kornia.enhance import equalize, posterize, sharpness
from kornia.geometry.transform import rotate, shear, translate


def _auto_contrast(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # PIL's `autocontrast`: each channel of each image stretched to [0, 1].
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    stretched = (images - low) / (high - low).clamp(min=1e-6)
    return torch.where(high > low, stretched, images)


def _enhance_factor(magnitudes: torch.Tensor) -> torch.Tensor:
    # The authors' `_float_parameter(v, 0.9) + 0.05` of PIL's `ImageEnhance` ops.
    return (magnitudes * 0.9 / 10 + 0.05).view(-1, 1, 1, 1)


def _gray(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    red, green, blue = images.unbind(dim=1)
    return (0.299 * red + 0.587 * green + 0.114 * blue).unsqueeze(1)


def _brightness(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # PIL's Brightness: a blend with black.
    return images * _enhance_factor(magnitudes)


def _color(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # PIL's Color: a blend with the image's own gray version (nothing to do on a gray image).
    gray = _gray(images)
    return (gray + _enhance_factor(magnitudes) * (images - gray)).clamp(0.0, 1.0)


def _contrast(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # PIL's Contrast: a blend with the mean gray level of the image.
    mean = _gray(images).mean(dim=(1, 2, 3), keepdim=True)
    return (mean + _enhance_factor(magnitudes) * (images - mean)).clamp(0.0, 1.0)


def _equalize(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return equalize(images)


def _posterize(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # `_int_parameter(v, 4) + 4` bits kept.
    return posterize(images, (magnitudes * 4 / 10).long() + 4)


def _rotate(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # `_int_parameter(v, 30)` degrees either way, about the centre, black outside (PIL's `rotate`).
    return rotate(images, (magnitudes * 30 / 10).floor() * signs, mode="nearest")


def _sharpness(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return sharpness(images, _enhance_factor(magnitudes).flatten())


def _shear(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor, axis: int) -> torch.Tensor:
    amounts = torch.zeros(len(images), 2, device=images.device, dtype=images.dtype)
    amounts[:, axis] = magnitudes * 0.3 / 10 * signs
    return shear(images, amounts, mode="nearest")


def _shear_x(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return _shear(images, magnitudes, signs, 0)


def _shear_y(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return _shear(images, magnitudes, signs, 1)


def _solarize(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # PIL's `solarize(img, 256 - _int_parameter(v, 256))`: levels at or above the threshold are inverted.
    threshold = ((256 - (magnitudes * 256 / 10).floor()) / 255).view(-1, 1, 1, 1)
    return torch.where(images >= threshold, 1.0 - images, images)


def _translate(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor, axis: int) -> torch.Tensor:
    # `int(_float_parameter(v, 0.3) * side)` pixels either way, black where the image leaves.
    pixels = torch.zeros(len(images), 2, device=images.device, dtype=images.dtype)
    pixels[:, axis] = (magnitudes * 0.3 / 10 * images.shape[3 - axis]).floor() * signs
    return translate(images, pixels, mode="nearest")


def _translate_x(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return _translate(images, magnitudes, signs, 0)


def _translate_y(images: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return _translate(images, magnitudes, signs, 1)


# FixMatch's pool (`fixmatch_augment_pool` of the authors' `dataloading/transforms/randaugment.py`): no Invert, no
# SolarizeAdd, no Cutout among the ops (Cutout comes after them, always). `None` is Identity.
FIXMATCH_OPS = (
    _auto_contrast,
    _brightness,
    _color,
    _contrast,
    _equalize,
    None,
    _posterize,
    _rotate,
    _sharpness,
    _shear_x,
    _shear_y,
    _solarize,
    _translate_x,
    _translate_y,
)


class FixMatchRandAugment(torch.nn.Module):
    r"""
    FixMatch's RandAugment, as the authors' semi-supervised runs use it (`RandAugmentMC(n=2, m=10)` in their
    `dataloading/transforms/randaugment.py`, after kekmodel's FixMatch-pytorch), for a batch at once: each image gets
    `n` ops drawn with replacement from [`FIXMATCH_OPS`], each with its own magnitude drawn uniformly from
    `1 .. m - 1` and applied with probability 1/2. Without the Cutout that ends `RandAugmentMC`
    ([`TwoViewAugmentation.strong_view`] adds it).

    The choices are drawn on the host from torch's global random generator (reproducible under `torch.manual_seed`),
    so that grouping the images by op never waits for the device.

    Args:
        n (`int`, *optional*, defaults to 2): Ops per image.
        m (`int`, *optional*, defaults to 10): The magnitudes' bound, on the authors' 0..10 scale (2..10).
    """

    def __init__(self, n: int = 2, m: int = 10):
        super().__init__()
        if n < 1 or not 2 <= m <= 10:
            raise ValueError(f"FixMatch's RandAugment needs n >= 1 and 2 <= m <= 10, got n={n}, m={m}.")
        self.n = n
        self.m = m

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images (`torch.Tensor`): Float images in [0, 1], shape `[B, C, H, W]` (C = 1 or 3).

        Returns:
            `torch.Tensor`: the augmented images, same shape, in [0, 1].
        """
        out = images.clone()
        batch = len(images)
        for _ in range(self.n):
            ops = torch.randint(0, len(FIXMATCH_OPS), (batch,))
            magnitudes = torch.randint(1, self.m, (batch,)).float()
            signs = torch.randint(0, 2, (batch,)).float() * 2 - 1
            applied = torch.rand(batch) < 0.5
            for index, op in enumerate(FIXMATCH_OPS):
                rows = ((ops == index) & applied).nonzero().flatten()
                if op is None or len(rows) == 0:
                    continue
                device_rows = rows.to(images.device)
                out[device_rows] = op(
                    out[device_rows], magnitudes[rows].to(images.device), signs[rows].to(images.device)
                ).to(out.dtype)
        return out

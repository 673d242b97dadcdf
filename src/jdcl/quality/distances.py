"""Fréchet distance and KID between two image sets, computed by torchmetrics on the features of an extractor.

Features are extracted once per image set and handed to torchmetrics through a pass-through module, so that the real
images' features serve every comparison (overall, per class, samples and rehearsal) without running the extractor
again.
"""

import warnings
from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ..tensor_data import uint8_to_model_range
from .extractors import FeatureExtractor


DEFAULT_KID_SUBSETS = 100
DEFAULT_KID_SUBSET_SIZE = 1000


class _PrecomputedFeatures(nn.Module):
    """What torchmetrics calls its feature extractor, for features that are already extracted: the identity."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def check_image_set(images: torch.Tensor, name: str) -> None:
    """Refuses what no distribution distance can be computed from: not `(N, C, H, W)`, or fewer than two images."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`{name}` must be a tensor of images (N, C, H, W) in [-1, 1], got {shape}.")
    if len(images) < 2:
        raise ValueError(
            f"`{name}` holds {len(images)} image(s); a distance between distributions needs at least two per set "
            "(and a few hundred for a stable estimate)."
        )


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    r"""
    The features of `images`, in float64 on the CPU.

    Args:
        extractor ([`FeatureExtractor`]): Maps images in [-1, 1] to features.
        images (`torch.Tensor`): `(N, C, H, W)` in [-1, 1] (float) or uint8 in [0, 255].
        batch_size (`int`, *optional*, defaults to 256): Images per forward.
    """
    if len(images) == 0:
        raise ValueError("`images` is empty; pass at least two images.")
    device = next(extractor.parameters(), torch.empty(0)).device
    features = []
    for chunk in images.split(batch_size):
        if chunk.dtype == torch.uint8:
            chunk = uint8_to_model_range(chunk)
        features.append(extractor(chunk.to(device)).double().cpu())
    return torch.cat(features)


def _check_features(real_features: torch.Tensor, generated_features: torch.Tensor) -> None:
    for name, features in (("real_features", real_features), ("generated_features", generated_features)):
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"`{name}` must be (N, D) with N >= 2, got shape {tuple(features.shape)}.")
    if real_features.shape[1] != generated_features.shape[1]:
        raise ValueError(
            f"The feature sets differ in length ({real_features.shape[1]} and {generated_features.shape[1]}); extract "
            "both with the same extractor."
        )


def frechet_distance(real_features: torch.Tensor, generated_features: torch.Tensor) -> float:
    r"""
    The Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's), by
    torchmetrics' `FrechetInceptionDistance`.

    Args:
        real_features (`torch.Tensor`): `(N, D)`.
        generated_features (`torch.Tensor`): `(M, D)`.
    """
    _check_features(real_features, generated_features)
    metric = FrechetInceptionDistance(feature=_PrecomputedFeatures(real_features.shape[1]))
    metric.update(real_features.double(), real=True)
    metric.update(generated_features.double(), real=False)
    return float(metric.compute())


def kernel_distance(
    real_features: torch.Tensor,
    generated_features: torch.Tensor,
    subsets: int = DEFAULT_KID_SUBSETS,
    subset_size: int = DEFAULT_KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    r"""
    The kernel distance (KID: the unbiased squared MMD with a cubic polynomial kernel) between two feature sets, its
    mean and standard deviation over random subsets, by torchmetrics' `KernelInceptionDistance`.

    Args:
        real_features (`torch.Tensor`): `(N, D)`.
        generated_features (`torch.Tensor`): `(M, D)`.
        subsets (`int`, *optional*, defaults to 100): Random subsets drawn.
        subset_size (`int`, *optional*, defaults to 1000): Their size, capped at the smaller set's.
        seed (`int`, *optional*, defaults to 0): Seeds the subsets (the caller's random state is left as it was).
    """
    _check_features(real_features, generated_features)
    subset_size = min(subset_size, len(real_features), len(generated_features))
    with warnings.catch_warnings():
        # It warns that it keeps every feature: these are.
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=_PrecomputedFeatures(real_features.shape[1]), subsets=subsets, subset_size=subset_size
        )
    metric.update(real_features.double(), real=True)
    metric.update(generated_features.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


class QualityReference:
    r"""
    Real images, with their features extracted once, to measure generated image sets against: overall and per class.

    Args:
        extractor ([`FeatureExtractor`]): The features the distances are computed on.
        images (`torch.Tensor`): Real images `(N, C, H, W)`, float in [-1, 1] or uint8.
        labels (`torch.Tensor`): Their labels `(N,)`.
        batch_size (`int`, *optional*, defaults to 256): Images per forward of the extractor.
        kid_subsets (`int`), kid_subset_size (`int`): See [`kernel_distance`].
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 256,
        kid_subsets: int = DEFAULT_KID_SUBSETS,
        kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE,
    ):
        check_image_set(images, "images")
        if len(labels) != len(images):
            raise ValueError(f"Got {len(images)} real images but {len(labels)} labels; pass one label per image.")
        self.extractor = extractor
        self.batch_size = batch_size
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.features = extract_features(extractor, images, batch_size)
        self.labels = labels.cpu().long()

    def measure(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, classes: Sequence[int] | None = None
    ) -> dict:
        r"""
        The distances of a generated set to the real images of `classes`: `fd`, `kid`, `kid_std`, and, given the
        generated images' labels, `per_class` Fréchet distances (`None` for a class with fewer than two images on
        either side).

        Args:
            images (`torch.Tensor`): Generated images `(M, C, H, W)` in [-1, 1].
            labels (`torch.Tensor`, *optional*): Their labels, for the per-class distances.
            classes (`Sequence[int]`, *optional*): The real classes to compare with; all of them when `None`.
        """
        check_image_set(images, "images")
        classes = sorted(self.labels.unique().tolist()) if classes is None else [int(c) for c in classes]
        real = self.features[torch.isin(self.labels, torch.tensor(classes))]
        if len(real) < 2:
            raise ValueError(f"The real images hold fewer than two images of the classes {classes}.")
        generated = extract_features(self.extractor, images, self.batch_size)
        kid, kid_std = kernel_distance(real, generated, self.kid_subsets, self.kid_subset_size)
        result = {"fd": frechet_distance(real, generated), "kid": kid, "kid_std": kid_std, "num_images": len(images)}
        if labels is not None:
            labels = labels.cpu().long()
            result["per_class"] = {}
            for class_index in classes:
                real_of_class = self.features[self.labels == class_index]
                generated_of_class = generated[labels == class_index]
                enough = len(real_of_class) >= 2 and len(generated_of_class) >= 2
                distance = frechet_distance(real_of_class, generated_of_class) if enough else None
                result["per_class"][str(class_index)] = distance
        return result


__all__ = ["QualityReference", "check_image_set", "extract_features", "frechet_distance", "kernel_distance"]

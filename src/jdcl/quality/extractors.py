"""Feature extractors for the image-set distances: each maps images in [-1, 1] to one feature vector per image."""

import logging

import torch
import torch.nn.functional as F
from torch import nn


logger = logging.getLogger(__name__)

DEFAULT_DINOV2_MODEL = "facebook/dinov2-base"
# DINOv2's own preprocessing (its `BitImageProcessor`): used when a model folder comes without a processor config.
_DINOV2_DEFAULT_PREPROCESSING = {
    "resize_to": 256,
    "crop_to": 224,
    "image_mean": (0.485, 0.456, 0.406),
    "image_std": (0.229, 0.224, 0.225),
}


class FeatureExtractor(nn.Module):
    r"""
    The interface of an extractor: `forward` maps images in [-1, 1], `(N, C, H, W)`, to features `(N, num_features)`.

    torchmetrics' `FrechetInceptionDistance` and `KernelInceptionDistance` read `num_features` instead of probing the
    module with a dummy image.

    Args:
        num_features (`int`): The length of one feature vector.
        in_channels (`tuple[int, ...]`): The channel counts the extractor accepts.
    """

    def __init__(self, num_features: int, in_channels: tuple[int, ...]):
        super().__init__()
        self.num_features = num_features
        self.in_channels = in_channels

    def check_images(self, images: torch.Tensor) -> None:
        """Refuses a batch that is not `(N, C, H, W)` with a channel count this extractor reads."""
        if images.ndim != 4 or images.shape[1] not in self.in_channels:
            raise ValueError(
                f"{type(self).__name__} reads images of shape (N, C, H, W) with C in {list(self.in_channels)}, got "
                f"shape {tuple(images.shape)}; pass images in [-1, 1] with the data set's channels."
            )


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey images repeated to three channels; RGB images as they are."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class DinoV2FeatureExtractor(FeatureExtractor):
    r"""
    The CLS embedding (`pooler_output`) of a DINOv2 backbone, the features that Stein et al. (NeurIPS 2023) recommend
    over Inception's for Fréchet distances.

    Images are preprocessed as DINOv2's image processor says: resized (bicubic) so that the short side is `resize_to`,
    centre-cropped to `crop_to`, normalised with the ImageNet mean and standard deviation.

    Args:
        model (`transformers.Dinov2Model`): The backbone.
        resize_to (`int`, *optional*, defaults to 256): The short side after resizing.
        crop_to (`int`, *optional*, defaults to 224): The side of the centre crop.
        image_mean (`tuple[float, float, float]`), image_std (`tuple[float, float, float]`): The normalisation.
    """

    def __init__(
        self,
        model: nn.Module,
        resize_to: int = 256,
        crop_to: int = 224,
        image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        image_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ):
        super().__init__(num_features=model.config.hidden_size, in_channels=(1, 3))
        self.model = model.eval().requires_grad_(False)
        self.resize_to, self.crop_to = resize_to, crop_to
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str = DEFAULT_DINOV2_MODEL, **kwargs) -> "DinoV2FeatureExtractor":
        r"""
        Loads a DINOv2 backbone and its preprocessing with `transformers`.

        Args:
            model_name_or_path (`str`, *optional*, defaults to `"facebook/dinov2-base"`): A Hub id (downloaded once
                into the Hub cache) or a local folder.
            kwargs: Passed to `AutoModel.from_pretrained` (e.g. `cache_dir`, `revision`).
        """
        try:
            from transformers import AutoImageProcessor, AutoModel
        except ModuleNotFoundError:
            raise ValueError(
                "The `dinov2` extractor needs transformers: `pip install jdcl[quality]` (or `pip install "
                "transformers`). Offline, measure with the `referee` extractor."
            ) from None

        try:
            model = AutoModel.from_pretrained(model_name_or_path, use_safetensors=True, **kwargs)
        except OSError as error:
            raise ValueError(
                f"The DINOv2 model {model_name_or_path!r} could not be loaded ({error}). Its weights are downloaded "
                "once from the Hub: run once with network access, or pass a local folder (`--quality_dinov2_model`), "
                "or measure with the offline `referee` extractor."
            ) from None
        if model.config.model_type != "dinov2":
            raise ValueError(f"{model_name_or_path!r} is a {model.config.model_type!r} model, not a DINOv2 one.")
        preprocessing = dict(_DINOV2_DEFAULT_PREPROCESSING)
        try:
            processor = AutoImageProcessor.from_pretrained(model_name_or_path, **kwargs)
        except OSError:
            logger.warning(f"{model_name_or_path!r} has no image processor; using DINOv2's default preprocessing.")
        else:
            preprocessing["resize_to"] = processor.size.get("shortest_edge", preprocessing["resize_to"])
            preprocessing["crop_to"] = processor.crop_size.get("height", preprocessing["crop_to"])
            preprocessing["image_mean"] = tuple(processor.image_mean)
            preprocessing["image_std"] = tuple(processor.image_std)
        return cls(model, **preprocessing)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        pixels = as_rgb(images.float()).add(1.0).div(2.0)
        height, width = pixels.shape[-2:]
        scale = self.resize_to / min(height, width)
        size = (round(height * scale), round(width * scale))
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
        top, left = (size[0] - self.crop_to) // 2, (size[1] - self.crop_to) // 2
        pixels = pixels[:, :, top : top + self.crop_to, left : left + self.crop_to]
        pixels = (pixels - self.image_mean) / self.image_std
        return self.model(pixel_values=pixels.to(self.model.dtype)).pooler_output


class InceptionFeatureExtractor(FeatureExtractor):
    r"""
    The 2048-d pool features of the Inception-v3 of published FID (torchmetrics' `NoTrainInceptionV3`, which resizes
    to 299 itself), for comparability with papers. Needs `torch-fidelity` and its weights, downloaded once from
    GitHub.
    """

    def __init__(self):
        super().__init__(num_features=2048, in_channels=(1, 3))
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
        except ModuleNotFoundError:
            raise ValueError(
                "The `inception` extractor needs torch-fidelity: `pip install jdcl[quality]` (or `pip install "
                "torch-fidelity`; its weights are then downloaded once from GitHub). Offline, measure with the "
                "`referee` extractor."
            ) from None
        except Exception as error:  # a failed download surfaces as whatever urllib raised
            raise ValueError(
                f"The Inception weights could not be downloaded ({type(error).__name__}: {error}); they are fetched "
                "once from GitHub into torch's hub cache. Offline, measure with the `referee` extractor."
            ) from None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        pixels = as_rgb(images.float()).add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        return self.inception(pixels)


__all__ = ["DEFAULT_DINOV2_MODEL", "DinoV2FeatureExtractor", "FeatureExtractor", "InceptionFeatureExtractor"]

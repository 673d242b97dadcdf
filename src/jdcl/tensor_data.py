"""Image-classification splits converted once to in-memory uint8 tensors (cached by `datasets`), and their subsets."""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image
import torch

from .data import labels_of


logger = logging.getLogger(__name__)

_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


def images_to_tensor(images: list[PIL.Image.Image], resolution: int, num_channels: int) -> torch.Tensor:
    """
    Converts PIL images to one uint8 tensor, converting the colour mode and resizing.

    Args:
        images (`list[PIL.Image.Image]`): The images, of any size and mode.
        resolution (`int`): Side of the square output images.
        num_channels (`int`): 1 (grayscale, mode "L") or 3 (mode "RGB").

    Returns:
        `torch.Tensor`: uint8 tensor of shape `[N, num_channels, resolution, resolution]`.
    """
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels}. Pass --num_channels 1 or 3.")
    if resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution}. Pass e.g. --resolution 32.")
    mode = "L" if num_channels == 1 else "RGB"
    size = (resolution, resolution)
    arrays = []
    for image in images:
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != size:
            # PIL's bilinear filter widens its support when downsampling, i.e. it antialiases.
            image = image.resize(size, resample=PIL.Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if num_channels == 1 else array.transpose(2, 0, 1))
    if not arrays:
        return torch.empty((0, num_channels, resolution, resolution), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays))


def uint8_to_model_range(images: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    r"""
    uint8 images in [0, 255] as float32 in [-1, 1], the range every jdcl model reads.

    Args:
        images (`torch.Tensor`): uint8 `(N, C, H, W)` images.
        device (`str` or `torch.device`, *optional*): Where the result lives; the uint8 images travel there first, as
            they are a quarter of the float's size. Unchanged when `None`.
    """
    return images.to(device).float().div(127.5).sub(1.0)


@dataclass
class TensorData:
    """
    A whole split held in memory as uint8 images and int64 labels.

    Args:
        images (`torch.Tensor`): uint8 tensor of shape `[N, C, H, W]`.
        labels (`torch.Tensor`): int64 tensor of shape `[N]`.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 tensor [N, C, H, W], got {self.images.dtype} with shape "
                f"{tuple(self.images.shape)}. Build it with `images_to_tensor` or `prepare_tensors`."
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(
                f"labels must be an int64 tensor [N], got {self.labels.dtype} with shape {tuple(self.labels.shape)}. "
                "Convert them with `.long()`."
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"Got {len(self.images)} images but {len(self.labels)} labels. Pass one label per image.")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, classes: Sequence[int]) -> "TensorData":
        """
        Keeps only the examples whose label is in `classes`.

        Args:
            classes (`Sequence[int]`): The class indices to keep.

        Returns:
            [`TensorData`]: the selected examples, in their original order.
        """
        wanted = torch.as_tensor(list(classes), dtype=torch.int64)
        mask = torch.isin(self.labels, wanted)
        if not bool(mask.any()):
            # One message for every split: the trainer subsets the training split, and the test split to evaluate.
            raise ValueError(
                f"No example of this split has a label in {list(classes)} (labels present: "
                f"{torch.unique(self.labels).tolist()}), so a task of those classes has nothing to train or evaluate "
                "on. Choose a --class_order of classes present in the data's training and test splits."
            )
        return TensorData(images=self.images[mask], labels=self.labels[mask])

    def select(self, mask: torch.Tensor) -> "TensorData":
        """
        Keeps the examples where `mask` (bool, one per example) is `True`, in their original order.

        Args:
            mask (`torch.Tensor`): Which examples to keep.
        """
        return TensorData(images=self.images[mask], labels=self.labels[mask])

    def images_of(self, classes: Sequence[int]) -> torch.Tensor:
        """The images of the examples of `classes` (possibly none), without their labels."""
        return self.images[torch.isin(self.labels, torch.as_tensor(list(classes), dtype=torch.int64))]

    def to_float(self) -> torch.Tensor:
        """
        Returns:
            `torch.Tensor`: the images as float32 in [-1, 1].
        """
        return uint8_to_model_range(self.images)


def infer_num_channels(dataset: datasets.Dataset, image_column: str) -> int:
    """
    Guesses the channel count of a data set from its first image.

    Args:
        dataset (`datasets.Dataset`): The split to look at.
        image_column (`str`): The column holding the images.

    Returns:
        `int`: 1 if the first image is grayscale (modes "1", "L", "LA", "I", "F"), else 3.
    """
    if len(dataset) == 0:
        raise ValueError("Cannot infer the number of channels of an empty split. Pass --num_channels explicitly.")
    if image_column not in dataset.features:
        raise ValueError(
            f"Column '{image_column}' not found; available columns: {list(dataset.features.keys())}. "
            "Pass --image_column with one of them."
        )
    return 1 if dataset[0][image_column].mode in _GRAYSCALE_MODES else 3


def prepare_tensors(
    dataset: datasets.Dataset,
    image_column: str,
    label_column: str,
    resolution: int,
    num_channels: int,
    batch_size: int = 1000,
    show_progress: bool = True,
    cache_dir: str | None = None,
) -> TensorData:
    """
    Decodes and resizes a whole split once into uint8 tensors, through `datasets.Dataset.map`.

    The converted images are cached on disk (keyed by the split's fingerprint, the resolution and the channels), so
    that the processes of a run and later runs read them instead of decoding again. Converting once is deliberate:
    the targeted data sets fit in memory as uint8, and decoding PIL images at every training step would dominate CPU
    training time.

    Args:
        dataset (`datasets.Dataset`): The split to convert.
        image_column (`str`): The column holding the images.
        label_column (`str`): The column holding integer class indices.
        resolution (`int`): Side of the square output images.
        num_channels (`int`): 1 or 3.
        batch_size (`int`, *optional*, defaults to 1000): Rows decoded at a time.
        show_progress (`bool`, *optional*, defaults to `True`): Whether to show a progress bar.
        cache_dir (`str`, *optional*, defaults to `None`):
            The `datasets` cache folder; the converted images go to its `jdcl-images/` (the default cache of
            `datasets` when `None`). Nothing is cached when `datasets` caching is disabled.

    Returns:
        [`TensorData`]: the images (uint8 `[N, C, resolution, resolution]`) and labels (int64 `[N]`).
    """
    for column, flag in ((image_column, "--image_column"), (label_column, "--label_column")):
        if column not in dataset.features:
            raise ValueError(
                f"Column '{column}' not found; available columns: {list(dataset.features.keys())}. "
                f"Pass {flag} with one of them."
            )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    images_to_tensor([], resolution, num_channels)  # checks the resolution and channels before any decoding
    labels = torch.from_numpy(labels_of(dataset, label_column))
    if len(dataset) == 0:
        return TensorData(
            images=torch.empty((0, num_channels, resolution, resolution), dtype=torch.uint8), labels=labels
        )

    def convert(images: list[PIL.Image.Image]) -> dict[str, np.ndarray]:
        return {"pixel_values": images_to_tensor(images, resolution, num_channels).numpy()}

    cache_file_name = None
    if datasets.is_caching_enabled():
        folder = os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE, "jdcl-images")
        os.makedirs(folder, exist_ok=True)
        cache_file_name = os.path.join(folder, f"{dataset._fingerprint}-{resolution}px-{num_channels}ch.arrow")
    bars_were_disabled = datasets.are_progress_bars_disabled()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        converted = dataset.select_columns([image_column]).map(
            convert,
            batched=True,
            batch_size=batch_size,
            input_columns=[image_column],
            remove_columns=[image_column],
            features=datasets.Features(
                {"pixel_values": datasets.Array3D(shape=(num_channels, resolution, resolution), dtype="uint8")}
            ),
            cache_file_name=cache_file_name,
            load_from_cache_file=cache_file_name is not None,
            desc="Decoding and resizing images",
        )
    finally:
        if not bars_were_disabled:
            datasets.enable_progress_bars()
    # Formatters widen integers to int64 unless told otherwise.
    pixels = converted.with_format("numpy", dtype=np.uint8)[:]["pixel_values"]
    images = torch.from_numpy(np.ascontiguousarray(pixels))
    return TensorData(images=images, labels=labels)

# Copyright 2026 The jdcl authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""What the pipeline accepts: sampling settings, generators and images, checked with errors that say what to change."""

import math
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor


ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | Sequence[PIL.Image.Image] | Sequence[np.ndarray]


def check_sampling_arguments(
    batch_size: int, num_inference_steps: int, guidance_scale: float = 0.0, eta: float = 0.0
) -> None:
    r"""
    Refuses sampling settings that would reach the maths as nonsense (NaN images, a cryptic error deep in torch).

    Args:
        batch_size (`int`): Images at once, >= 1.
        num_inference_steps (`int`): Denoising steps, >= 1.
        guidance_scale (`float`, *optional*, defaults to 0.0): Classifier guidance, finite and >= 0.
        eta (`float`, *optional*, defaults to 0.0): DDIM's eta, in [0, 1].
    """
    for name, value in (("batch_size", batch_size), ("num_inference_steps", num_inference_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    for name, value, high in (("guidance_scale", guidance_scale, None), ("eta", eta, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        if value < 0 or (high is not None and value > high):
            raise ValueError(f"`{name}` must be >= 0{f' and <= {high}' if high is not None else ''}, got {value!r}.")


def check_generator(generator, batch_size: int) -> None:
    r"""
    Refuses a `generator` that is neither one `torch.Generator` nor a list of one per image.

    Args:
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): The argument.
        batch_size (`int`): The number of images.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(
            f"`generator` must be a `torch.Generator` or a list of them, got {type(generator).__name__}"
            f"{'' if not isinstance(generator, (list, tuple)) else ' holding other things'}; pass e.g. "
            "`torch.Generator().manual_seed(0)`."
        )
    if len(generator) != batch_size:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators but {batch_size} images are generated; pass one "
            "generator per image, or a single generator."
        )


def is_class_index(value) -> bool:
    """Whether `value` is a class index: an int, or a number equal to one (a float label, a numpy or torch scalar);
    never None or a bool."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return int(value) == value
    except (TypeError, ValueError):
        return False


def _stack_image_list(images: Sequence) -> np.ndarray | torch.Tensor:
    # A list is one kind of image (PIL images are converted before): arrays or tensors of one shape each.
    kinds = sorted({type(image).__name__ for image in images})
    if len(kinds) > 1:
        raise ValueError(
            f"`images` mixes {kinds}; pass one kind: a list of PIL images, a list of numpy arrays, or one array or "
            "tensor."
        )
    if not isinstance(images[0], (np.ndarray, torch.Tensor)):
        raise ValueError(f"Cannot classify images of type {kinds[0]}; pass PIL images, numpy arrays or torch tensors.")
    shapes = sorted({tuple(image.shape) for image in images})
    if len(shapes) > 1:
        raise ValueError(
            f"`images` holds images of different shapes {shapes[:4]}; resize them to one size (or pass PIL images, "
            "which are resized to the model's)."
        )
    if isinstance(images[0], torch.Tensor):
        return torch.stack(list(images))
    return np.stack(images)


def images_to_unit_range_tensor(
    images: ImageInput, image_shape: tuple[int, int, int], image_processor: VaeImageProcessor
) -> torch.Tensor:
    r"""
    Images in the pipeline's output convention as one float tensor in [0, 1], checked against the model's shape.

    Args:
        images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of PIL images or arrays):
            See [`~JDCLPipeline.preprocess_images`].
        image_shape (`tuple[int, int, int]`): The model's `(channels, height, width)`; PIL images are resized and
            converted to it.
        image_processor (`VaeImageProcessor`): Converts PIL images to arrays.

    Returns:
        `torch.Tensor` of shape `(batch, channels, height, width)` in [0, 1].
    """
    channels, height, width = image_shape
    if isinstance(images, PIL.Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)) and len(images) == 0:
        raise ValueError("No images to classify: pass at least one image.")
    if isinstance(images, (list, tuple)) and all(isinstance(image, PIL.Image.Image) for image in images):
        mode = "L" if channels == 1 else "RGB"
        images = [
            image.convert(mode).resize((width, height), PIL.Image.Resampling.BILINEAR)
            if image.size != (width, height)
            else image.convert(mode)
            for image in images
        ]
        images = image_processor.pil_to_numpy(images)
        if images.ndim == 3:
            images = images[..., None]
    if isinstance(images, (list, tuple)):
        images = _stack_image_list(images)
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"Numpy images must be (batch, height, width, channels), got shape {images.shape}.")
        if images.shape[-1] != channels and images.shape[1] == channels:
            raise ValueError(
                f"Numpy images of shape {images.shape} look channels-first; numpy images are channels-last, "
                "(batch, height, width, channels), as `output_type='np'` gives them. Pass "
                "`images.transpose(0, 2, 3, 1)`, or a torch tensor (channels-first)."
            )
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"Cannot classify images of type {type(images).__name__}; pass PIL images, numpy or torch.")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"Image tensors must be (batch, channels, height, width), got shape {tuple(images.shape)}.")
    if len(images) == 0:
        raise ValueError("No images to classify: `images` holds an empty batch; pass at least one image.")
    if images.shape[1] != channels:
        hint = (
            " They look channels-last; tensors are channels-first: pass `images.permute(0, 3, 1, 2)`."
            if images.shape[-1] == channels
            else ""
        )
        raise ValueError(
            f"`images` of shape {tuple(images.shape)} have {images.shape[1]} channels but the model expects "
            f"{channels}.{hint}"
        )
    if images.dtype == torch.uint8:
        raise ValueError("Images are uint8; pass floats in [0, 1] (divide by 255) as the pipeline outputs them.")
    if not images.is_floating_point():
        raise ValueError(f"Images must be floats in [0, 1], got dtype {images.dtype}.")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("`images` hold NaN or infinite values; pass finite floats in [0, 1].")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(
            "Image values must be in [0, 1], the pipeline's output convention; got values in "
            f"[{images.min().item():.3f}, {images.max().item():.3f}]. Map [-1, 1] images with (x + 1) / 2."
        )
    return images.float()

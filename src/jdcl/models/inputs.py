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
"""What the joint model accepts as images: checked before any layer runs, with errors that say what to change."""

from typing import Any

import torch


def check_sample(config: Any, sample: torch.Tensor, name: str, require_sample_size: bool) -> None:
    r"""
    Refuses a batch the joint model cannot read: not 4D, other channels, a size the UNet cannot halve, or (for the
    classifier, whose pooled features are sized for it) another size than the model's `sample_size`.

    Args:
        config: The model's configuration (`in_channels`, `block_out_channels`, `sample_size`).
        sample (`torch.Tensor`): The batch, `(batch, channels, height, width)`.
        name (`str`): The argument's name, for errors.
        require_sample_size (`bool`): Whether the batch must be `sample_size` (what the classifier reads).
    """
    if sample.ndim != 4:
        raise ValueError(
            f"`{name}` must be a 4D tensor (batch, channels, height, width), got shape {tuple(sample.shape)}."
        )
    if sample.shape[1] != config.in_channels:
        raise ValueError(
            f"`{name}` has {sample.shape[1]} channels but the model expects {config.in_channels}; convert the "
            f"images to {'grayscale' if config.in_channels == 1 else f'{config.in_channels} channels'} first."
        )
    height, width = sample.shape[-2:]
    factor = 2 ** (len(config.block_out_channels) - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"`{name}` is {height}x{width}, but this UNet halves the resolution {len(config.block_out_channels) - 1}"
            f" times, so height and width must be multiples of {factor}; resize the images."
        )
    sample_size = config.sample_size
    if require_sample_size and sample_size is not None:
        expected = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        if (height, width) != expected:
            raise ValueError(
                f"`{name}` is {height}x{width} but the classifier was built for {expected[0]}x{expected[1]} images;"
                f" resize the images to {expected[0]}x{expected[1]}."
            )

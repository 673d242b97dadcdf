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
"""What the joint model returns."""

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class JointUNet2DOutput(BaseOutput):
    """
    The output of [`JointUNet2DModel.joint_forward`].

    Args:
        sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The noise prediction for the noisy input.
        logits (`torch.Tensor` of shape `(batch_size, num_classes)`):
            The class logits for the clean input, read from the encoder at timestep 0.
    """

    sample: torch.Tensor
    logits: torch.Tensor


@dataclass
class JointUNet2DEncoderOutput(BaseOutput):
    """
    What the encoder half of [`JointUNet2DModel`] hands to the decoder half and to the classifier.

    Args:
        hidden_states (`torch.Tensor`):
            The mid-block output (or the last down-block output when there is no mid block).
        down_block_res_samples (`tuple[torch.Tensor, ...]`):
            The `conv_in` output and every down-block resnet/attention/downsampler output, the UNet's skip connections.
        emb (`torch.Tensor`):
            The timestep (plus class) embedding.
        timesteps (`torch.Tensor`):
            The timesteps, one per example.
        skip_sample (`torch.Tensor`, *optional*):
            The running skip sample of `Skip*` down blocks, `None` otherwise.
    """

    hidden_states: torch.Tensor
    down_block_res_samples: tuple[torch.Tensor, ...]
    emb: torch.Tensor
    timesteps: torch.Tensor
    skip_sample: torch.Tensor | None = None

    def select(self, batch_slice: slice) -> "JointUNet2DEncoderOutput":
        """The same output for the examples `batch_slice` selects."""
        return JointUNet2DEncoderOutput(
            hidden_states=self.hidden_states[batch_slice],
            down_block_res_samples=tuple(state[batch_slice] for state in self.down_block_res_samples),
            emb=self.emb[batch_slice],
            timesteps=self.timesteps[batch_slice],
            skip_sample=None if self.skip_sample is None else self.skip_sample[batch_slice],
        )

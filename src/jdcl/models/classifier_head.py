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
"""The classification side of the joint model: its head, and the masking of classes not seen yet."""

from collections.abc import Sequence

import torch
import torch.nn as nn


class JointClassifierHead(nn.Module):
    r"""
    The JDCL classification head: `Linear -> LeakyReLU(0.2) -> Dropout -> Linear` over pooled encoder features.

    Args:
        in_features (`int`): Size of the concatenated pooled encoder features.
        hidden_dim (`int`): Width of the hidden layer.
        num_classes (`int`): Number of output classes (all classes of the continual run, seen or not).
        dropout (`float`): Dropout probability after the hidden activation.
    """

    def __init__(self, in_features: int, hidden_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_dim)
        self.act = nn.LeakyReLU(0.2)
        self.dropout = nn.Dropout(dropout)
        self.linear_2 = nn.Linear(hidden_dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.linear_1(features)
        hidden_states = self.act(hidden_states)
        hidden_states = self.dropout(hidden_states)
        return self.linear_2(hidden_states)


def class_mask(classes: Sequence[int], num_classes: int, device: torch.device | str | None = None) -> torch.Tensor:
    r"""
    A boolean mask over a head of `num_classes` that is `True` on `classes`; refuses classes outside the head.

    Args:
        classes (`Sequence[int]`): The allowed class indices (for example the classes seen so far).
        num_classes (`int`): The size of the head.
        device (`torch.device`, *optional*): Where the mask lives.
    """
    classes = [int(class_index) for class_index in classes]
    if len(classes) == 0:
        raise ValueError("`classes` is empty; pass the classes to predict among, or None for all classes.")
    unknown = sorted({class_index for class_index in classes if not 0 <= class_index < num_classes})
    if unknown:
        raise ValueError(
            f"Unknown classes {unknown}: this model has classes 0..{num_classes - 1}. Pass class indices in range."
        )
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    mask[classes] = True
    return mask


def mask_logits(logits: torch.Tensor, classes: Sequence[int] | None) -> torch.Tensor:
    r"""
    Logits with every class outside `classes` set to `-inf`: the single head of class-incremental learning, which
    predicts among the classes seen so far only. The one place where jdcl masks classes (evaluation, rehearsal
    labelling, guidance and the pipeline's `classify`).

    Args:
        logits (`torch.Tensor` of shape `(batch, num_classes)`): Logits over the whole head.
        classes (`Sequence[int]`, *optional*): The allowed classes; `logits` unchanged when `None`.
    """
    if classes is None:
        return logits
    return logits.masked_fill(~class_mask(classes, logits.shape[-1], logits.device), float("-inf"))

"""What a training stage samples from: real images, generated rehearsal, a replay buffer, unlabelled images."""

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .rehearsal import RehearsalSet
from .tensor_data import TensorData, uint8_to_model_range


@dataclass
class StageBatch:
    r"""
    A training batch.

    Args:
        images (`torch.Tensor`): `(B, C, H, W)` float in [-1, 1], on the device.
        labels (`torch.Tensor`): `(B,)`.
        is_old (`torch.Tensor`): `(B,)` bool; whether each sample is rehearsal of a class of an earlier task. It stays
            on the host: the global stage splits the batch by it, which would otherwise wait for the device.
        unlabeled_images (`torch.Tensor`, *optional*): `(B * ratio, C, H, W)` unlabelled images in [-1, 1]
            (semi-supervised stages).
        unlabeled_labels (`torch.Tensor`, *optional*): `(B * ratio,)` their true labels, on the device, for measuring
            the pseudo-labels only: no loss reads them.
        fields (`dict[str, torch.Tensor]`, *optional*): A method's own values of the rows drawn from the buffer, by
            name (e.g. the logits stored with each image), on the device. The buffer's rows are the batch's last
            `len(value)` rows.
    """

    images: torch.Tensor
    labels: torch.Tensor
    is_old: torch.Tensor
    unlabeled_images: torch.Tensor | None = None
    unlabeled_labels: torch.Tensor | None = None
    fields: dict[str, torch.Tensor] = field(default_factory=dict)


class StageData:
    r"""
    The data one stage samples from: real images and/or generated rehearsal, drawn uniformly, and optionally a
    buffer of stored real images that fills a fixed share of every batch (experience replay).

    Real images stay uint8 until a batch is on the device. Batches are drawn from a generator seeded by the step, so
    a resumed stage sees exactly the batches the killed one would have seen, with no data-loader state to save.

    Args:
        real ([`TensorData`], *optional*): Real training images of the stage's classes.
        rehearsal ([`RehearsalSet`], *optional*): Generated images.
        buffer ([`TensorData`], *optional*): Stored real images of earlier classes (rehearsal, `is_old`).
        buffer_fraction (`float`, *optional*, defaults to 0.5): The share of every batch drawn from `buffer`.
        buffer_fields (`Mapping[str, torch.Tensor]`, *optional*): A method's own values of each buffer image, by name
            (one row per image of `buffer`); a batch carries those of its buffer rows in [`StageBatch.fields`].
        unlabeled ([`TensorData`], *optional*): The images the stage learns from without their labels (semi-supervised
            stages): every batch then comes with `unlabeled_batch_ratio` times as many of them. As in the authors'
            `dataloading/splitting/ssl_split.py`, this is all of the task's images, the labelled ones included. Their
            labels only measure the pseudo-labels (see [`StageBatch`]).
        unlabeled_batch_ratio (`int`, *optional*, defaults to 7): The size of the unlabelled batch, in labelled ones.
    """

    def __init__(
        self,
        real: TensorData | None = None,
        rehearsal: RehearsalSet | None = None,
        buffer: TensorData | None = None,
        buffer_fraction: float = 0.5,
        unlabeled: TensorData | None = None,
        unlabeled_batch_ratio: int = 7,
        buffer_fields: Mapping[str, torch.Tensor] | None = None,
    ):
        real = real if real is not None and len(real) else None
        rehearsal = rehearsal if rehearsal is not None and len(rehearsal) else None
        if real is None and rehearsal is None:
            raise ValueError("A training stage has no data: the task has no examples and no rehearsal was generated.")
        if not 0 < buffer_fraction < 1:
            raise ValueError(f"`buffer_fraction` must be between 0 and 1, got {buffer_fraction}.")
        self.real_images = real.images if real is not None else None
        self.rehearsal_images = rehearsal.images.float() if rehearsal is not None else None
        self.num_real = len(real) if real is not None else 0
        labels = [part.labels for part in (real, rehearsal) if part is not None]
        is_old = [torch.zeros(self.num_real, dtype=torch.bool)] + ([rehearsal.is_old] if rehearsal is not None else [])
        self.labels = torch.cat(labels)
        self.is_old = torch.cat(is_old)
        self.buffer = buffer if buffer is not None and len(buffer) else None
        self.buffer_fraction = buffer_fraction
        self.buffer_fields = dict(buffer_fields or {}) if self.buffer is not None else {}
        for name, values in self.buffer_fields.items():
            if len(values) != len(self.buffer):
                raise ValueError(
                    f"The buffer field {name!r} has {len(values)} rows for {len(self.buffer)} buffer images; give one "
                    "row per image."
                )
        self.unlabeled = unlabeled if unlabeled is not None and len(unlabeled) else None
        self.unlabeled_batch_ratio = unlabeled_batch_ratio

    @property
    def unlabeled_classes(self) -> torch.Tensor | None:
        """The classes of the unlabelled images (measurement only: which pseudo-labels name a class of another task)."""
        return self.unlabeled.labels.unique() if self.unlabeled is not None else None

    def __len__(self) -> int:
        return self.labels.numel()

    def sample(self, batch_size: int, generator: torch.Generator, device: torch.device) -> StageBatch:
        if self.buffer is None:
            batch = self._sample(batch_size, generator, device)
        else:
            num_buffer = round(batch_size * self.buffer_fraction)
            batch = self._sample(batch_size - num_buffer, generator, device)
            indices = torch.randint(0, len(self.buffer), (num_buffer,), generator=generator)
            batch = StageBatch(
                images=torch.cat([batch.images, uint8_to_model_range(self.buffer.images[indices], device)]),
                labels=torch.cat([batch.labels, self.buffer.labels[indices].to(device)]),
                is_old=torch.cat([batch.is_old, torch.ones(num_buffer, dtype=torch.bool)]),
                fields={name: values[indices].to(device) for name, values in self.buffer_fields.items()},
            )
        if self.unlabeled is not None:
            indices = torch.randint(
                0, len(self.unlabeled), (batch_size * self.unlabeled_batch_ratio,), generator=generator
            )
            batch.unlabeled_images = uint8_to_model_range(self.unlabeled.images[indices], device)
            batch.unlabeled_labels = self.unlabeled.labels[indices].to(device)
        return batch

    def _sample(self, batch_size: int, generator: torch.Generator, device: torch.device) -> StageBatch:
        indices = torch.randint(0, len(self), (batch_size,), generator=generator)
        from_real = indices < self.num_real
        if bool(from_real.all()):
            images = uint8_to_model_range(self.real_images[indices], device)
        elif not bool(from_real.any()):
            images = self.rehearsal_images[indices - self.num_real].to(device)
        else:
            # Rows as index tensors made on the host: a boolean mask on the device would wait for it to count rows.
            real_rows, generated_rows = from_real.nonzero().flatten(), (~from_real).nonzero().flatten()
            images = torch.empty((batch_size, *self.rehearsal_images.shape[1:]), device=device)
            images[real_rows.to(device)] = uint8_to_model_range(self.real_images[indices[real_rows]], device)
            images[generated_rows.to(device)] = self.rehearsal_images[indices[generated_rows] - self.num_real].to(
                device
            )
        return StageBatch(images=images, labels=self.labels[indices].to(device), is_old=self.is_old[indices])

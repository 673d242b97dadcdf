"""A buffer of real images kept across tasks, for experience replay: the baseline that stores data instead of
generating it.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .atomic import atomic_file
from .data import TensorData
from .paths import read_safetensors


BUFFER_POLICIES = ("class_balanced", "reservoir")


@dataclass
class ReplayBuffer:
    r"""
    At most `capacity` real training images (uint8) with their labels.

    Args:
        images (`torch.Tensor`): uint8 `(N, C, H, W)`.
        labels (`torch.Tensor`): int64 `(N,)`.
        num_seen (`int`): Examples offered to the buffer so far (the reservoir policy's stream position).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_seen: int = 0

    def __len__(self) -> int:
        return self.labels.numel()

    @classmethod
    def empty(cls, image_shape: tuple[int, ...]) -> "ReplayBuffer":
        return cls(images=torch.empty((0, *image_shape), dtype=torch.uint8), labels=torch.empty(0, dtype=torch.long))

    def as_data(self) -> TensorData:
        return TensorData(images=self.images, labels=self.labels)

    def summary(self) -> dict:
        """What `metrics.json` records of the buffer after a task: its size and its images per class."""
        return {
            "stored": len(self),
            "per_class": {str(c): int((self.labels == c).sum()) for c in self.labels.unique().tolist()},
        }

    def updated(self, new: TensorData, capacity: int, policy: str, seed: int) -> "ReplayBuffer":
        r"""
        The buffer after a task's examples are offered to it.

        Args:
            new ([`TensorData`]): The task's (labelled) training examples, in data-set order.
            capacity (`int`): The most images the buffer keeps.
            policy (`str`): `"class_balanced"`: every class seen so far keeps an equal share (the first classes one
                more when it does not divide), drawn at random from what the buffer and the task hold of it.
                `"reservoir"`: reservoir sampling over the stream of examples, so every example seen so far is in the
                buffer with the same probability.
            seed (`int`): Seeds the random choices (the same run keeps the same buffer).
        """
        if policy not in BUFFER_POLICIES:
            raise ValueError(f"`buffer_policy` must be one of {list(BUFFER_POLICIES)}, got {policy!r}.")
        generator = torch.Generator().manual_seed(seed)
        if policy == "reservoir":
            images, labels = list(self.images), self.labels.tolist()
            num_seen = self.num_seen
            for image, label in zip(new.images, new.labels.tolist()):
                if len(labels) < capacity:
                    images.append(image)
                    labels.append(label)
                else:
                    slot = int(torch.randint(0, num_seen + 1, (1,), generator=generator))
                    if slot < capacity:
                        images[slot], labels[slot] = image, label
                num_seen += 1
            return ReplayBuffer(torch.stack(images), torch.tensor(labels, dtype=torch.long), num_seen)

        pool_images = torch.cat([self.images, new.images])
        pool_labels = torch.cat([self.labels, new.labels])
        classes = sorted(pool_labels.unique().tolist())
        keep = []
        for rank, class_index in enumerate(classes):
            share = capacity // len(classes) + (1 if rank < capacity % len(classes) else 0)
            members = (pool_labels == class_index).nonzero().flatten()
            chosen = members[torch.randperm(len(members), generator=generator)[:share]]
            keep.append(chosen.sort().values)
        keep = torch.cat(keep)
        return ReplayBuffer(pool_images[keep], pool_labels[keep], self.num_seen + len(new))

    def save(self, path: str | Path) -> None:
        """Writes the buffer to a safetensors file, atomically."""
        state = {"images": self.images.contiguous(), "labels": self.labels, "num_seen": torch.tensor(self.num_seen)}
        with atomic_file(path) as temporary:
            save_file(state, temporary)

    @classmethod
    def load(cls, path: str | Path) -> "ReplayBuffer":
        """Reads a buffer written by [`~ReplayBuffer.save`]."""
        state = read_safetensors(
            path,
            "The images it stored are lost: restore the file, or start the run again in a new --output_dir",
        )
        return cls(images=state["images"], labels=state["labels"], num_seen=int(state["num_seen"]))

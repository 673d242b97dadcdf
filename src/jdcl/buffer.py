"""A buffer of real images kept across tasks, for experience replay: the baseline that stores data instead of
generating it.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from .atomic import atomic_file
from .paths import read_safetensors
from .tensor_data import TensorData


BUFFER_POLICIES = ("class_balanced", "reservoir")


@dataclass
class ReplayBuffer:
    r"""
    At most `capacity` real training images (uint8) with their labels.

    Args:
        images (`torch.Tensor`): uint8 `(N, C, H, W)`.
        labels (`torch.Tensor`): int64 `(N,)`.
        num_seen (`int`): Examples offered to the buffer so far (the reservoir policy's stream position).
        fields (`dict[str, torch.Tensor]`, *optional*): A method's own values of each stored image, by name (e.g. the
            logits the model gave it when it was stored), one row per image; kept and saved with it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_seen: int = 0
    fields: dict[str, torch.Tensor] = field(default_factory=dict)

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

    def updated(
        self,
        new: TensorData,
        capacity: int,
        policy: str,
        seed: int,
        new_fields: dict[str, torch.Tensor] | None = None,
    ) -> "ReplayBuffer":
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
            new_fields (`dict[str, torch.Tensor]`, *optional*): The values of the buffer's `fields` for the task's
                examples, one row per example; needed when the buffer has fields.
        """
        if policy not in BUFFER_POLICIES:
            raise ValueError(f"`buffer_policy` must be one of {list(BUFFER_POLICIES)}, got {policy!r}.")
        new_fields = new_fields or {}
        if len(self) and set(new_fields) != set(self.fields):
            raise ValueError(
                f"The buffer stores fields {sorted(self.fields)}; the new examples bring {sorted(new_fields)}."
            )
        generator = torch.Generator().manual_seed(seed)
        # Rows of the pool (the buffer, then the task's examples) to keep, in buffer order.
        pool_labels = torch.cat([self.labels, new.labels])
        if policy == "reservoir":
            keep, num_seen = list(range(len(self))), self.num_seen
            for row in range(len(self), len(pool_labels)):
                if len(keep) < capacity:
                    keep.append(row)
                else:
                    slot = int(torch.randint(0, num_seen + 1, (1,), generator=generator))
                    if slot < capacity:
                        keep[slot] = row
                num_seen += 1
            keep = torch.tensor(keep, dtype=torch.long)
        else:
            classes = sorted(pool_labels.unique().tolist())
            chosen_rows = []
            for rank, class_index in enumerate(classes):
                share = capacity // len(classes) + (1 if rank < capacity % len(classes) else 0)
                members = (pool_labels == class_index).nonzero().flatten()
                chosen = members[torch.randperm(len(members), generator=generator)[:share]]
                chosen_rows.append(chosen.sort().values)
            keep, num_seen = torch.cat(chosen_rows), self.num_seen + len(new)
        fields = {
            name: torch.cat([self.fields[name], values])[keep] if len(self) else values[keep - len(self)]
            for name, values in new_fields.items()
        }
        return ReplayBuffer(torch.cat([self.images, new.images])[keep], pool_labels[keep], num_seen, fields)

    def save(self, path: str | Path) -> None:
        """Writes the buffer to a safetensors file, atomically."""
        state = {"images": self.images.contiguous(), "labels": self.labels, "num_seen": torch.tensor(self.num_seen)}
        state.update({f"field.{name}": values.contiguous() for name, values in self.fields.items()})
        with atomic_file(path) as temporary:
            save_file(state, temporary)

    @classmethod
    def load(cls, path: str | Path) -> "ReplayBuffer":
        """Reads a buffer written by [`~ReplayBuffer.save`]."""
        state = read_safetensors(
            path,
            "The images it stored are lost: restore the file, or start the run again in a new --output_dir",
        )
        fields = {name.removeprefix("field."): values for name, values in state.items() if name.startswith("field.")}
        return cls(images=state["images"], labels=state["labels"], num_seen=int(state["num_seen"]), fields=fields)

"""The referee: a small classifier trained on a data set's real training images, whose penultimate features measure
generated images of that data set without any download (the usual choice for MNIST-like data)."""

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_directory, write_json
from ..tensor_data import TensorData, uint8_to_model_range
from .extractors import FeatureExtractor


logger = logging.getLogger(__name__)

REFEREE_RECORD_NAME = "referee.json"


class RefereeClassifier(ModelMixin, ConfigMixin):
    r"""
    Two convolution blocks (conv, GroupNorm, SiLU, conv, GroupNorm, SiLU, 2x2 max-pool), a global average pool, a
    feature layer and a linear head.

    Args:
        in_channels (`int`, *optional*, defaults to 1): Image channels.
        num_classes (`int`, *optional*, defaults to 10): Classes of the data set.
        block_out_channels (`tuple[int, ...]`, *optional*, defaults to `(32, 64)`): Channels of each block.
        num_features (`int`, *optional*, defaults to 128): Length of the penultimate features.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        block_out_channels: tuple[int, ...] = (32, 64),
        num_features: int = 128,
    ):
        super().__init__()
        blocks = []
        channels = in_channels
        for out_channels in block_out_channels:
            blocks += [
                nn.Conv2d(channels, out_channels, kernel_size=3, padding=1),
                nn.GroupNorm(8, out_channels),
                nn.SiLU(),
                nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
                nn.GroupNorm(8, out_channels),
                nn.SiLU(),
                nn.MaxPool2d(2),
            ]
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.feature_layer = nn.Linear(channels, num_features)
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate features `(N, num_features)` of images in [-1, 1]."""
        hidden = self.blocks(images)
        hidden = hidden.mean(dim=(2, 3))
        return F.silu(self.feature_layer(hidden))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits `(N, num_classes)` of images in [-1, 1]."""
        return self.head(self.features(images))


class RefereeFeatureExtractor(FeatureExtractor):
    r"""
    The penultimate features of a [`RefereeClassifier`].

    Args:
        referee ([`RefereeClassifier`]): A trained referee.
        test_accuracy (`float`, *optional*): Its accuracy on the real test images, recorded beside the distances.
    """

    def __init__(self, referee: RefereeClassifier, test_accuracy: float | None = None):
        super().__init__(num_features=referee.config.num_features, in_channels=(referee.config.in_channels,))
        self.referee = referee.eval().requires_grad_(False)
        self.test_accuracy = test_accuracy

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self.referee.features(images.float())


@torch.no_grad()
def referee_accuracy(referee: RefereeClassifier, data: TensorData, batch_size: int = 512) -> float:
    r"""
    The referee's accuracy on `data`.

    Args:
        referee ([`RefereeClassifier`]): The referee.
        data ([`TensorData`]): Labelled images.
        batch_size (`int`, *optional*, defaults to 512): Images per forward.
    """
    referee.eval()
    correct = 0
    for images, labels in zip(data.images.split(batch_size), data.labels.split(batch_size)):
        logits = referee(uint8_to_model_range(images, referee.device))
        correct += int((logits.argmax(dim=-1).cpu() == labels).sum())
    return correct / max(len(data), 1)


def train_referee(
    train: TensorData,
    test: TensorData,
    num_classes: int,
    num_steps: int = 1000,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
) -> tuple[RefereeClassifier, float]:
    r"""
    Trains a referee on real labelled images (AdamW, a constant learning rate, seeded batches) and returns it with its
    accuracy on `test`.

    Args:
        train ([`TensorData`]): The real training images and their labels.
        test ([`TensorData`]): The real test images and their labels.
        num_classes (`int`): Classes of the data set.
        num_steps (`int`, *optional*, defaults to 1000): Optimizer steps.
        batch_size (`int`, *optional*, defaults to 128): Images per step.
        learning_rate (`float`, *optional*, defaults to 2e-3): AdamW's learning rate.
        seed (`int`, *optional*, defaults to 0): Seeds the initialisation and the batches.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): Where it trains.
        show_progress (`bool`, *optional*, defaults to `True`): Show a progress bar.
    """
    if len(train) == 0 or len(test) == 0:
        raise ValueError("The referee needs real training and test images; got an empty split.")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        referee = RefereeClassifier(in_channels=train.images.shape[1], num_classes=num_classes).to(device)
    optimizer = torch.optim.AdamW(referee.parameters(), lr=learning_rate)
    referee.train()
    for _ in tqdm(range(num_steps), desc="Training the quality referee", disable=not show_progress):
        batch = torch.randint(0, len(train), (batch_size,), generator=generator)
        images = uint8_to_model_range(train.images[batch], device)
        loss = F.cross_entropy(referee(images), train.labels[batch].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return referee.eval(), referee_accuracy(referee, test)


def load_or_train_referee(
    folder: str | Path, train: TensorData, test: TensorData, num_classes: int, **kwargs
) -> RefereeFeatureExtractor:
    r"""
    The referee kept in `folder` (safetensors weights and a `referee.json` record), trained there first if it is not.

    A referee kept with other training settings (steps, seed, data size) is trained again.

    Args:
        folder (`str` or `Path`): Where the referee is kept, e.g. `<run>/quality/referee`.
        train ([`TensorData`]), test ([`TensorData`]), num_classes (`int`): See [`train_referee`].
        kwargs: Passed to [`train_referee`].
    """
    folder = Path(folder)
    settings = {
        "num_classes": num_classes,
        "train_size": len(train),
        "test_size": len(test),
        "image_shape": list(train.images.shape[1:]),
        **{key: value for key, value in kwargs.items() if key not in ("device", "show_progress")},
    }
    record_path = folder / REFEREE_RECORD_NAME
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings:
            referee = RefereeClassifier.from_pretrained(folder, use_safetensors=True)
            return RefereeFeatureExtractor(referee.to(kwargs.get("device", "cpu")), record["test_accuracy"])
        logger.info(f"The referee in {folder} was trained with other settings; training it again.")
    referee, accuracy = train_referee(train, test, num_classes, **kwargs)
    with atomic_directory(folder) as temporary:
        referee.save_pretrained(temporary, safe_serialization=True)
        write_json({"settings": settings, "test_accuracy": accuracy}, temporary / REFEREE_RECORD_NAME)
    logger.info(f"Quality referee: test accuracy {accuracy:.4f} (kept in {folder}).")
    return RefereeFeatureExtractor(referee, accuracy)


__all__ = [
    "RefereeClassifier",
    "RefereeFeatureExtractor",
    "load_or_train_referee",
    "referee_accuracy",
    "train_referee",
]

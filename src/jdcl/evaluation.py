"""Evaluation of a joint model on the test classes seen so far (single head, unseen classes masked)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .metrics import accuracy_per_task
from .models import JointUNet2DModel, mask_logits
from .tensor_data import TensorData, uint8_to_model_range


@dataclass
class TaskEvaluation:
    r"""
    One row of the accuracy matrix and the accuracy on every seen class together.

    Args:
        accuracy_per_task (`list[float]`): Accuracy on each seen task's test classes, in task order.
        accuracy_seen (`float`): Accuracy on all test examples of the seen classes.
    """

    accuracy_per_task: list[float]
    accuracy_seen: float


@torch.no_grad()
def classify_logits(
    model: JointUNet2DModel,
    images: torch.Tensor,
    batch_size: int = 512,
    classes: Sequence[int] | None = None,
) -> torch.Tensor:
    r"""
    The classifier's float32 logits of uint8 images, on the host, computed `batch_size` images at a time.

    Args:
        model ([`JointUNet2DModel`]): The model, in eval mode.
        images (`torch.Tensor`): uint8 `(N, C, H, W)` images (as [`TensorData`] holds them).
        batch_size (`int`, *optional*, defaults to 512): Images per forward.
        classes (`Sequence[int]`, *optional*): When given, every other class's logit is `-inf` (see
            [`mask_logits`]).
    """
    classes = None if classes is None else list(classes)
    logits = [
        mask_logits(model.classify(uint8_to_model_range(chunk, model.device).to(model.dtype)).float(), classes).cpu()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(logits) if logits else torch.empty((0, model.config.num_classes))


def predict(
    model: JointUNet2DModel, images: torch.Tensor, classes: Sequence[int], batch_size: int = 512
) -> torch.Tensor:
    r"""
    Predicted classes of images, among `classes` only.

    Args:
        model ([`JointUNet2DModel`]): The model, in eval mode.
        images (`torch.Tensor`): uint8 `(N, C, H, W)` images (as [`TensorData`] holds them).
        classes (`Sequence[int]`): The classes to predict among.
        batch_size (`int`, *optional*, defaults to 512): Images per forward.
    """
    return classify_logits(model, images, batch_size, classes).argmax(dim=-1)


def evaluate_seen_tasks(
    model: JointUNet2DModel, test_data: TensorData, tasks: Sequence[Sequence[int]], batch_size: int = 512
) -> TaskEvaluation:
    r"""
    Accuracy after a task: on each seen task's test classes, predicting among all seen classes.

    Args:
        model ([`JointUNet2DModel`]): The model to evaluate (the EMA weights).
        test_data ([`TensorData`]): The whole test set.
        tasks (`Sequence[Sequence[int]]`): The classes of the tasks seen so far.
        batch_size (`int`, *optional*, defaults to 512): Images per forward.
    """
    seen = [class_index for task in tasks for class_index in task]
    test_seen = test_data.subset(seen)
    was_training = model.training
    model.eval()
    predictions = predict(model, test_seen.images, seen, batch_size)
    model.train(was_training)
    return TaskEvaluation(
        accuracy_per_task=accuracy_per_task(predictions, test_seen.labels, tasks),
        accuracy_seen=float((predictions == test_seen.labels).float().mean()),
    )

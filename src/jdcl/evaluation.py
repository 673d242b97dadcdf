"""Evaluation of a joint model on the test classes seen so far (single head, unseen classes masked)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .data import TensorData
from .metrics import accuracy_per_task
from .models import JointUNet2DModel, mask_logits


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
    classes = list(classes)
    predictions = []
    for chunk in images.split(batch_size):
        pixel_values = chunk.to(model.device).float().div(127.5).sub(1.0).to(model.dtype)
        logits = mask_logits(model.classify(pixel_values).float(), classes)
        predictions.append(logits.argmax(dim=-1).cpu())
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


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

"""Few labels: which training examples of each class keep their label in the semi-supervised setting, and how good
the pseudo-labels of a run were."""

import math

import numpy as np
import torch


def select_labeled(
    labels: np.ndarray, fraction: float | None = None, per_class: int | None = None, seed: int = 0
) -> np.ndarray:
    r"""
    A seeded, class-balanced choice of the examples that keep their labels; the others are unlabelled.

    Args:
        labels (`np.ndarray`): The class of every training example (the data set's ground truth, which decides
            the choice and each example's task; the learner never reads it for an unlabelled example).
        fraction (`float`, *optional*): The share of each class that keeps its labels, in (0, 1]; at least one.
        per_class (`int`, *optional*): How many examples of each class keep their labels.
        seed (`int`, *optional*, defaults to 0): Seeds the choice.

    Returns:
        `np.ndarray` of bool, one per example: whether it keeps its label.
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("Pass exactly one of `--labeled_fraction` and `--labeled_per_class`.")
    rng = np.random.default_rng(seed)
    labeled = np.zeros(len(labels), dtype=bool)
    for class_index in np.unique(labels):
        members = np.flatnonzero(labels == class_index)
        if per_class is not None and per_class > len(members):
            raise ValueError(
                f"`--labeled_per_class {per_class}` is more than the {len(members)} training examples of class "
                f"{int(class_index)}; pass at most {len(members)}."
            )
        count = per_class if per_class is not None else max(1, round(fraction * len(members)))
        labeled[rng.choice(members, size=count, replace=False)] = True
    return labeled


def count_pseudo_labels(
    counts: torch.Tensor | None,
    pseudo_labels: torch.Tensor,
    kept: torch.Tensor,
    true_labels: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    r"""
    Adds one batch's pseudo-labels to the counts since the last log, on the device and without waiting for it. The
    true labels only measure; no loss reads them.

    Args:
        counts (`torch.Tensor`, *optional*): The counts so far, `None` for the first batch.
        pseudo_labels (`torch.Tensor`): The pseudo-label of each unlabelled image.
        kept (`torch.Tensor`): Whether each was confident enough to be learned.
        true_labels (`torch.Tensor`): The images' true classes.
        num_classes (`int`): The model's classes.

    Returns:
        `torch.Tensor`: `[images, kept, kept and right, kept per class...]`.
    """
    if counts is None:
        counts = torch.zeros(3 + num_classes, device=pseudo_labels.device)
    counts[0] += len(kept)
    counts[1] += kept.sum()
    counts[2] += (kept & (pseudo_labels == true_labels)).sum()
    counts[3:].index_add_(0, pseudo_labels, kept.float())
    return counts


def pseudo_label_record(counts: torch.Tensor, stage_name: str, step: int) -> dict:
    r"""
    The record of counts (from [`count_pseudo_labels`], summed over processes) that [`pseudo_label_summary`] reads.

    Args:
        counts (`torch.Tensor`): The counts since the last log.
        stage_name (`str`): The stage that counted them.
        step (`int`): The interval's last step.
    """
    images, kept, correct, *kept_per_class = counts.tolist()
    return {
        "stage": stage_name,
        "step": step,
        "unlabeled": int(images),
        "kept": int(kept),
        "correct": int(correct),
        "kept_per_class": [int(count) for count in kept_per_class],
    }


def pseudo_label_scalars(record: dict, unlabeled_classes: torch.Tensor) -> dict[str, float]:
    r"""
    What a stage logs of a record: `pseudo_label_precision` (of the kept pseudo-labels, the share that is right) and
    `pseudo_label_other_task` (the share that names a class none of the stage's unlabelled images has: a class of an
    earlier task or one not seen yet).

    Args:
        record (`dict`): From [`pseudo_label_record`].
        unlabeled_classes (`torch.Tensor`): The classes of the stage's unlabelled images.
    """
    kept = record["kept"]
    other_task = sum(
        count for class_index, count in enumerate(record["kept_per_class"]) if class_index not in unlabeled_classes
    )
    return {
        "pseudo_label_precision": record["correct"] / kept if kept else math.nan,
        "pseudo_label_other_task": other_task / kept if kept else math.nan,
    }


def pseudo_label_summary(records: list[dict], old_classes: list[int]) -> dict[str, dict[str, list]]:
    r"""
    How good a task's pseudo-labels were while its stages trained, per stage, one entry per logging interval.

    Args:
        records (`list[dict]`): The stage runner's records of the task (`StageRunner.pseudo_label_records`), each with
            `stage`, `step` (the interval's last step), `unlabeled` (images seen), `kept` (pseudo-labelled),
            `correct` (of those, right by the true label) and `kept_per_class` (the pseudo-labels per class).
        old_classes (`list[int]`): The classes of earlier tasks.

    Returns:
        `dict`: for each stage, lists over its intervals: the counts `unlabeled`, `kept`, `correct` and `on_old_classes`
        (kept pseudo-labels that name a class of an earlier task, which none of the task's unlabelled images has),
        and the shares `coverage` (kept / unlabeled), `precision` (correct / kept) and `old_class_share`
        (on_old_classes / kept), `None` where nothing was kept; `step` is each interval's last step.
    """
    names = ("step", "unlabeled", "kept", "correct", "on_old_classes", "coverage", "precision", "old_class_share")
    summary: dict[str, dict[str, list]] = {}
    for record in records:
        stage = summary.setdefault(record["stage"], {name: [] for name in names})
        kept = record["kept"]
        on_old = sum(record["kept_per_class"][class_index] for class_index in old_classes)
        for name, value in (
            ("step", record["step"]),
            ("unlabeled", record["unlabeled"]),
            ("kept", kept),
            ("correct", record["correct"]),
            ("on_old_classes", on_old),
            ("coverage", kept / record["unlabeled"] if record["unlabeled"] else None),
            ("precision", record["correct"] / kept if kept else None),
            ("old_class_share", on_old / kept if kept else None),
        ):
            stage[name].append(value)
    return summary

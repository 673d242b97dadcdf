"""Few labels: which training examples of each class keep their label in the semi-supervised setting."""

import numpy as np


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

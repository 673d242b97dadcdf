# Copyright 2025 The JDCL Authors. All rights reserved.
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
"""Class-incremental continual-learning metrics: per-task accuracy and the accuracy-matrix summaries."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


__all__ = ["AccuracyMatrix", "accuracy_per_task", "continual_metrics"]


def _to_numpy_1d(values: torch.Tensor | np.ndarray | Sequence[int], name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D sequence of class indices, got shape {tuple(array.shape)}; "
            f"pass argmax-ed predictions, not logits."
        )
    return array


def accuracy_per_task(
    predictions: torch.Tensor | np.ndarray | Sequence[int],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    tasks: Sequence[Sequence[int]],
) -> list[float]:
    """
    Accuracy on the test examples of each task.

    An example belongs to a task when its label is one of that task's classes; the prediction is judged against the
    single head over all classes (class-incremental setting), so predicting a class of another task counts as wrong.

    Args:
        predictions (`torch.Tensor`, `np.ndarray` or `Sequence[int]`):
            Predicted class index of every test example, shape `[N]`.
        labels (`torch.Tensor`, `np.ndarray` or `Sequence[int]`):
            True class index of every test example, shape `[N]`.
        tasks (`Sequence[Sequence[int]]`):
            The classes of each task, in task order, e.g. `[[0, 1], [2, 3]]`.

    Returns:
        `list[float]`: One accuracy in `[0, 1]` per task; `float("nan")` for a task without test examples.
    """
    predictions = _to_numpy_1d(predictions, "predictions")
    labels = _to_numpy_1d(labels, "labels")
    if predictions.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`predictions` has {predictions.shape[0]} entries but `labels` has {labels.shape[0]}; "
            "pass one prediction per labelled example."
        )
    if len(tasks) == 0:
        raise ValueError("`tasks` is empty; pass the classes of each task, e.g. `[[0, 1], [2, 3]]`.")

    accuracies = []
    for task_classes in tasks:
        mask = np.isin(labels, np.asarray(list(task_classes)))
        count = int(mask.sum())
        if count == 0:
            accuracies.append(float("nan"))
        else:
            accuracies.append(float((predictions[mask] == labels[mask]).sum()) / count)
    return accuracies


def _validate_row(row: Any, i: int) -> list[float]:
    """Validates row `i` of an accuracy matrix and returns its required entries `a[i][0..i]` as floats."""
    if isinstance(row, (torch.Tensor, np.ndarray)):
        row = row.tolist()
    if row is None or isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
        raise ValueError(f"Row {i} of `accuracy_matrix` is not a sequence of accuracies: {row!r}.")
    if len(row) < i + 1:
        raise ValueError(
            f"Row {i} of `accuracy_matrix` has {len(row)} entries but needs at least {i + 1} "
            f"(accuracies on tasks 0..{i} after training task {i}); the matrix is ragged."
        )
    values = []
    for j in range(i + 1):
        value = row[j]
        message = f"`accuracy_matrix[{i}][{j}]` is {value!r}; entries with j <= i must be accuracies (numbers)."
        if value is None or isinstance(value, (str, bytes, bool)):
            raise ValueError(message)
        try:
            values.append(float(value))
        except (TypeError, ValueError) as error:
            raise ValueError(message) from error
    return values


def accuracy_rows_from_json(rows: Sequence[Sequence[float | None]]) -> list[list[float]]:
    """
    An accuracy matrix as [`AccuracyMatrix.to_list`] writes it to JSON (`None` for an unmeasured accuracy and for tasks
    not trained yet) back as rows of floats: row `i` with its `i + 1` entries, NaN where `None` was written.

    Args:
        rows (`Sequence[Sequence[float | None]]`): The rows read from `metrics.json` or `model_index.json`.
    """
    return [[math.nan if value is None else float(value) for value in row[: i + 1]] for i, row in enumerate(rows)]


def lower_triangle(accuracy_matrix: Any) -> list[list[float]]:
    """
    Validates an accuracy matrix and returns its required entries `a[i][j]`, `j <= i`, as floats.

    Args:
        accuracy_matrix (`AccuracyMatrix`, nested sequences, `np.ndarray` or `torch.Tensor`):
            Row `i` holds the accuracies after training task `i`; entries `j > i` are ignored.
    """
    if isinstance(accuracy_matrix, AccuracyMatrix):
        accuracy_matrix = accuracy_matrix.rows
    if isinstance(accuracy_matrix, torch.Tensor):
        accuracy_matrix = accuracy_matrix.detach().cpu().tolist()
    elif isinstance(accuracy_matrix, np.ndarray):
        if accuracy_matrix.ndim != 2:
            raise ValueError(f"`accuracy_matrix` must be 2-D (tasks done x tasks), got shape {accuracy_matrix.shape}.")
        accuracy_matrix = accuracy_matrix.tolist()
    if accuracy_matrix is None or len(accuracy_matrix) == 0:
        raise ValueError("`accuracy_matrix` is empty; it needs at least the row for the first task.")

    return [_validate_row(row, i) for i, row in enumerate(accuracy_matrix)]


def continual_metrics(accuracy_matrix: Any) -> dict[str, float]:
    """
    Summary metrics of a (possibly partially filled) class-incremental accuracy matrix.

    With `T` the number of rows (tasks trained so far) and `a[i][j]` the accuracy on task `j` after training task
    `i` (both 0-based):

    - `average_accuracy`: `mean_{j <= T-1} a[T-1][j]`;
    - `average_incremental_accuracy`: `mean_i mean_{j <= i} a[i][j]`;
    - `forgetting`: `mean_{j < T-1} (max_{j <= l <= T-2} a[l][j] - a[T-1][j])`, `0.0` after one task;
    - `backward_transfer`: `mean_{j < T-1} (a[T-1][j] - a[j][j])`, `0.0` after one task.

    A NaN accuracy (a task without test examples) propagates to the metrics that use it.

    Args:
        accuracy_matrix (`list[list[float]]`, `np.ndarray`, `torch.Tensor` or [`AccuracyMatrix`]):
            Row `i` holds the accuracies after training task `i`. Only entries `a[i][j]` with `j <= i` are read;
            the others may be missing, `None` or anything else.

    Returns:
        `dict[str, float]`: `average_accuracy`, `average_incremental_accuracy`, `forgetting` and
        `backward_transfer`, as plain Python floats.
    """
    a = lower_triangle(accuracy_matrix)
    last = len(a) - 1
    average_accuracy = sum(a[last]) / len(a[last])
    average_incremental_accuracy = sum(sum(row) / len(row) for row in a) / len(a)
    if last == 0:
        forgetting = 0.0
        backward_transfer = 0.0
    else:
        forgetting = sum(max(a[k][j] for k in range(j, last)) - a[last][j] for j in range(last)) / last
        backward_transfer = sum(a[last][j] - a[j][j] for j in range(last)) / last
    return {
        "average_accuracy": float(average_accuracy),
        "average_incremental_accuracy": float(average_incremental_accuracy),
        "forgetting": float(forgetting),
        "backward_transfer": float(backward_transfer),
    }


@dataclass
class AccuracyMatrix:
    """
    An accuracy matrix filled one row per task.

    Args:
        num_tasks (`int`):
            Total number of tasks `T` of the run.
        rows (`list[list[float]]`, *optional*, defaults to `[]`):
            Rows already recorded; row `i` holds at least the accuracies on tasks `0..i` after training task `i`.
    """

    num_tasks: int
    rows: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.num_tasks, int) or self.num_tasks < 1:
            raise ValueError(f"`num_tasks` must be a positive integer, got {self.num_tasks!r}.")
        if len(self.rows) > self.num_tasks:
            raise ValueError(f"Got {len(self.rows)} rows for {self.num_tasks} tasks; pass at most `num_tasks` rows.")
        rows, self.rows = self.rows, []
        for row in rows:
            self.add_row(row)

    def add_row(self, row: Sequence[float | None]) -> None:
        """
        Records the accuracies measured after training the next task.

        Args:
            row (`Sequence[float | None]`):
                Accuracies on tasks `0..i` (entries beyond `i`, accuracies on tasks not yet trained, are kept but
                ignored by the metrics), with `i` the index of the task just trained.
        """
        i = len(self.rows)
        if i >= self.num_tasks:
            raise ValueError(f"The matrix already has all {self.num_tasks} rows; there is no task {i} to add.")
        if isinstance(row, (torch.Tensor, np.ndarray)):
            row = row.tolist()
        if row is not None and hasattr(row, "__len__") and len(row) > self.num_tasks:
            raise ValueError(
                f"Row {i} has {len(row)} entries but the run has {self.num_tasks} tasks; pass at most `num_tasks`."
            )
        required = _validate_row(row, i)
        # Entries beyond the diagonal are accuracies on untrained tasks: kept for plots, never used by metrics.
        extra = [
            float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else math.nan for v in row[i + 1 :]
        ]
        self.rows.append(required + extra)

    def to_list(self) -> list[list[float | None]]:
        """
        The matrix as a JSON-ready `num_tasks_done x num_tasks` list: `None` where `j > i` (task not trained yet)
        and for NaN accuracies, since JSON has no NaN.

        Returns:
            `list[list[float | None]]`: One row per task done, `num_tasks` entries each.
        """
        table = []
        for i, row in enumerate(self.rows):
            table.append(
                [row[j] if j <= i and j < len(row) and not math.isnan(row[j]) else None for j in range(self.num_tasks)]
            )
        return table

    def lower_triangle_list(self, num_rows: int | None = None) -> list[list[float | None]]:
        """
        The first `num_rows` rows (all when `None`) as JSON-ready lists, row `i` with its `i + 1` measured entries
        (`None` for NaN): what a saved pipeline records.

        Args:
            num_rows (`int`, *optional*, defaults to `None`): How many rows.
        """
        return [row[: i + 1] for i, row in enumerate(self.to_list()[:num_rows])]

    def metrics(self) -> dict[str, float]:
        """
        The summary metrics of the rows recorded so far, see [`continual_metrics`].

        Returns:
            `dict[str, float]`: The metrics of [`continual_metrics`].
        """
        return continual_metrics(self.rows)

import json
import math

import numpy as np
import pytest
import torch

from jdcl.metrics import AccuracyMatrix, accuracy_per_task, accuracy_rows_from_json, continual_metrics


THREE_TASKS = [[0.9], [0.6, 0.8], [0.5, 0.7, 0.9]]


def test_accuracy_per_task_hand_case():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    predictions = torch.tensor([0, 1, 1, 1, 2, 0, 0, 0])
    # task {0,1}: 3 of 4 right; task {2,3}: only the first class-2 example is right, 1 of 4.
    assert accuracy_per_task(predictions, labels, [[0, 1], [2, 3]]) == [0.75, 0.25]


def test_accuracy_per_task_accepts_numpy_and_lists_and_flags_empty_task():
    result = accuracy_per_task(np.array([0, 2, 2]), [0, 1, 2], [[0, 1], [2], [4, 5]])
    assert result[:2] == [0.5, 1.0]
    assert math.isnan(result[2])


def test_accuracy_per_task_rejects_mismatched_lengths_and_logits():
    with pytest.raises(ValueError, match="one prediction per labelled example"):
        accuracy_per_task([0, 1], [0, 1, 2], [[0, 1, 2]])
    with pytest.raises(ValueError, match="argmax"):
        accuracy_per_task(torch.zeros(3, 4), [0, 1, 2], [[0, 1, 2]])


def test_continual_metrics_three_tasks():
    metrics = continual_metrics(THREE_TASKS)
    assert metrics["average_accuracy"] == pytest.approx(0.7)
    assert metrics["average_incremental_accuracy"] == pytest.approx((0.9 + 0.7 + 0.7) / 3)
    assert metrics["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert metrics["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert all(type(value) is float for value in metrics.values())


def test_forgetting_uses_the_best_earlier_accuracy_not_the_first():
    # Task 0 improves after task 1 (0.5 -> 0.8) then drops to 0.4: forgetting counts from the peak 0.8.
    metrics = continual_metrics([[0.5], [0.8, 0.9], [0.4, 0.9, 1.0]])
    assert metrics["forgetting"] == pytest.approx(((0.8 - 0.4) + (0.9 - 0.9)) / 2)
    assert metrics["backward_transfer"] == pytest.approx(((0.4 - 0.5) + (0.9 - 0.9)) / 2)


def test_continual_metrics_ignores_upper_triangle_and_handles_one_task():
    full = [[0.9, None, "x"], [0.6, 0.8, float("nan")], [0.5, 0.7, 0.9]]
    assert continual_metrics(full) == continual_metrics(THREE_TASKS)
    one = continual_metrics(np.array([[0.8, np.nan]]))
    assert one == {
        "average_accuracy": 0.8,
        "average_incremental_accuracy": 0.8,
        "forgetting": 0.0,
        "backward_transfer": 0.0,
    }


@pytest.mark.parametrize(
    "matrix, message",
    [([], "empty"), ([[0.9], [0.6]], "ragged"), ([[0.9], [None, 0.8]], r"\[1\]\[0\]"), (np.zeros(3), "2-D")],
)
def test_continual_metrics_rejects_bad_matrices(matrix, message):
    with pytest.raises(ValueError, match=message):
        continual_metrics(matrix)


def test_accuracy_matrix_rows_json_and_metrics():
    matrix = AccuracyMatrix(num_tasks=3)
    for row in THREE_TASKS[:2]:
        matrix.add_row(row)
    listed = matrix.to_list()
    assert listed == [[0.9, None, None], [0.6, 0.8, None]]
    assert json.loads(json.dumps(listed)) == listed
    assert matrix.metrics()["average_accuracy"] == pytest.approx(0.7)
    matrix.add_row(torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64))
    assert matrix.metrics() == pytest.approx(continual_metrics(THREE_TASKS))
    with pytest.raises(ValueError, match="already has all 3 rows"):
        matrix.add_row([0.1, 0.1, 0.1])


def test_accuracy_matrix_json_round_trip_keeps_nan_and_drops_untrained_tasks():
    matrix = AccuracyMatrix(num_tasks=3, rows=[[math.nan, 0.2], [0.5, 0.75, 0.1]])
    written = json.loads(json.dumps(matrix.to_list()))
    assert written == [[None, None, None], [0.5, 0.75, None]]
    assert matrix.lower_triangle_list() == [[None], [0.5, 0.75]]
    assert matrix.lower_triangle_list(1) == [[None]]
    rows = accuracy_rows_from_json(written)
    assert math.isnan(rows[0][0]) and rows[1] == [0.5, 0.75] and len(rows[0]) == 1
    reloaded = AccuracyMatrix(num_tasks=3, rows=rows)
    assert reloaded.to_list() == written


def test_accuracy_matrix_validates_rows():
    with pytest.raises(ValueError, match="ragged"):
        AccuracyMatrix(num_tasks=3, rows=[[0.9], [0.5]])
    matrix = AccuracyMatrix(num_tasks=2)
    with pytest.raises(ValueError, match="at most `num_tasks`"):
        matrix.add_row([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="positive integer"):
        AccuracyMatrix(num_tasks=0)

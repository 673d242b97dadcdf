import json

import numpy as np
import pytest

from jdcl.tasks import ClassIncrementalSplit, resolve_class_order, split_into_tasks


NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGITS = [str(i) for i in range(10)]


def test_resolve_default_is_label_order():
    assert resolve_class_order(None, NAMES) == list(range(10))


def test_resolve_indices_names_and_digit_strings():
    assert resolve_class_order([3, "dog", np.int64(0), "9"], NAMES) == [3, 5, 0, 9]
    # Digit strings that are class names resolve by name, which here differs from the index.
    # Digit strings that are not names are read as indices, so a command-line "3" works on any data set.
    assert resolve_class_order(["3", "1"], NAMES) == [3, 1]
    assert resolve_class_order(["0"], ["5", "0"]) == [1]
    assert resolve_class_order([9, 8, 7], DIGITS) == [9, 8, 7]


def test_resolve_subset_is_allowed():
    assert resolve_class_order(["cat", "dog"], NAMES) == [3, 5]


def test_resolve_unknown_classes_raise():
    with pytest.raises(ValueError, match=r"Unknown classes in class_order: \['zebra', 10\].*airplane"):
        resolve_class_order(["zebra", 1, 10], NAMES)
    with pytest.raises(ValueError, match=r"Unknown classes.*-1"):
        resolve_class_order([-1, 0], NAMES)


def test_resolve_repeated_classes_raise():
    with pytest.raises(ValueError, match=r"repeats classes \[3\].*'cat'"):
        resolve_class_order([3, "cat", 4], NAMES)


def test_resolve_rejects_empty_and_bare_string():
    with pytest.raises(ValueError, match="class_order is empty"):
        resolve_class_order([], NAMES)
    with pytest.raises(ValueError, match="sequence of classes"):
        resolve_class_order("0123", DIGITS)


@pytest.mark.parametrize(
    "num_classes, num_tasks, sizes",
    [(10, 3, [4, 3, 3]), (10, 5, [2, 2, 2, 2, 2]), (100, 10, [10] * 10), (7, 7, [1] * 7), (5, 1, [5])],
)
def test_split_sizes_match_array_split(num_classes, num_tasks, sizes):
    order = list(np.random.default_rng(0).permutation(num_classes))
    tasks = split_into_tasks(order, num_tasks)
    assert [len(t) for t in tasks] == sizes
    assert [len(t) for t in np.array_split(order, num_tasks)] == sizes
    assert sum(tasks, []) == [int(c) for c in order]


def test_split_errors():
    with pytest.raises(ValueError, match=r"Cannot split 3 classes into 4 tasks.*--num_tasks at most 3"):
        split_into_tasks([0, 1, 2], 4)
    with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
        split_into_tasks([0, 1, 2], 0)


def test_class_incremental_split_helpers():
    split = ClassIncrementalSplit.from_order([4, 0, 1, 2, 3, 9, 8], num_tasks=3)
    assert split.tasks == [[4, 0, 1], [2, 3], [9, 8]]
    assert split.num_tasks == 3
    assert split.new_classes(1) == [2, 3]
    assert split.old_classes(0) == []
    assert split.old_classes(2) == [4, 0, 1, 2, 3]
    assert split.classes_seen(0) == [4, 0, 1]
    assert split.classes_seen(2) == [4, 0, 1, 2, 3, 9, 8]
    assert split.all_classes == split.classes_seen(2)
    assert split.task_of_class(9) == 2
    with pytest.raises(ValueError, match=r"task_index must be an integer in \[0, 3\)"):
        split.classes_seen(3)
    with pytest.raises(ValueError, match="Class 5 is in no task"):
        split.task_of_class(5)


def test_class_incremental_split_validates():
    with pytest.raises(ValueError, match=r"Classes \[1\] appear more than once"):
        ClassIncrementalSplit(tasks=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"Tasks \[1\] have no classes"):
        ClassIncrementalSplit(tasks=[[0], []])


def test_json_round_trip():
    split = ClassIncrementalSplit.from_order(list(range(10)), 4)
    restored = ClassIncrementalSplit.from_dict(json.loads(json.dumps(split.to_dict())))
    assert restored == split
    assert restored.tasks == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    with pytest.raises(ValueError, match="'tasks' key"):
        ClassIncrementalSplit.from_dict({"task": []})

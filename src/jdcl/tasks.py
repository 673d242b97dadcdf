"""Class orders and their split into the tasks of class-incremental learning."""

import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def resolve_class_order(class_order: Sequence[int | str] | None, class_names: Sequence[str]) -> list[int]:
    """
    Turns a user-given class order into a list of class indices.

    Args:
        class_order (`Sequence[int | str]`, *optional*):
            The classes in the order they are learned. Entries are class indices (`int`) or strings: a string that is
            a class name resolves to that class, else a string of digits is read as a class index (so `"3"` works
            from a command line). A subset of the classes is allowed; only those classes are learned. `None` gives
            every class in label order.
        class_names (`Sequence[str]`):
            Name of every class of the data set, indexed by label.

    Returns:
        `list[int]`: the class indices in learning order.
    """
    num_classes = len(class_names)
    if num_classes == 0:
        raise ValueError("The data set has no classes. Load a data set with a label column that has classes.")
    if class_order is None:
        return list(range(num_classes))
    if isinstance(class_order, str):
        raise ValueError(
            f"class_order must be a sequence of classes, got the string {class_order!r}. "
            "Pass a list such as [0, 1, 2] or ['cat', 'dog']."
        )
    if len(class_order) == 0:
        raise ValueError("class_order is empty. Pass at least one class, or None for all classes in label order.")

    name_to_index = {name: index for index, name in enumerate(class_names)}
    resolved: list[int] = []
    unknown: list[int | str] = []
    for entry in class_order:
        if isinstance(entry, str):
            if entry in name_to_index:
                resolved.append(name_to_index[entry])
            elif entry.strip().isdigit() and int(entry) < num_classes:
                resolved.append(int(entry))
            else:
                unknown.append(entry)
        elif isinstance(entry, bool):
            unknown.append(entry)
        else:
            try:
                index = operator.index(entry)
            except TypeError:
                unknown.append(entry)
                continue
            if 0 <= index < num_classes:
                resolved.append(index)
            else:
                unknown.append(entry)
    if unknown:
        raise ValueError(
            f"Unknown classes in class_order: {unknown}. Use class indices 0..{num_classes - 1} or class names "
            f"{list(class_names)}."
        )
    repeated = sorted(index for index, count in Counter(resolved).items() if count > 1)
    if repeated:
        raise ValueError(
            f"class_order repeats classes {repeated} (names {[class_names[i] for i in repeated]}). "
            "List every class at most once."
        )
    return resolved


def split_into_tasks(class_order: Sequence[int], num_tasks: int) -> list[list[int]]:
    """
    Splits a class order into contiguous tasks of as equal sizes as possible.

    Like `numpy.array_split`, the first `len(class_order) % num_tasks` tasks get one class more: 10 classes into 3
    tasks gives sizes 4, 3, 3.

    Args:
        class_order (`Sequence[int]`): The class indices in learning order.
        num_tasks (`int`): The number of tasks.

    Returns:
        `list[list[int]]`: the classes of each task.
    """
    num_classes = len(class_order)
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}. Pass --num_tasks 1 or more.")
    if num_tasks > num_classes:
        raise ValueError(
            f"Cannot split {num_classes} classes into {num_tasks} tasks: every task needs at least one class. "
            f"Pass --num_tasks at most {num_classes}, or a longer --class_order."
        )
    base, remainder = divmod(num_classes, num_tasks)
    tasks = []
    start = 0
    for task_index in range(num_tasks):
        size = base + (1 if task_index < remainder else 0)
        tasks.append([int(c) for c in class_order[start : start + size]])
        start += size
    return tasks


@dataclass
class ClassIncrementalSplit:
    """
    The classes of each task of a class-incremental run.

    Args:
        tasks (`list[list[int]]`): The class indices of each task, in learning order. Tasks must be non-empty and no
            class may appear twice.
    """

    tasks: list[list[int]]

    def __post_init__(self):
        if len(self.tasks) == 0:
            raise ValueError("A class-incremental split needs at least one task. Pass tasks=[[...], ...].")
        self.tasks = [[int(c) for c in task] for task in self.tasks]
        empty = [i for i, task in enumerate(self.tasks) if len(task) == 0]
        if empty:
            raise ValueError(f"Tasks {empty} have no classes. Give every task at least one class.")
        counts = Counter(c for task in self.tasks for c in task)
        repeated = sorted(c for c, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(f"Classes {repeated} appear more than once across tasks. List every class once.")
        negative = sorted(c for c in counts if c < 0)
        if negative:
            raise ValueError(f"Classes {negative} are negative. Use class indices 0..num_classes-1.")

    @classmethod
    def from_order(cls, class_order: Sequence[int], num_tasks: int) -> "ClassIncrementalSplit":
        """
        Builds a split from a class order, cut into `num_tasks` contiguous tasks (see [`split_into_tasks`]).

        Args:
            class_order (`Sequence[int]`): The class indices in learning order.
            num_tasks (`int`): The number of tasks.

        Returns:
            [`ClassIncrementalSplit`]: the split.
        """
        return cls(tasks=split_into_tasks(class_order, num_tasks))

    @property
    def num_tasks(self) -> int:
        """`int`: Number of tasks."""
        return len(self.tasks)

    @property
    def all_classes(self) -> list[int]:
        """`list[int]`: Every class of the split, in learning order."""
        return [c for task in self.tasks for c in task]

    def _check_index(self, task_index: int) -> None:
        if isinstance(task_index, bool) or not isinstance(task_index, int) or not 0 <= task_index < self.num_tasks:
            raise ValueError(
                f"task_index must be an integer in [0, {self.num_tasks}) (0-based), got {task_index!r}. "
                f"Pass a task index below num_tasks={self.num_tasks}."
            )

    def new_classes(self, task_index: int) -> list[int]:
        """
        Args:
            task_index (`int`): 0-based task index.

        Returns:
            `list[int]`: the classes introduced by task `task_index`.
        """
        self._check_index(task_index)
        return list(self.tasks[task_index])

    def old_classes(self, task_index: int) -> list[int]:
        """
        Args:
            task_index (`int`): 0-based task index.

        Returns:
            `list[int]`: the classes of the tasks before `task_index` (empty for the first task).
        """
        self._check_index(task_index)
        return [c for task in self.tasks[:task_index] for c in task]

    def classes_seen(self, task_index: int) -> list[int]:
        """
        Args:
            task_index (`int`): 0-based task index.

        Returns:
            `list[int]`: every class of tasks `0..task_index`, in learning order.
        """
        self._check_index(task_index)
        return [c for task in self.tasks[: task_index + 1] for c in task]

    def task_of_class(self, class_index: int) -> int:
        """
        Args:
            class_index (`int`): A class index.

        Returns:
            `int`: the 0-based index of the task that introduces `class_index`.
        """
        for task_index, task in enumerate(self.tasks):
            if class_index in task:
                return task_index
        raise ValueError(f"Class {class_index} is in no task; classes of this split: {self.all_classes}.")

    def to_dict(self) -> dict[str, Any]:
        """
        Returns:
            `dict[str, Any]`: a JSON-serialisable form, read back by [`ClassIncrementalSplit.from_dict`].
        """
        return {"tasks": [list(task) for task in self.tasks]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassIncrementalSplit":
        """
        Args:
            data (`dict[str, Any]`): The output of [`ClassIncrementalSplit.to_dict`].

        Returns:
            [`ClassIncrementalSplit`]: the split.
        """
        if not isinstance(data, dict) or "tasks" not in data:
            raise ValueError(
                f"Expected a dict with a 'tasks' key (as written by ClassIncrementalSplit.to_dict), got {data!r}."
            )
        return cls(tasks=[list(task) for task in data["tasks"]])

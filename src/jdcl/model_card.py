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
"""The model card written into every per-task checkpoint (README.md of the `task-K` revision)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .strategies import STRATEGIES


__all__ = ["TASK_MODEL_CARD_TAGS", "make_task_model_card", "task_model_card_template_path"]

TASK_MODEL_CARD_TAGS = [
    "jdcl",
    "diffusers",
    "continual-learning",
    "class-incremental",
    "diffusion",
    "image-classification",
    "unconditional-image-generation",
]

_TEMPLATE_NAME = "task_model_card.md"
# `owner/name`, as the Hub spells repository ids; a bare word or a local path is not linked as a Hub dataset.
_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Config keys whose values must never reach a public card, whatever the caller put in the training config.
_SECRET_KEY_PATTERN = re.compile(r"token|secret|password|api_key", re.IGNORECASE)
# Config keys that only say where the run wrote on its machine: a card never shows them.
_MACHINE_KEYS = ("output_dir", "cache_dir")
_METRIC_NAMES = {
    "average_accuracy": "Average accuracy",
    "average_incremental_accuracy": "Average incremental accuracy",
    "forgetting": "Forgetting",
    "backward_transfer": "Backward transfer",
}


def task_model_card_template_path() -> Path:
    """
    Path of the Jinja template of the per-task model card.

    The template lives in the repository's top-level `model_cards/` folder and is installed as package data of
    `jdcl.model_cards`, so this works from a wheel and from an editable install alike.

    Returns:
        `pathlib.Path`: Path of `task_model_card.md`.
    """
    try:
        path = Path(str(resources.files("jdcl.model_cards").joinpath(_TEMPLATE_NAME)))
        if path.is_file():
            return path
    except ModuleNotFoundError:
        pass
    # A source checkout on `sys.path` without installing jdcl: the folder sits next to `src/`.
    path = Path(__file__).resolve().parents[2] / "model_cards" / _TEMPLATE_NAME
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"The model-card template {_TEMPLATE_NAME} was not found in the `jdcl.model_cards` package; "
        "reinstall jdcl (`pip install jdcl` or `pip install -e .` from the repository)."
    )


def _is_hub_dataset_id(name: str) -> bool:
    return bool(_HUB_ID_PATTERN.match(name)) and not os.path.exists(name)


def _format_accuracy(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    value = float(value)
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _accuracy_table(accuracy_matrix: Sequence[Sequence[float | None]], num_tasks: int) -> str:
    """Markdown table with rows "after task i", columns "task j" (1-based) and empty cells where `j > i`."""
    header = "| | " + " | ".join(f"task {j + 1}" for j in range(num_tasks)) + " |"
    separator = "|---|" + "---:|" * num_tasks
    lines = [header, separator]
    for i, row in enumerate(accuracy_matrix):
        cells = [_format_accuracy(row[j]) if j <= i and j < len(row) else "" for j in range(num_tasks)]
        lines.append(f"| after task {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metrics_table(metrics: Mapping[str, float]) -> str:
    lines = ["| Metric | Value |", "|---|---:|"]
    for key, value in metrics.items():
        name = _METRIC_NAMES.get(key, key.replace("_", " ").capitalize())
        lines.append(f"| {name} | {_format_accuracy(value)} |")
    return "\n".join(lines)


def _quality_table(quality: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Markdown table: one line per feature extractor, the Fréchet distance and KID of the samples and the rehearsal."""
    lines = [
        "| Features | Samples: FD | Samples: KID | Rehearsal: FD | Rehearsal: KID |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, sets in quality.items():
        cells = []
        for set_name in ("samples", "rehearsal"):
            values = sets.get(set_name)
            cells += ["", ""] if values is None else [f"{values['fd']:.3f}", f"{values['kid']:.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _without_machine_path(value: str) -> str:
    """A local file or folder by its name alone: a card is published, the paths of the machine that wrote it are not."""
    if (os.sep in value or "/" in value) and (os.path.isabs(value) or os.path.exists(value)):
        return Path(value).name or value
    return value


def _publishable(value: Any) -> Any:
    """The training config without credentials, output folders and machine paths."""
    if isinstance(value, Mapping):
        return {
            k: _publishable(v)
            for k, v in value.items()
            if not _SECRET_KEY_PATTERN.search(str(k)) and str(k) not in _MACHINE_KEYS
        }
    if isinstance(value, (list, tuple)):
        return [_publishable(v) for v in value]
    if isinstance(value, (str, os.PathLike)):
        return _without_machine_path(os.fspath(value))
    return value


def _eval_results(
    dataset_name: str,
    task_index: int,
    num_classes_seen: int,
    accuracy_seen: float | None,
    average_accuracy: float | None,
) -> list[EvalResult]:
    """The card's `model-index` results (the Hub's results widget): the task's accuracies, where measured."""
    named_values = [
        (f"Accuracy on the {num_classes_seen} classes seen after task {task_index}", accuracy_seen),
        (f"Average accuracy over tasks 1-{task_index}", average_accuracy),
    ]
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Class-incremental image classification",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type="accuracy",
            metric_name=metric_name,
            metric_value=round(float(value), 4),
        )
        for metric_name, value in named_values
        if value is not None and not math.isnan(float(value))
    ]


def _class_list(classes: Sequence[int], class_names: Sequence[str]) -> str:
    return ", ".join(f"{class_names[c]} ({c})" for c in classes)


def _class_order_text(class_order: list[int], class_names: Sequence[str], num_tasks: int) -> str:
    # Equal splits are the usual protocol (CIFAR-10 in 5 tasks of 2); show them task by task, else as one list.
    if num_tasks > 1 and len(class_order) % num_tasks == 0:
        size = len(class_order) // num_tasks
        return "; ".join(
            f"task {k + 1}: {_class_list(class_order[k * size : (k + 1) * size], class_names)}"
            for k in range(num_tasks)
        )
    return _class_list(class_order, class_names)


def make_task_model_card(
    task_index: int,
    num_tasks: int,
    dataset_name: str,
    class_names: Sequence[str],
    class_order: Sequence[int],
    classes_seen: Sequence[int],
    accuracy_matrix: Sequence[Sequence[float | None]],
    metrics: Mapping[str, float],
    repo_id: str | None = None,
    sample_grid_path: str | None = "samples.png",
    training_config: Mapping[str, Any] | None = None,
    dataset_on_hub: bool | None = None,
    quality: Mapping[str, Any] | None = None,
    strategy: str = "jdcl",
    strategy_description: str | None = None,
    accuracy_seen: float | None = None,
) -> ModelCard:
    """
    Builds the model card of the checkpoint saved after one task.

    Args:
        task_index (`int`):
            The task just trained, 1-based (the checkpoint is revision `task-{task_index}` on the Hub).
        num_tasks (`int`):
            Total number of tasks of the run.
        dataset_name (`str`):
            The dataset, e.g. `"uoft-cs/cifar10"`. A Hub id (`owner/name`) is also listed in the card's metadata; a
            local folder is shown by its name alone.
        class_names (`Sequence[str]`):
            Names of all classes, indexed by class index.
        class_order (`Sequence[int]`):
            Class indices in the order the tasks bring them.
        classes_seen (`Sequence[int]`):
            Class indices trained on up to and including this task.
        accuracy_matrix (`Sequence[Sequence[float | None]]`):
            Row `i` holds the accuracies on each task after training task `i` (0-based); at least `task_index` rows.
            Entries with `j > i` are ignored.
        metrics (`Mapping[str, float]`):
            Summary metrics, e.g. the output of [`~jdcl.metrics.continual_metrics`].
        repo_id (`str`, *optional*, defaults to `None`):
            The Hub repository of the run, shown in the loading snippet; a local path placeholder is shown when not
            given.
        sample_grid_path (`str`, *optional*, defaults to `"samples.png"`):
            Path of the sample grid relative to the checkpoint folder, or `None` for no samples section.
        training_config (`Mapping[str, Any]`, *optional*, defaults to `None`):
            Training settings shown as JSON. Keys that look like credentials (`token`, `secret`, `password`,
            `api_key`) and output folders (`output_dir`, `logging_dir`, `cache_dir`) are dropped, and local paths
            are shown by their last part alone.
        dataset_on_hub (`bool`, *optional*, defaults to `None`):
            Whether `dataset_name` is a Hub dataset to list in the metadata; `None` guesses from its `owner/name`
            shape.
        quality (`Mapping[str, Any]`, *optional*, defaults to `None`):
            The task's generation quality (what [`~jdcl.quality.TaskQuality.measure`] returns), shown as a table.
        strategy (`str`, *optional*, defaults to `"jdcl"`):
            The run's method (`--strategy`), named in the title and described in the card.
        strategy_description (`str`, *optional*, defaults to `None`):
            What the card says of the method; `None` takes the registered strategy's `card_description`.
        accuracy_seen (`float`, *optional*, defaults to `None`):
            Accuracy on the test examples of every class seen so far, listed with the average accuracy in the card's
            `model-index` (the Hub's results widget).

    Returns:
        [`huggingface_hub.ModelCard`]: The card; `card.save(folder / "README.md")` writes it.
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be a positive integer, got {num_tasks!r}.")
    if not isinstance(task_index, int) or not 1 <= task_index <= num_tasks:
        raise ValueError(f"`task_index` is 1-based and must be in [1, {num_tasks}], got {task_index!r}.")
    if not dataset_name:
        raise ValueError("`dataset_name` is empty; pass the dataset's name, e.g. 'uoft-cs/cifar10'.")
    unknown = [c for c in list(class_order) + list(classes_seen) if not 0 <= int(c) < len(class_names)]
    if unknown:
        raise ValueError(
            f"Classes {sorted(set(unknown))} have no name in `class_names` ({len(class_names)} names); "
            "pass the names of all classes, indexed by class index."
        )
    if len(accuracy_matrix) < task_index:
        raise ValueError(
            f"`accuracy_matrix` has {len(accuracy_matrix)} rows but task {task_index} is done; "
            "pass one row per task trained so far."
        )
    for i, row in enumerate(accuracy_matrix[:task_index]):
        if len(row) < i + 1:
            raise ValueError(
                f"Row {i} of `accuracy_matrix` has {len(row)} entries but needs at least {i + 1}; the matrix is ragged."
            )

    if strategy_description is None:
        if strategy not in STRATEGIES:
            raise ValueError(
                f"`strategy` {strategy!r} is not a registered strategy ({sorted(STRATEGIES)}); register it or pass "
                "its `strategy_description`."
            )
        strategy_description = STRATEGIES[strategy].card_description

    if dataset_on_hub is None:
        dataset_on_hub = _is_hub_dataset_id(dataset_name)
    if not dataset_on_hub:
        dataset_name = _without_machine_path(dataset_name)
    method_title = "JDCL" if strategy == "jdcl" else strategy
    title = f"{method_title} on {dataset_name}: model after task {task_index} of {num_tasks}"
    average_accuracy = metrics.get("average_accuracy")
    card_data = ModelCardData(
        library_name="jdcl",
        tags=list(TASK_MODEL_CARD_TAGS),
        # The card's numbers are classification accuracies, and pipe.classify is the Hub task that applies.
        pipeline_tag="image-classification",
        datasets=[dataset_name] if dataset_on_hub else None,
        metrics=["accuracy"],
        license="apache-2.0",
        model_name=repo_id.split("/")[-1] if repo_id is not None else title,
        eval_results=_eval_results(dataset_name, task_index, len(classes_seen), accuracy_seen, average_accuracy)
        or None,
    )

    num_classes = len(class_names)
    load_target = repo_id if repo_id is not None else "path/to/this/checkpoint"
    load_arguments = json.dumps(load_target)
    if repo_id is not None:
        load_arguments += f', revision="task-{task_index}"'
    example_labels = [int(c) for c in list(classes_seen)[:2]] or [0]
    config_text = None
    if training_config:
        config_text = json.dumps(_publishable(dict(training_config)), indent=2, sort_keys=True, default=str)

    return ModelCard.from_template(
        card_data,
        template_path=str(task_model_card_template_path()),
        title=title,
        strategy=strategy,
        strategy_description=strategy_description,
        task_index=task_index,
        num_tasks=num_tasks,
        is_final_task=task_index == num_tasks,
        dataset_name=dataset_name,
        class_order_text=_class_order_text([int(c) for c in class_order], class_names, num_tasks),
        classes_seen_text=_class_list([int(c) for c in classes_seen], class_names),
        num_classes_seen=len(classes_seen),
        num_classes=num_classes,
        accuracy_table=_accuracy_table(accuracy_matrix[:task_index], num_tasks),
        metrics_table=_metrics_table(metrics),
        sample_grid_path=sample_grid_path,
        load_arguments=load_arguments,
        example_labels=example_labels,
        training_config_text=config_text,
        quality_table=_quality_table(quality) if quality else None,
    )

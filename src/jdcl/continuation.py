"""Continuing a published task checkpoint on new classes: what the checkpoint knows, and the tasks that extend it.

A pipeline saved after task K of a run (a `task-K` folder, or the Hub branch `task-K`) records its class names, the
classes of each of its tasks and its accuracy matrix so far. A run given it as `--pretrained_model_name_or_path`
trains task K+1 onwards with it as the previous model, so that its classes are rehearsed, not forgotten.
"""

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import datasets
from diffusers.models.unets.unet_2d import UNet2DModel

from .config import JDCLTrainingConfig
from .data import ClassificationData
from .hub import download_checkpoint
from .metrics import accuracy_rows_from_json
from .models import JointUNet2DModel, joint_unet_from_unet2d
from .pipelines.pipeline_jdcl import JDCLPipeline
from .strategies import STRATEGIES
from .tasks import ClassIncrementalSplit, split_into_tasks


logger = logging.getLogger(__name__)


@dataclass
class TaskCheckpoint:
    r"""
    The model after task K of a continual run, with what a run that continues it needs to know.

    Args:
        source (`str`): Where it was loaded from (a folder, or `repo@revision`), for messages.
        model ([`JointUNet2DModel`]): The model after task K.
        class_names (`list[str]`): The name of every class of the model's head, by class index.
        class_order (`list[int]`): The order in which its run was to learn the classes.
        tasks (`list[list[int]]`): The classes of each of its K tasks.
        accuracy_matrix (`list[list[float]]`, *optional*): Its run's accuracy matrix, K rows, row `i` with `i + 1`
            entries (NaN where an accuracy was not measured); `None` for a checkpoint that did not record it.
    """

    source: str
    model: JointUNet2DModel
    class_names: list[str]
    class_order: list[int]
    tasks: list[list[int]]
    accuracy_matrix: list[list[float]] | None = None

    @property
    def num_tasks(self) -> int:
        """`int`: K, the tasks it has learned; the run that continues it starts at task K+1."""
        return len(self.tasks)

    @property
    def seen_classes(self) -> list[int]:
        """`list[int]`: The classes it has learned, in learning order."""
        return [class_index for task in self.tasks for class_index in task]

    @classmethod
    def from_pipeline(cls, pipeline: JDCLPipeline, source: str) -> "TaskCheckpoint | None":
        r"""
        The checkpoint a pipeline saved after a task holds, or `None` for a pipeline that records no task (one saved
        by hand: a run starts its first task from its model instead).

        Args:
            pipeline ([`JDCLPipeline`]): The loaded pipeline.
            source (`str`): Where it was loaded from, for messages.
        """
        config = pipeline.config
        task_index, seen_classes = config.get("task_index"), config.get("seen_classes")
        if task_index is None or seen_classes is None:
            return None
        class_order = list(config.get("class_order") or seen_classes)
        tasks = config.get("tasks")
        if tasks is None:
            # Saved before pipelines recorded their tasks: its run cut its class order into `num_tasks` tasks.
            num_tasks = config.get("num_tasks")
            tasks = split_into_tasks(class_order, num_tasks)[:task_index] if num_tasks else []
            if [c for task in tasks for c in task] != list(seen_classes):
                raise ValueError(
                    f"The checkpoint {source} has seen classes {list(seen_classes)} but does not record which task "
                    "brought which; continue it from a checkpoint saved by this jdcl version."
                )
        if [c for task in tasks for c in task] != list(seen_classes) or len(tasks) != task_index:
            raise ValueError(
                f"The checkpoint {source} contradicts itself: it was saved after task {task_index} with seen classes "
                f"{list(seen_classes)}, but records the tasks {tasks}. Its model_index.json was edited; restore it."
            )
        recorded = config.get("accuracy_matrix")
        return cls(
            source=source,
            model=pipeline.unet,
            class_names=list(pipeline.class_names),
            class_order=class_order,
            tasks=[list(task) for task in tasks],
            accuracy_matrix=accuracy_rows_from_json(recorded[:task_index]) if recorded is not None else None,
        )

    def align_data(self, data: ClassificationData, class_names_map: Mapping[str, str] | None) -> ClassificationData:
        r"""
        The data set with its labels in the checkpoint's class indices, so that class `c` means the same in both.

        Args:
            data ([`ClassificationData`]): The data set of the continuing run.
            class_names_map (`Mapping[str, str]`, *optional*):
                The checkpoint's name of data-set classes whose names differ (`--class_names_map`).

        Returns:
            [`ClassificationData`]: `data` itself when its classes are the checkpoint's, else a relabelled copy.
        """
        mapping = dict(class_names_map or {})
        unknown = sorted(set(mapping) - set(data.class_names))
        if unknown:
            raise ValueError(
                f"`--class_names_map` renames {unknown}, which are not classes of the data set {data.class_names}."
            )
        renamed = [mapping.get(name, name) for name in data.class_names]
        if renamed == self.class_names:
            return data
        foreign = [name for name in renamed if name not in self.class_names]
        repeated = sorted({name for name in renamed if renamed.count(name) > 1})
        if foreign or repeated:
            problem = f"{foreign} are not classes of the checkpoint" if foreign else f"{repeated} are named twice"
            raise ValueError(
                f"The data set's classes do not match those of the checkpoint {self.source}: {problem}.\n"
                f"  data set:   {renamed}\n  checkpoint: {self.class_names}\n"
                "Map the data set's names to the checkpoint's with --class_names_map "
                '\'{"data set name": "checkpoint name", ...}\'.'
            )
        to_checkpoint = [self.class_names.index(name) for name in renamed]

        def relabel(split: datasets.Dataset) -> datasets.Dataset:
            features = split.features.copy()
            features[data.label_column] = datasets.ClassLabel(names=self.class_names)
            return split.map(
                lambda batch: {data.label_column: [to_checkpoint[label] for label in batch[data.label_column]]},
                batched=True,
                features=features,
                desc="Relabelling to the checkpoint's classes",
            )

        return ClassificationData(
            train=relabel(data.train),
            test=relabel(data.test),
            image_column=data.image_column,
            label_column=data.label_column,
            class_names=list(self.class_names),
        )

    def new_tasks(self, class_order: list[int] | None, num_tasks: int) -> list[list[int]]:
        r"""
        The tasks of the continuing run: the classes it names that the checkpoint has not seen, cut into `num_tasks`.

        Args:
            class_order (`list[int]`, *optional*):
                The classes to learn, as resolved class indices: new classes only, or a whole order that starts with
                the classes the checkpoint has seen. `None` continues the checkpoint's own class order.
            num_tasks (`int`): Into how many tasks the new classes are cut (`--num_tasks`).
        """
        seen = self.seen_classes
        if class_order is None:
            new_classes = [c for c in self.class_order if c not in seen]
        else:
            starts_with_seen = sorted(class_order[: len(seen)]) == sorted(seen)
            new_classes = class_order[len(seen) :] if starts_with_seen else list(class_order)
            known = [self.class_names[c] for c in new_classes if c in seen]
            if known:
                raise ValueError(
                    f"The checkpoint {self.source} has already learned classes {known}. Pass in --class_order only "
                    f"the classes to learn next, or the whole order starting with the {len(seen)} classes it has seen."
                )
        if not new_classes:
            raise ValueError(
                f"The checkpoint {self.source} has learned every class of its run {self.class_order}; there is nothing "
                "to continue with. Name new classes with --class_order."
            )
        if num_tasks > len(new_classes):
            raise ValueError(
                f"Continuing {self.source}: {len(new_classes)} new classes cannot make {num_tasks} tasks; "
                f"--num_tasks counts the new tasks, pass --num_tasks {len(new_classes)} or less."
            )
        return split_into_tasks(new_classes, num_tasks)

    def continued_split(self, class_order: list[int] | None, num_tasks: int) -> ClassIncrementalSplit:
        r"""
        The tasks of the whole continued run: the checkpoint's, then the new ones ([`~TaskCheckpoint.new_tasks`]),
        which are logged.

        Args:
            class_order (`list[int]`, *optional*): As for [`~TaskCheckpoint.new_tasks`].
            num_tasks (`int`): How many new tasks.
        """
        new_tasks = self.new_tasks(class_order, num_tasks)
        log_continuation(self, new_tasks)
        return ClassIncrementalSplit(tasks=self.tasks + new_tasks)

    def accuracy_rows(self, measure_last_row: Callable[[], list[float]]) -> list[list[float]]:
        r"""
        The accuracy matrix rows of the checkpoint's tasks, with which the continued run's matrix starts: as its run
        recorded them, or, for a checkpoint that recorded none, its last row measured now (the earlier rows NaN).

        Args:
            measure_last_row (`Callable[[], list[float]]`): Measures the checkpoint's accuracy on each of its tasks.
        """
        if self.accuracy_matrix is not None:
            return self.accuracy_matrix
        logger.warning(
            f"The checkpoint {self.source} records no accuracy matrix: its row is measured now, the rows before it "
            "are unknown (NaN)."
        )
        return [[math.nan] * (i + 1) for i in range(self.num_tasks - 1)] + [measure_last_row()]


def load_task_checkpoint(folder, source: str) -> tuple[JointUNet2DModel, "TaskCheckpoint | None"]:
    r"""
    Loads a saved JDCL pipeline: its model, and the task checkpoint it holds (`None` for a pipeline saved by hand).

    Args:
        folder (`str` or `Path`): The local folder of the pipeline.
        source (`str`): Where it was loaded from, for messages.
    """
    try:
        pipeline = JDCLPipeline.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"The JDCL checkpoint {source} could not be loaded: {error}") from None
    return pipeline.unet, TaskCheckpoint.from_pipeline(pipeline, source)


def log_continuation(checkpoint: TaskCheckpoint, new_tasks: list[list[int]]) -> None:
    """One line on what a continuing run starts from and learns."""
    names = checkpoint.class_names
    logger.info(
        f"Continuing {checkpoint.source} after its task {checkpoint.num_tasks} (classes "
        f"{[names[c] for c in checkpoint.seen_classes]}): tasks {checkpoint.num_tasks + 1}-"
        f"{checkpoint.num_tasks + len(new_tasks)} learn {[[names[c] for c in task] for task in new_tasks]}."
    )


def load_pretrained_unet(config: JDCLTrainingConfig, num_classes: int) -> JointUNet2DModel:
    r"""
    The diffusers `UNet2DModel` of `--pretrained_unet` as a [`JointUNet2DModel`] with a fresh head of `num_classes`,
    seeded by `--seed`.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration.
        num_classes (`int`): The classes of the data set.
    """
    folder = download_checkpoint(config.pretrained_unet, flag="--pretrained_unet")
    subfolder = config.pretrained_unet_subfolder
    try:
        unet = UNet2DModel.from_pretrained(folder, subfolder=subfolder)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--pretrained_unet {config.pretrained_unet} holds no diffusers UNet2DModel"
            f"{f' in {subfolder}/' if subfolder else ''} ({error}); pass --pretrained_unet_subfolder unet for a "
            "pipeline folder."
        ) from None
    model = joint_unet_from_unet2d(
        unet,
        num_classes=num_classes,
        classifier_hidden_dim=config.unet_config["classifier_hidden_dim"],
        classifier_dropout=config.unet_config["classifier_dropout"],
        seed=config.seed,
    )
    check_resolution(model, config.resolution, f"--pretrained_unet {config.pretrained_unet}")
    return model


def load_run_start(
    config: JDCLTrainingConfig, num_classes: int
) -> tuple[JointUNet2DModel | None, TaskCheckpoint | None]:
    r"""
    What a run starts from, checked before any training.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration (`--pretrained_unet`,
            `--pretrained_model_name_or_path`, `--pretrained_revision`).
        num_classes (`int`): The classes of the data set.

    Returns:
        `tuple`: `(model, None)` for a diffusers UNet or a pipeline saved by hand, whose model the first task starts
        from; `(None, checkpoint)` for a task checkpoint of a run, which this run continues; `(None, None)` when neither
        is given.
    """
    if config.pretrained_unet is not None:
        return load_pretrained_unet(config, num_classes), None
    if config.pretrained_model_name_or_path is None:
        return None, None
    path, revision = config.pretrained_model_name_or_path, config.pretrained_revision
    source = f"{path}@{revision}" if revision is not None else path
    model, checkpoint = load_task_checkpoint(download_checkpoint(path, revision), source)
    check_resolution(model, config.resolution, source)
    if checkpoint is None:
        if model.config.num_classes != num_classes:
            raise ValueError(
                f"The pretrained model {source} has {model.config.num_classes} classes but the data set has "
                f"{num_classes}; start from a model of this data set's classes."
            )
        return model, None
    strategy = STRATEGIES[config.strategy]
    if strategy.state_outside_checkpoint is not None:
        able = sorted(name for name, other in STRATEGIES.items() if other.state_outside_checkpoint is None)
        raise ValueError(
            f"`--strategy {config.strategy}` cannot continue the checkpoint {source}: it needs "
            f"{strategy.state_outside_checkpoint}, which a published checkpoint does not hold. Continue it with one of "
            f"{able}, or resume the original run from its own --output_dir."
        )
    if not strategy.keeps_old_classes:
        logger.warning(
            f"`--strategy {config.strategy}` keeps nothing of earlier classes: the classes {checkpoint.seen_classes} "
            f"that {source} has learned will be forgotten."
        )
    return None, checkpoint


def check_resolution(model: JointUNet2DModel, resolution: int, source: str) -> None:
    """Refuses a pretrained model whose sample size is not the run's `--resolution`."""
    if model.config.sample_size != resolution:
        raise ValueError(
            f"The pretrained model {source} has sample_size={model.config.sample_size} but this run needs "
            f"{resolution} (--resolution); pass --resolution {model.config.sample_size}."
        )

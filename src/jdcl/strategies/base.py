"""What every continual-learning method shares: the task it is given, the tools it trains with, and the registry."""

import copy
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from accelerate import Accelerator
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..atomic import atomic_directory, write_json
from ..models.joint_unet_2d import JointUNet2DModel
from ..objectives import FixMatchObjective, JointObjective
from ..options import StrategyOption, UnknownKeysError, check_choice
from ..rehearsal import RehearsalSampler, RehearsalSet, RehearsalSource
from ..stage import StageRunner
from ..stage_data import StageData
from ..tensor_data import TensorData


STRATEGIES: dict[str, type["ContinualStrategy"]] = {}


def register_strategy(strategy_class: type["ContinualStrategy"]) -> type["ContinualStrategy"]:
    r"""
    Makes a method available as `--strategy <its name>`, and its options as flags and configuration keys. A class
    decorator; a method kept outside this package is registered when the module that defines it is imported.

    Args:
        strategy_class (`type[ContinualStrategy]`): The method.
    """
    from ..config import JDCLTrainingConfig

    if strategy_class.name in STRATEGIES:
        raise ValueError(f"A strategy named {strategy_class.name!r} is already registered.")
    known = registered_options()
    fields = set(JDCLTrainingConfig.field_names(include_options=False))
    for option in strategy_class.all_options().values():
        if option.name in fields:
            raise ValueError(
                f"Strategy {strategy_class.name!r}: option {option.name!r} is a field of the configuration; rename it."
            )
        if option.name in known and known[option.name] != option:
            raise ValueError(
                f"Strategy {strategy_class.name!r}: option {option.name!r} is declared differently by another "
                "strategy; name the option after its method, or reuse that declaration."
            )
    STRATEGIES[strategy_class.name] = strategy_class
    return strategy_class


def registered_options() -> dict[str, StrategyOption]:
    """The options of every registered method, by name (a method shares the declarations it inherits or imports)."""
    return {name: option for strategy in STRATEGIES.values() for name, option in strategy.all_options().items()}


def strategy_option_values(strategy: str, values: Mapping[str, Any]) -> dict[str, Any]:
    r"""
    The option values of the configuration of a run of `strategy`: its own from `values`, at their defaults when not
    given. Refuses unknown keys, and options of another method unless at their default.

    Args:
        strategy (`str`): The chosen method.
        values (`Mapping[str, Any]`): The configuration values that are not fields.
    """
    from ..config import JDCLTrainingConfig

    check_choice("strategy", strategy, sorted(STRATEGIES))
    own, known = STRATEGIES[strategy].all_options(), registered_options()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UnknownKeysError(
            f"Unknown configuration keys {unknown}. Valid keys: {', '.join(JDCLTrainingConfig.field_names())}."
        )
    for name, value in values.items():
        if name not in own and value != known[name].default:
            owners = sorted(other for other, method in STRATEGIES.items() if name in method.all_options())
            raise ValueError(
                f"`--{name}` is an option of `--strategy {' / '.join(owners)}`; `--strategy {strategy}` has no such "
                f"option. Drop it, or pass `--strategy {owners[0]}`."
            )
    return {name: values.get(name, option.default) for name, option in own.items()}


@dataclass
class Task:
    r"""
    One task of a class-incremental run, and what training it measures.

    Args:
        index (`int`): The task, from 0.
        new_classes (`list[int]`): The classes it brings.
        old_classes (`list[int]`): The classes of earlier tasks.
        stage_seconds (`dict[str, float]`): Wall time of each stage (and of rehearsal generation).
        rehearsal (`dict`, *optional*): The counts of its rehearsal set (see [`RehearsalSet.summary`]).
        rehearsal_set ([`RehearsalSet`], *optional*): The rehearsal set itself, for the quality metrics.
    """

    index: int
    new_classes: list[int]
    old_classes: list[int]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    rehearsal: dict | None = None
    rehearsal_set: RehearsalSet | None = field(default=None, repr=False)

    @property
    def seen_classes(self) -> list[int]:
        return self.old_classes + self.new_classes


class ContinualStrategy:
    r"""
    A continual-learning method: how one task is learned, given the model after the previous task.

    A method is one subclass in one file of `jdcl/strategies/`, registered with [`register_strategy`]; the task loop
    ([`ContinualTrainer`]) calls [`~ContinualStrategy.train_task`] once per task and knows nothing else of it.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration.
        accelerator (`Accelerator`): The run's accelerator.
        stages ([`StageRunner`]): Trains a model for one stage.
        train_data ([`TensorData`]): The labelled training examples (uint8): the whole training split, but in the
            semi-supervised setting.
        new_model (`Callable[[int], JointUNet2DModel]`): A fresh (or pretrained) model, from a seed.
        sampling_scheduler ([`SchedulerMixin`]): The scheduler rehearsal is sampled with.
        state_dir (`Path`, *optional*): Where a task's intermediate results are kept so a killed run resumes without
            redoing them (`<state_dir>/task-K/...`); nothing is kept when `None`.
        unlabeled_data ([`TensorData`], *optional*): The training examples learned from without labels
            (semi-supervised): all of them, the labelled ones included, as in the authors' code. Their labels say
            which task an image belongs to and measure the pseudo-labels; no loss reads them.
    """

    name: ClassVar[str]
    # Its own hyperparameters: flags, configuration keys and run identity, read as `config.<name>`. A subclass has its
    # parents' options and its own.
    options: ClassVar[tuple[StrategyOption, ...]] = ()
    # Whether its stages on real data learn from unlabelled images too (`--labeled_fraction`, `--labeled_per_class`):
    # they do when their objective is `local_objective()`'s. Each method declares it itself, as a subclass with its own
    # objective no longer does (see `learns_unlabeled`).
    learns_from_unlabeled: ClassVar[bool] = False
    # Whether it learns old classes from generated rehearsal (`--replay_samples_per_class` must then be >= 1).
    rehearses: ClassVar[bool] = False
    # What the model card of each task says of the method, in one or two sentences.
    card_description: ClassVar[str] = (
        "A continual-learning method that learns each task starting from the model after the previous one."
    )
    # Continuing a published checkpoint (`--pretrained_model_name_or_path .../task-K`): whether the method keeps the
    # classes learned before (a method that does not is warned about), and what of its state lives only in its run's
    # folder, which the checkpoint lacks (a method with such state cannot continue one).
    keeps_old_classes: ClassVar[bool] = True
    state_outside_checkpoint: ClassVar[str | None] = None

    def __init__(
        self,
        config,
        accelerator: Accelerator,
        stages: StageRunner,
        train_data: TensorData,
        new_model: Callable[[int], JointUNet2DModel],
        sampling_scheduler: SchedulerMixin,
        state_dir: Path | None = None,
        unlabeled_data: TensorData | None = None,
    ):
        self.config = config
        self.accelerator = accelerator
        self.stages = stages
        self.train_data = train_data
        self.new_model = new_model
        self.sampling_scheduler = sampling_scheduler
        self.state_dir = state_dir
        self.unlabeled_data = unlabeled_data
        self.rehearsal_sampler = RehearsalSampler.from_config(config)

    @classmethod
    def all_options(cls) -> dict[str, StrategyOption]:
        """Its options and its parents', by name."""
        options = {}
        for klass in reversed(cls.__mro__):
            for option in vars(klass).get("options", ()):
                options[option.name] = option
        return options

    @classmethod
    def learns_unlabeled(cls) -> bool:
        """Whether the method itself (not a parent it inherits from) declares `learns_from_unlabeled = True`."""
        return vars(cls).get("learns_from_unlabeled", False)

    @classmethod
    def check_config(cls, config) -> None:
        r"""
        Refuses settings the method cannot honour, before any data is loaded (raise `ValueError` naming the flag).
        Each option's type, range and choices are checked before this.
        """
        if config.semi_supervised and not cls.learns_unlabeled():
            semi = sorted(name for name, strategy in STRATEGIES.items() if strategy.learns_unlabeled())
            raise ValueError(
                f"`--strategy {cls.name}` has no semi-supervised stage; `--labeled_fraction` and `--labeled_per_class` "
                f"work with {', '.join(semi)}."
            )

    @classmethod
    def check_classes(cls, config, num_classes: int) -> None:
        r"""Refuses settings that do not fit the run's classes, before any training (raise `ValueError`)."""

    def train_task(self, task: Task, previous: JointUNet2DModel | None) -> JointUNet2DModel:
        r"""
        Learns `task`.

        Args:
            task ([`Task`]): The task; its `stage_seconds` and `rehearsal` are filled in.
            previous ([`JointUNet2DModel`], *optional*): The model after the previous task; `None` before the first.

        Returns:
            [`JointUNet2DModel`]: the model after this task (evaluated, saved as `task-K`, and the next `previous`).
        """
        raise NotImplementedError

    def task_generator(self, task: Task, model: JointUNet2DModel) -> JointUNet2DModel:
        r"""
        The model that generates after `task` (what the quality metrics sample): the task's model itself, unless the
        method keeps a separate generator.

        Args:
            task ([`Task`]): The task just learned.
            model ([`JointUNet2DModel`]): What [`~ContinualStrategy.train_task`] returned for it.
        """
        return model

    # ------------------------------------------------------------------------------- tools the methods share

    def initial_model(self, previous: JointUNet2DModel | None, seed: int | None = None) -> JointUNet2DModel:
        """A copy of `previous`, or a new model (seeded by `seed`, the run's seed by default) before the first task."""
        if previous is not None:
            return copy.deepcopy(previous)
        return self.new_model(self.config.seed if seed is None else seed)

    def real_data(
        self, classes: list[int], buffer: TensorData | None = None, buffer_fields: dict | None = None
    ) -> StageData:
        r"""
        The real training images of `classes` (and their unlabelled images, semi-supervised), with a `buffer` of
        stored images (and the method's own values of each, `buffer_fields`: see [`StageData`]).
        """
        return StageData(
            real=self.train_data.subset(classes),
            buffer=buffer,
            buffer_fields=buffer_fields,
            unlabeled=self.unlabeled_data.subset(classes) if self.unlabeled_data is not None else None,
            unlabeled_batch_ratio=self.config.unlabeled_batch_ratio,
        )

    def local_objective(self) -> JointObjective:
        """The joint loss of a local stage, with the run's weights (FixMatch-style where labels are few)."""
        config = self.config
        if config.semi_supervised:
            return FixMatchObjective(
                diffusion=config.diffusion_loss_weight,
                classification=config.classification_loss_weight,
                pseudo_label_threshold=config.pseudo_label_threshold,
            )
        return JointObjective(diffusion=config.diffusion_loss_weight, classification=config.classification_loss_weight)

    def task_steps(self, task: Task) -> int:
        """The whole training budget of a task: the first task's, or one local plus one global stage."""
        config = self.config
        return (
            config.total_first_task_steps if task.index == 0 else config.local_train_steps + config.global_train_steps
        )

    def task_state_dir(self, task_index: int) -> Path | None:
        return self.state_dir / f"task-{task_index + 1}" if self.state_dir is not None else None

    def save_state_model(self, task: Task, name: str, model: JointUNet2DModel) -> None:
        r"""
        Keeps `model` as `state/task-K/<name>` for a resumed run, with the stage times of `task` so far (written by
        the main process, atomically).
        """
        if self.state_dir is not None and self.accelerator.is_main_process:
            with atomic_directory(self.task_state_dir(task.index) / name) as temporary:
                model.save_pretrained(temporary)
                write_json(task.stage_seconds, temporary / "stage_seconds.json")
        self.accelerator.wait_for_everyone()

    def load_state_model(self, task_index: int, name: str, task: Task | None = None) -> JointUNet2DModel | None:
        r"""
        The model kept as `state/task-K/<name>`, or `None`. Given the `task` it was kept for, the stage times kept
        with it are restored into `task.stage_seconds`.
        """
        if self.state_dir is None:
            return None
        saved = self.task_state_dir(task_index) / name
        if not (saved / "config.json").is_file():
            return None
        if task is not None and (saved / "stage_seconds.json").is_file():
            task.stage_seconds.update(json.loads((saved / "stage_seconds.json").read_text()))
        return JointUNet2DModel.from_pretrained(saved).to(self.accelerator.device).eval()

    def rehearsal(self, task: Task, sources: list[RehearsalSource]) -> RehearsalSet:
        r"""
        The task's rehearsal set: each source's classes at the run's quota, generated once and kept in the task's
        state folder (a resumed run reads it back).

        Args:
            task ([`Task`]): The task; its `rehearsal` counts and `stage_seconds["rehearsal"]` are filled in.
            sources (`list[RehearsalSource]`): Who generates which classes, in order.
        """
        start_time = time.time()
        saved = self.task_state_dir(task.index) / "rehearsal.safetensors" if self.state_dir is not None else None
        if saved is not None and saved.is_file():
            rehearsal = RehearsalSet.load(saved)
        else:
            parts = [
                self.rehearsal_sampler.generate(
                    self.accelerator,
                    self.sampling_scheduler,
                    source,
                    seed=self.config.seed + 1000 * (task.index + 1) + 100 * offset,
                    show_progress=self.stages.show_progress,
                )
                for offset, source in enumerate(sources)
            ]
            rehearsal = RehearsalSet.concatenate(parts)
            if saved is not None and self.accelerator.is_main_process:
                rehearsal.save(saved)
            self.accelerator.wait_for_everyone()
        task.rehearsal = rehearsal.summary()
        task.rehearsal_set = rehearsal
        task.stage_seconds["rehearsal"] = time.time() - start_time
        return rehearsal

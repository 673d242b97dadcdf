"""JDCL (Skierś & Deja, ICCV 2025): a local stage on the new data, generated rehearsal, a two-teacher global stage."""

from ..models.joint_unet_2d import JointUNet2DModel
from ..objectives import DistillationObjective
from ..options import StrategyOption
from ..rehearsal import RehearsalSource
from ..stage import GLOBAL, LOCAL
from ..stage_data import StageData
from .base import ContinualStrategy, Task, register_strategy


@register_strategy
class JDCLStrategy(ContinualStrategy):
    r"""
    JDCL. The first task trains the joint model on its real data. Every later task:

    1. a *local* model (a copy of the global model, or a new one with `--local_init scratch`) learns the new classes'
       real data with the joint loss;
    2. rehearsal is generated: old classes by the previous global model, new classes by the local model, each
       labelled by its own classifier;
    3. the *global* model (the previous one, further trained) learns the rehearsal alone, distilled from the previous
       global model on old classes and from the local model on new ones.

    With `--no_distillation` (the paper's "without KD" ablation) the global stage uses the plain joint loss instead.
    """

    name = "jdcl"
    learns_from_unlabeled = True
    rehearses = True
    card_description = (
        "JDCL: after the first task, a local model learns the new classes' real data; the global model then learns "
        "generated rehearsal alone (old classes sampled by the previous model, new ones by the local model), "
        "distilled from both. No real image of an earlier task is kept."
    )
    options = (
        StrategyOption(
            "no_distillation",
            bool,
            False,
            'The paper\'s "without KD" ablation: the global stage learns the rehearsal with the plain joint loss, '
            "without the two teachers.",
        ),
    )

    def train_first_task(self, task: Task, previous: JointUNet2DModel | None) -> JointUNet2DModel:
        """One joint stage on the first task's real data (from a pretrained model when the run has one)."""
        return self.stages.run(
            LOCAL,
            task.index,
            self.initial_model(previous),
            self.real_data(task.new_classes),
            self.config.total_first_task_steps,
            self.local_objective(),
            task.stage_seconds,
        )

    def train_task(self, task: Task, previous: JointUNet2DModel | None) -> JointUNet2DModel:
        config = self.config
        # 1. The first task has nothing to rehearse.
        if task.index == 0:
            return self.train_first_task(task, previous)

        # 2. The local stage, kept so that a resumed run does not train it again.
        local_model = self.load_state_model(task.index, "local", task=task)
        if local_model is None:
            local_init = previous if config.local_init == "global" else None
            local_model = self.stages.run(
                LOCAL,
                task.index,
                self.initial_model(local_init, seed=config.seed + task.index),
                self.real_data(task.new_classes),
                config.local_train_steps,
                self.local_objective(),
                task.stage_seconds,
            )
            self.save_state_model(task, "local", local_model)

        # 3. Rehearsal: old classes from the previous global model, new classes from the local model.
        rehearsal = self.rehearsal(
            task,
            [
                RehearsalSource(previous, task.old_classes, is_old=True),
                RehearsalSource(local_model, task.new_classes, is_old=False),
            ],
        )

        # 4. The global stage on the rehearsal alone, distilled from both teachers.
        if config.no_distillation:
            objective = self.local_objective()
        else:
            objective = DistillationObjective.from_config(config, old_teacher=previous, new_teacher=local_model)
        return self.stages.run(
            GLOBAL,
            task.index,
            self.initial_model(previous),
            StageData(rehearsal=rehearsal),
            config.global_train_steps,
            objective,
            task.stage_seconds,
        )

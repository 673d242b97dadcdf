"""Finetune, the lower bound: each task trains on its own real data only, and forgets the rest."""

from ..models.joint_unet_2d import JointUNet2DModel
from ..objectives import StageObjective
from ..stage import Stage
from .base import ContinualStrategy, Task, register_strategy


TRAIN = Stage("train", 4)


@register_strategy
class FinetuneStrategy(ContinualStrategy):
    r"""The joint loss on the new classes' real data, for a whole task's budget; no rehearsal."""

    name = "finetune"
    learns_from_unlabeled = True
    card_description = (
        "Finetune, the lower bound: each task trains on its own classes' real data only, with no rehearsal, so the "
        "model forgets earlier tasks."
    )
    keeps_old_classes = False

    def training_classes(self, task: Task) -> list[int]:
        return task.new_classes

    def task_objective(self, task: Task, previous: JointUNet2DModel | None) -> StageObjective:
        r"""
        What the task's one stage minimises: the joint loss (FixMatch-style where labels are few). A method that only
        changes the loss of finetuning overrides this alone.

        Args:
            task ([`Task`]): The task.
            previous ([`JointUNet2DModel`], *optional*): The model after the previous task (`None` for the first).
        """
        return self.local_objective()

    def train_task(self, task: Task, previous: JointUNet2DModel | None) -> JointUNet2DModel:
        return self.stages.run(
            TRAIN,
            task.index,
            self.initial_model(previous),
            self.real_data(self.training_classes(task)),
            self.task_steps(task),
            self.task_objective(task, previous),
            task.stage_seconds,
        )

"""The paper's "without joint modelling" ablation: a diffusion model and a classifier with separate weights."""

from ..models.joint_unet_2d import JointUNet2DModel
from ..objectives import DistillationObjective, JointObjective
from ..rehearsal import RehearsalSource
from ..stage import GLOBAL, LOCAL, Stage
from ..stage_data import StageData
from .base import ContinualStrategy, Task, register_strategy


LOCAL_GENERATOR = Stage("local-generator", 5)
GLOBAL_GENERATOR = Stage("global-generator", 6)


@register_strategy
class SeparateStrategy(ContinualStrategy):
    r"""
    JDCL's schedule with two models of the same architecture instead of one joint model: a diffusion-only generator
    (its head never runs) and a classifier (its decoder never runs), each trained and distilled as in JDCL. The
    generator samples the rehearsal and the classifier labels it. Twice the training compute of JDCL.

    The classifier is what each task's pipeline holds; the generator is kept in the run's state folder for the next
    task.
    """

    name = "separate"
    rehearses = True
    card_description = (
        "JDCL without joint modelling: a diffusion model generates the rehearsal and a classifier of the same "
        "architecture with its own weights (the model saved here) learns it, each trained and distilled as in JDCL."
    )
    state_outside_checkpoint = "its generator, which the published pipeline (its classifier) does not hold"

    def train_task(self, task: Task, previous: JointUNet2DModel | None) -> JointUNet2DModel:
        config = self.config
        previous_generator = self.load_state_model(task.index - 1, "generator") if task.index > 0 else None
        generator_objective = JointObjective(diffusion=config.diffusion_loss_weight, classification=0.0)
        classifier_objective = JointObjective(diffusion=0.0, classification=config.classification_loss_weight)

        # 1. Local stages: each model learns the new classes' real data.
        from_global = config.local_init == "global"
        steps = config.total_first_task_steps if task.index == 0 else config.local_train_steps
        local_generator = self.stages.run(
            LOCAL_GENERATOR,
            task.index,
            self.initial_model(previous_generator if from_global else None, seed=config.seed + task.index),
            self.real_data(task.new_classes),
            steps,
            generator_objective,
            task.stage_seconds,
        )
        local_classifier = self.stages.run(
            LOCAL,
            task.index,
            self.initial_model(previous if from_global else None, seed=config.seed + task.index + 1),
            self.real_data(task.new_classes),
            steps,
            classifier_objective,
            task.stage_seconds,
        )
        if task.index == 0:
            self.save_state_model(task, "generator", local_generator)
            return local_classifier

        # 2. Rehearsal: each generator samples its classes, each classifier labels them.
        rehearsal = StageData(
            rehearsal=self.rehearsal(
                task,
                [
                    RehearsalSource(previous_generator, task.old_classes, is_old=True, labeller=previous),
                    RehearsalSource(local_generator, task.new_classes, is_old=False, labeller=local_classifier),
                ],
            )
        )

        # 3. Global stages: both models distilled from their previous and local versions, on the rehearsal.
        distillation = DistillationObjective.from_config(config)
        generator = self.stages.run(
            GLOBAL_GENERATOR,
            task.index,
            self.initial_model(previous_generator),
            rehearsal,
            config.global_train_steps,
            DistillationObjective(
                old_teacher=previous_generator,
                new_teacher=local_generator,
                diffusion=distillation.diffusion,
                classification=0.0,
                distillation_diffusion=distillation.distillation_diffusion,
                distillation_classification=0.0,
                classification_warmup_steps=distillation.classification_warmup_steps,
            ),
            task.stage_seconds,
        )
        classifier = self.stages.run(
            GLOBAL,
            task.index,
            self.initial_model(previous),
            rehearsal,
            config.global_train_steps,
            DistillationObjective(
                old_teacher=previous,
                new_teacher=local_classifier,
                diffusion=0.0,
                classification=distillation.classification,
                distillation_diffusion=0.0,
                distillation_classification=distillation.distillation_classification,
                classification_warmup_steps=distillation.classification_warmup_steps,
            ),
            task.stage_seconds,
        )
        self.save_state_model(task, "generator", generator)
        return classifier

    def task_generator(self, task: Task, model: JointUNet2DModel) -> JointUNet2DModel:
        return self.load_state_model(task.index, "generator")

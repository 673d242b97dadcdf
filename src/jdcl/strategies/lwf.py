"""Learning without Forgetting (Li & Hoiem, ECCV 2016): the new classes' real data, with the previous model's logits
of the old classes distilled on it."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..models.joint_unet_2d import JointUNet2DModel
from ..objectives import JointObjective, StageOutputs, frozen_teacher_forward
from ..options import StrategyOption
from .base import Task, register_strategy
from .finetune import FinetuneStrategy


@dataclass
class LwFObjective(JointObjective):
    r"""
    The joint loss plus, weighted like the CE times `alpha`, the distillation of the `teacher`'s logits of `old_classes`
    on the same clean views: `T^2 * KL(softmax(teacher / T) || softmax(student / T))` over the old classes.

    Args:
        diffusion (`float`, *optional*, defaults to 1.0): Weight of the noise MSE.
        classification (`float`, *optional*, defaults to 1e-3): Weight of the CE (and of the distillation).
        teacher ([`JointUNet2DModel`], *optional*): The previous model; the joint loss alone without it.
        old_classes (`list[int]`, *optional*): The classes whose logits are distilled.
        alpha (`float`, *optional*, defaults to 1.0): Weight of the distillation, relative to the CE.
        temperature (`float`, *optional*, defaults to 2.0): The softmax temperature `T` (LwF: 2).
    """

    teacher: JointUNet2DModel | None = None
    old_classes: list[int] = field(default_factory=list)
    alpha: float = 1.0
    temperature: float = 2.0

    def __post_init__(self):
        self.to(None)

    def to(self, device, memory_format=torch.contiguous_format, compile_kwargs=None) -> "LwFObjective":
        self.teacher_forward = None
        if self.teacher is not None and self.old_classes:
            self.teacher_forward = frozen_teacher_forward(
                self.teacher, device, memory_format, compile_kwargs, predict_noise=False
            )
        return self

    def __call__(self, outputs: StageOutputs) -> dict[str, torch.Tensor]:
        terms = super().__call__(outputs)
        if self.teacher_forward is None or outputs.logits is None:
            return terms
        old = torch.as_tensor(self.old_classes, device=outputs.logits.device)
        with torch.no_grad():
            _, teacher_logits = self.teacher_forward(outputs.noisy_sample, outputs.timesteps, outputs.clean_sample)
        student = F.log_softmax(outputs.logits.float()[:, old] / self.temperature, dim=-1)
        target = F.log_softmax(teacher_logits.float()[:, old] / self.temperature, dim=-1)
        distillation = F.kl_div(student, target, log_target=True, reduction="batchmean") * self.temperature**2
        loss = terms["loss"] + self.classification * self.alpha * distillation
        return {**terms, "loss": loss, "distillation": distillation.detach()}


@register_strategy
class LwFStrategy(FinetuneStrategy):
    r"""
    Learning without Forgetting in its class-incremental form: each task trains the previous model on the new classes'
    real data with the joint loss, and keeps the old classes' logits close to the previous model's on the same images
    (`--lwf_alpha`, `--lwf_temperature`). Nothing is stored or generated; the generator is trained on the new data only.
    """

    name = "lwf"
    keeps_old_classes = True
    card_description = (
        "Learning without Forgetting: each task trains on its own classes' real data, with the previous model's "
        "logits of the earlier classes distilled on the same images; no data is stored or generated."
    )
    options = (
        StrategyOption("lwf_alpha", float, 1.0, "LwF: weight of the distillation, relative to the CE.", low=0),
        StrategyOption(
            "lwf_temperature", float, 2.0, "LwF: softmax temperature of the distillation.", low=0, low_inclusive=False
        ),
    )

    def task_objective(self, task: Task, previous: JointUNet2DModel | None) -> LwFObjective:
        config = self.config
        return LwFObjective(
            diffusion=config.diffusion_loss_weight,
            classification=config.classification_loss_weight,
            teacher=previous,
            old_classes=task.old_classes,
            alpha=config.lwf_alpha,
            temperature=config.lwf_temperature,
        )

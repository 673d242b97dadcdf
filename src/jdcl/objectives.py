"""What a training stage minimises: the joint loss of a local stage, and the two-teacher distillation of a global one.

An objective says which outputs of the model it reads (the noise prediction, the logits of the clean view, or both;
a stage computes only those), owns its teachers, its weights and its warm-up, and turns one step's outputs into the
loss and its logged terms.
"""

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from .compilation import compiled
from .models.joint_unet_2d import JointUNet2DModel


@dataclass
class StageOutputs:
    r"""
    One training step of a stage, as its objective sees it.

    Args:
        noise_pred (`torch.Tensor`, *optional*): The student's noise prediction; `None` when the objective reads none.
        logits (`torch.Tensor`, *optional*): The student's logits of the clean view; `None` when it reads none.
        noise (`torch.Tensor`): The noise that was added.
        labels (`torch.Tensor`): The batch's labels (given or generated).
        is_old (`torch.Tensor`): Which samples are rehearsal of classes of earlier tasks. On the host (as stages pass
            it), splitting the batch into its groups costs no wait for the device.
        noisy_sample (`torch.Tensor`): The noisy input `x_t` (teachers see the same).
        timesteps (`torch.Tensor`): Its timesteps.
        clean_sample (`torch.Tensor`): The clean classifier view.
        step (`int`): The step of the stage, from 0.
        unlabeled_logits (`torch.Tensor`, *optional*): The student's logits of the strong views of the batch's
            unlabelled images (semi-supervised stages; `noise_pred` is then of those images only, and `logits` of
            the weak views of the labelled ones).
        weak_logits (`torch.Tensor`, *optional*): Its logits of their weak views, without gradient.
        fields (`dict[str, torch.Tensor]`, *optional*): A method's own values of the batch's buffer rows, by name
            (see [`StageBatch.fields`]): the buffer's rows are the last `len(value)` rows of the batch.
    """

    noise_pred: torch.Tensor | None
    logits: torch.Tensor | None
    noise: torch.Tensor
    labels: torch.Tensor
    is_old: torch.Tensor
    noisy_sample: torch.Tensor
    timesteps: torch.Tensor
    clean_sample: torch.Tensor
    step: int
    unlabeled_logits: torch.Tensor | None = None
    weak_logits: torch.Tensor | None = None
    fields: dict[str, torch.Tensor] = field(default_factory=dict)


class StageObjective(Protocol):
    r"""
    What a stage trains against: any object with these members (the built-in objectives, or a method's own). The
    stage runner computes the outputs it reads, moves it to the device, and calls it on every step.

    Attributes:
        predict_noise (`bool`): Whether it reads `StageOutputs.noise_pred`; a stage without it skips the decoder.
        classify (`bool`): Whether it reads `StageOutputs.logits`; a stage without it skips the classifier.
    """

    @property
    def predict_noise(self) -> bool: ...

    @property
    def classify(self) -> bool: ...

    def to(
        self,
        device: torch.device | None,
        memory_format: torch.memory_format = torch.contiguous_format,
        compile_kwargs: dict | None = None,
    ) -> "StageObjective":
        r"""Puts its teachers (if any) on the stage's device, frozen and in eval mode; returns itself."""
        ...

    def __call__(self, outputs: StageOutputs) -> dict[str, torch.Tensor]:
        r"""The step's `"loss"` (to minimise) and the terms to log, by name."""
        ...


@dataclass
class TeacherOutputs:
    r"""
    A teacher's outputs on its own group of a batch (`None` for what is not distilled).

    Args:
        noise_pred (`torch.Tensor`, *optional*): Its noise prediction on the group's noisy samples.
        logits (`torch.Tensor`, *optional*): Its logits on the group's clean samples.
    """

    noise_pred: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def stage_outputs(
    unet: JointUNet2DModel,
    noisy_sample: torch.Tensor,
    timesteps: torch.Tensor,
    clean_sample: torch.Tensor,
    predict_noise: bool = True,
    classify: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""
    The noise prediction and the logits a stage needs, each `None` when not needed: both from one
    [`~JointUNet2DModel.joint_forward`], the noise alone from the plain UNet forward, or the logits alone from
    [`~JointUNet2DModel.classify`] (the encoder and head).

    Args:
        unet ([`JointUNet2DModel`]): The model (a student or a teacher).
        noisy_sample (`torch.Tensor`): Noisy images `x_t`.
        timesteps (`torch.Tensor`): Their timesteps.
        clean_sample (`torch.Tensor`): Clean images for the classifier.
        predict_noise (`bool`, *optional*, defaults to `True`): Whether to compute the noise prediction.
        classify (`bool`, *optional*, defaults to `True`): Whether to compute the logits of the clean images.
    """
    if predict_noise and classify:
        return unet.joint_forward(noisy_sample, timesteps, clean_sample, return_dict=False)
    if predict_noise:
        return unet(noisy_sample, timesteps).sample, None
    if classify:
        return None, unet.classify(clean_sample)
    raise ValueError("A training stage must compute the noise prediction, the logits or both.")


class JointForward(torch.nn.Module):
    r"""
    Routes `forward` to [`stage_outputs`], so that DDP (which syncs the gradients of `forward` calls only) can wrap a
    stage's training step, and `torch.compile` can compile a teacher's, whichever outputs its objective reads.

    Args:
        unet ([`JointUNet2DModel`]): The model being trained, or a teacher.
        predict_noise (`bool`, *optional*, defaults to `True`): Whether to compute the noise prediction.
        classify (`bool`, *optional*, defaults to `True`): Whether to compute the logits of the clean images.
    """

    def __init__(self, unet: JointUNet2DModel, predict_noise: bool = True, classify: bool = True):
        super().__init__()
        self.unet = unet
        self.predict_noise = predict_noise
        self.classify = classify

    def forward(
        self, noisy_sample: torch.Tensor, timesteps: torch.Tensor, clean_sample: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return stage_outputs(self.unet, noisy_sample, timesteps, clean_sample, self.predict_noise, self.classify)


def frozen_teacher_forward(
    teacher: JointUNet2DModel,
    device: torch.device | None,
    memory_format: torch.memory_format = torch.contiguous_format,
    compile_kwargs: dict | None = None,
    predict_noise: bool = True,
    classify: bool = True,
) -> torch.nn.Module:
    r"""
    Puts `teacher` on `device`, frozen and in eval mode (dropout in a teacher only adds noise to its targets), and
    returns its forward ([`JointForward`]), compiled when `compile_kwargs` is given.

    Args:
        teacher ([`JointUNet2DModel`]): The teacher.
        device (`torch.device`): Where the stage trains (`None`: where the teacher is).
        memory_format (`torch.memory_format`, *optional*, defaults to `torch.contiguous_format`): The teacher's.
        compile_kwargs (`dict`, *optional*): `torch.compile` arguments for the forward; eager if `None`.
        predict_noise (`bool`, *optional*, defaults to `True`): Whether the forward computes the noise prediction.
        classify (`bool`, *optional*, defaults to `True`): Whether the forward computes the logits.
    """
    teacher.to(device, memory_format=memory_format).eval().requires_grad_(False)
    return compiled(JointForward(teacher, predict_noise, classify), compile_kwargs)


def group_indices(is_old: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    r"""
    The rows of a batch's `"old"` and `"new"` groups, as index tensors on `device`. Their lengths are known on the host:
    with `is_old` on the host, neither selecting a group nor weighing it by its size waits for the device.

    Args:
        is_old (`torch.Tensor`): `(B,)` bool, which samples are rehearsal of classes of earlier tasks.
        device (`torch.device`): Where the batch is.
    """
    return {
        "old": is_old.nonzero().flatten().to(device),
        "new": (~is_old).nonzero().flatten().to(device),
    }


def soft_cross_entropy(logits: torch.Tensor, target_probabilities: torch.Tensor) -> torch.Tensor:
    r"""
    Cross-entropy against a teacher's probabilities (temperature 1), averaged over the batch.

    Args:
        logits (`torch.Tensor` of shape `(batch, num_classes)`): The student's logits.
        target_probabilities (`torch.Tensor` of shape `(batch, num_classes)`): The teacher's probabilities.
    """
    return -(target_probabilities * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def _check_outputs(outputs: StageOutputs, objective: "JointObjective | DistillationObjective") -> None:
    if outputs.noise_pred is None and objective.predict_noise:
        raise ValueError(f"`noise_pred` is None but {objective} weighs a noise-prediction term; pass it.")
    if outputs.logits is None and objective.classify:
        raise ValueError(f"`logits` is None but {objective} weighs a classification term; pass them.")


def joint_loss(
    outputs: StageOutputs, diffusion: float, classification: float, classification_enabled: bool = True
) -> dict[str, torch.Tensor]:
    r"""
    `diffusion * MSE(eps_hat, eps) + classification * CE(logits(x0), y)`, each term only when its output is given.

    Args:
        outputs ([`StageOutputs`]): The step.
        diffusion (`float`): Weight of the noise MSE.
        classification (`float`): Weight of the cross-entropy.
        classification_enabled (`bool`, *optional*, defaults to `True`): `False` leaves the CE out (warm-up).

    Returns:
        `dict[str, torch.Tensor]`: `"loss"` and the unweighted terms `"diffusion"` and `"classification"`.
    """
    loss = outputs.noise.new_zeros((), dtype=torch.float32)
    terms = {}
    if outputs.noise_pred is not None:
        diffusion_term = F.mse_loss(outputs.noise_pred.float(), outputs.noise.float())
        loss = loss + diffusion * diffusion_term
        terms["diffusion"] = diffusion_term.detach()
    if outputs.logits is not None:
        classification_term = F.cross_entropy(outputs.logits.float(), outputs.labels)
        if classification_enabled:
            loss = loss + classification * classification_term
        terms["classification"] = classification_term.detach()
    return {"loss": loss, **terms}


@dataclass
class JointObjective:
    r"""
    JDCL's local-stage (and first-task) loss: `diffusion * MSE(eps_hat, eps) + classification * CE(logits(x0), y)`.

    A zero weight drops its output from the stage: `classification=0` trains a plain diffusion model (the decoder
    and encoder only), `diffusion=0` a plain classifier (the encoder and head only).

    Args:
        diffusion (`float`, *optional*, defaults to 1.0): Weight of the noise MSE.
        classification (`float`, *optional*, defaults to 1e-3): Weight of the cross-entropy (the paper: 1e-3).
    """

    diffusion: float = 1.0
    classification: float = 1e-3

    @property
    def predict_noise(self) -> bool:
        """Whether a term reads the noise prediction; a stage without one skips the decoder."""
        return self.diffusion != 0

    @property
    def classify(self) -> bool:
        """Whether a term reads the logits; a stage without one skips the classifier."""
        return self.classification != 0

    def to(
        self,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
        compile_kwargs: dict | None = None,
    ) -> "JointObjective":
        return self

    def __call__(self, outputs: StageOutputs) -> dict[str, torch.Tensor]:
        _check_outputs(outputs, self)
        return joint_loss(outputs, self.diffusion, self.classification)


@dataclass
class FixMatchObjective(JointObjective):
    r"""
    The joint loss of a semi-supervised local stage, as the authors' `DiffMatchFixed.training_step`
    (`models/standard_diffusion/diff_match.py`; the `diffmatch_pooling` configs select its pooling subclass) has it:
    the noise MSE on the unlabelled batch only, the CE on the weak views of the labelled images, and, weighted like
    the CE, the CE of the strong views of the unlabelled images against the pseudo-labels of their weak views, kept
    where the classifier's top probability (over all classes) reaches `pseudo_label_threshold` and scaled by the
    fraction kept (the authors' mean of the masked per-image CE).

    Args:
        diffusion (`float`, *optional*, defaults to 1.0): Weight of the noise MSE.
        classification (`float`, *optional*, defaults to 1e-3): Weight of both cross-entropies.
        pseudo_label_threshold (`float`, *optional*, defaults to 0.95): The confidence a pseudo-label needs.
    """

    pseudo_label_threshold: float = 0.95

    def pseudo_labels(self, weak_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        The pseudo-labels of a batch of unlabelled images, and which of them are kept.

        Args:
            weak_logits (`torch.Tensor` of shape `(batch, num_classes)`): The logits of their weak views.

        Returns:
            `tuple[torch.Tensor, torch.Tensor]`: the most probable class of each image, and whether its probability
            reaches `pseudo_label_threshold` (bool).
        """
        confidence, pseudo_labels = weak_logits.float().softmax(dim=-1).max(dim=-1)
        return pseudo_labels, confidence >= self.pseudo_label_threshold

    def __call__(self, outputs: StageOutputs) -> dict[str, torch.Tensor]:
        terms = super().__call__(outputs)
        if outputs.unlabeled_logits is None:
            return terms
        pseudo_labels, kept = self.pseudo_labels(outputs.weak_logits)
        fraction_kept = kept.float().mean()
        # The mean over the kept images, as a masked sum: selecting them would wait for the device to count them.
        per_image = F.cross_entropy(outputs.unlabeled_logits.float(), pseudo_labels, reduction="none")
        pseudo_label_term = (per_image * kept).sum() / kept.sum().clamp(min=1)
        loss = terms["loss"] + self.classification * fraction_kept * pseudo_label_term
        return {
            **terms,
            "loss": loss,
            "pseudo_label": pseudo_label_term.detach(),
            "pseudo_label_fraction": fraction_kept.detach(),
        }


@dataclass(repr=False)
class DistillationObjective:
    r"""
    JDCL's global-stage loss on a batch of generated samples, distilled from two teachers:

    `diffusion * MSE(eps_s, eps) + classification * CE(logits_s, y)`
    `+ sum over groups g in (new, old) of 2 * (n_g / N) * [distillation_diffusion * MSE(eps_s[g], eps_teacher_g[g])`
    `+ distillation_classification * SoftCE(logits_s[g], softmax(logits_teacher_g[g]))]`.

    The old group (classes of earlier tasks) is distilled from the previous global model, the new group from the
    local model; teachers see the same noisy input and timestep as the student, in eval mode. A group without a
    teacher (real new data in the single-stage ablation) is learnt from its data alone.

    Args:
        old_teacher ([`JointUNet2DModel`], *optional*): The previous global model.
        new_teacher ([`JointUNet2DModel`], *optional*): The local model.
        diffusion (`float`, *optional*, defaults to 0.01): Weight of the noise MSE against the true noise.
        classification (`float`, *optional*, defaults to 1e-5): Weight of the CE against the generated labels.
        distillation_diffusion (`float`, *optional*, defaults to 1.0): Weight of the noise distillation.
        distillation_classification (`float`, *optional*, defaults to 1e-3): Weight of the logit distillation.
        classification_warmup_steps (`int`, *optional*, defaults to 0): The CE and logit-distillation terms start
            after this many steps (the reference runs: 10k).
    """

    old_teacher: JointUNet2DModel | None = None
    new_teacher: JointUNet2DModel | None = None
    diffusion: float = 0.01
    classification: float = 1e-5
    distillation_diffusion: float = 1.0
    distillation_classification: float = 1e-3
    classification_warmup_steps: int = 0

    def __repr__(self) -> str:
        return (
            f"DistillationObjective(diffusion={self.diffusion}, classification={self.classification}, "
            f"distillation_diffusion={self.distillation_diffusion}, "
            f"distillation_classification={self.distillation_classification})"
        )

    @classmethod
    def from_config(
        cls,
        config,
        old_teacher: JointUNet2DModel | None = None,
        new_teacher: JointUNet2DModel | None = None,
    ) -> "DistillationObjective":
        r"""
        The global-stage objective of a run: its `global_*` and `distillation_*` weights and warm-up.

        Args:
            config ([`JDCLTrainingConfig`]): The run's configuration.
            old_teacher ([`JointUNet2DModel`], *optional*): The previous global model.
            new_teacher ([`JointUNet2DModel`], *optional*): The local model.
        """
        return cls(
            old_teacher=old_teacher,
            new_teacher=new_teacher,
            diffusion=config.global_diffusion_loss_weight,
            classification=config.global_classification_loss_weight,
            distillation_diffusion=config.distillation_diffusion_weight,
            distillation_classification=config.distillation_classification_weight,
            classification_warmup_steps=config.classification_warmup_steps,
        )

    @property
    def predict_noise(self) -> bool:
        """Whether a term reads the noise predictions; a stage without one skips the decoder."""
        return self.diffusion != 0 or self.distillation_diffusion != 0

    @property
    def classify(self) -> bool:
        """Whether a term reads the logits; a stage without one skips the classifier."""
        return self.classification != 0 or self.distillation_classification != 0

    def __post_init__(self):
        self.to(None)

    def to(
        self,
        device: torch.device | None,
        memory_format: torch.memory_format = torch.contiguous_format,
        compile_kwargs: dict | None = None,
    ) -> "DistillationObjective":
        r"""
        Puts the teachers on `device`, frozen and in eval mode (see [`frozen_teacher_forward`]).

        Args:
            device (`torch.device`): Where the stage trains (`None`: where the teachers are).
            memory_format (`torch.memory_format`, *optional*, defaults to `torch.contiguous_format`): The teachers'.
            compile_kwargs (`dict`, *optional*): `torch.compile` arguments for the teachers' forward; eager if `None`.
        """
        self.teacher_forwards = {
            name: frozen_teacher_forward(
                teacher, device, memory_format, compile_kwargs, self.predict_noise, self.classify
            )
            for name, teacher in (("old", self.old_teacher), ("new", self.new_teacher))
            if teacher is not None
        }
        return self

    @torch.no_grad()
    @record_function("jdcl.teachers")
    def teacher_outputs(self, outputs: StageOutputs) -> dict[str, TeacherOutputs]:
        r"""Each teacher's outputs on its own group of the batch (empty for a group without teacher or samples)."""
        groups = group_indices(outputs.is_old, outputs.noisy_sample.device)
        targets = {}
        for name, index in groups.items():
            teacher_forward = self.teacher_forwards.get(name)
            if teacher_forward is None or len(index) == 0:
                targets[name] = TeacherOutputs()
                continue
            noise_pred, logits = teacher_forward(
                outputs.noisy_sample[index], outputs.timesteps[index], outputs.clean_sample[index]
            )
            targets[name] = TeacherOutputs(noise_pred=noise_pred, logits=logits)
        return targets

    def loss(self, outputs: StageOutputs, teacher_outputs: dict[str, TeacherOutputs]) -> dict[str, torch.Tensor]:
        r"""
        The loss given the teachers' outputs (see the class docstring).

        Args:
            outputs ([`StageOutputs`]): The step.
            teacher_outputs (`dict[str, TeacherOutputs]`): The `"old"` and `"new"` teachers' outputs on their groups.

        Returns:
            `dict[str, torch.Tensor]`: `"loss"` and the unweighted terms `"diffusion"`, `"classification"`,
            `"distill_diffusion_old"`, `"distill_diffusion_new"`, `"distill_classification_old"`,
            `"distill_classification_new"` (0 for an empty group or one without a teacher; the noise terms only with
            a noise prediction, the classification terms only with logits).
        """
        _check_outputs(outputs, self)
        classification_enabled = outputs.step >= self.classification_warmup_steps
        terms = joint_loss(outputs, self.diffusion, self.classification, classification_enabled)
        loss = terms.pop("loss")
        batch_size = outputs.labels.shape[0]
        for name, index in group_indices(outputs.is_old, outputs.noise.device).items():
            group_size = len(index)
            targets = teacher_outputs[name]
            for kind, student_output, teacher_output in (
                ("diffusion", outputs.noise_pred, targets.noise_pred),
                ("classification", outputs.logits, targets.logits),
            ):
                if student_output is None:
                    continue
                if group_size == 0 or teacher_output is None:
                    terms[f"distill_{kind}_{name}"] = loss.new_zeros(())
                    continue
                group_weight = 2 * group_size / batch_size
                if kind == "diffusion":
                    term = F.mse_loss(student_output[index].float(), teacher_output.float())
                    loss = loss + group_weight * self.distillation_diffusion * term
                else:
                    term = soft_cross_entropy(student_output[index], teacher_output.float().softmax(dim=-1))
                    if classification_enabled:
                        loss = loss + group_weight * self.distillation_classification * term
                terms[f"distill_{kind}_{name}"] = term.detach()
        return {"loss": loss, **terms}

    def __call__(self, outputs: StageOutputs) -> dict[str, torch.Tensor]:
        return self.loss(outputs, self.teacher_outputs(outputs))

"""JDCL's training losses: the joint loss of a local stage and the two-teacher distillation loss of the global stage."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target_probabilities: torch.Tensor) -> torch.Tensor:
    r"""
    Cross-entropy against a teacher's probabilities (temperature 1), averaged over the batch.

    Args:
        logits (`torch.Tensor` of shape `(batch, num_classes)`): The student's logits.
        target_probabilities (`torch.Tensor` of shape `(batch, num_classes)`): The teacher's probabilities.
    """
    return -(target_probabilities * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


@dataclass
class JointLossWeights:
    r"""
    Weights of the joint loss `diffusion * MSE(eps_hat, eps) + classification * CE(logits(x0), y)`.

    Args:
        diffusion (`float`): Weight of the noise MSE.
        classification (`float`): Weight of the cross-entropy.
    """

    diffusion: float = 1.0
    classification: float = 1e-3

    @property
    def needs_noise_prediction(self) -> bool:
        """Whether any term reads the noise prediction; a stage without one skips the decoder."""
        return self.diffusion != 0

    @property
    def needs_logits(self) -> bool:
        """Whether any term reads the logits; a stage without one skips the classifier."""
        return self.classification != 0


def joint_loss(
    noise_pred: torch.Tensor | None,
    noise: torch.Tensor,
    logits: torch.Tensor | None,
    labels: torch.Tensor,
    weights: JointLossWeights,
    classification_enabled: bool = True,
) -> dict[str, torch.Tensor]:
    r"""
    The local-stage (and first-task) loss of JDCL.

    Args:
        noise_pred (`torch.Tensor`, *optional*): The predicted noise; `None` only when the diffusion weight is 0.
        noise (`torch.Tensor`): The noise that was added.
        logits (`torch.Tensor`, *optional*): Logits of the clean view; `None` only when the classification weight is 0.
        labels (`torch.Tensor`): Class labels.
        weights ([`JointLossWeights`]): The term weights.
        classification_enabled (`bool`, *optional*, defaults to `True`): `False` leaves the CE term out (warm-up).

    Returns:
        `dict[str, torch.Tensor]`: `"loss"` (the weighted sum) and the unweighted terms `"diffusion"` and
        `"classification"` (each only when its input is given).
    """
    _check_inputs(noise_pred, logits, weights)
    loss = noise.new_zeros((), dtype=torch.float32)
    terms = {}
    if noise_pred is not None:
        diffusion = F.mse_loss(noise_pred.float(), noise.float())
        loss = loss + weights.diffusion * diffusion
        terms["diffusion"] = diffusion.detach()
    if logits is not None:
        classification = F.cross_entropy(logits.float(), labels)
        if classification_enabled:
            loss = loss + weights.classification * classification
        terms["classification"] = classification.detach()
    return {"loss": loss, **terms}


def _check_inputs(
    noise_pred: torch.Tensor | None, logits: torch.Tensor | None, weights: "JointLossWeights | DistillationLossWeights"
) -> None:
    if noise_pred is None and weights.needs_noise_prediction:
        raise ValueError(f"`noise_pred` is None but {weights} weighs a noise-prediction term; pass it.")
    if logits is None and weights.needs_logits:
        raise ValueError(f"`logits` is None but {weights} weighs a classification term; pass them.")


@dataclass
class DistillationLossWeights:
    r"""
    Weights of JDCL's global-stage loss.

    Args:
        diffusion (`float`): Weight of the noise MSE against the true noise (the paper: 0.01).
        classification (`float`): Weight of the CE against the generated labels (the paper: 1e-5).
        distillation_diffusion (`float`): Weight of the noise distillation, times `2 * n_group / N` (the paper: 1).
        distillation_classification (`float`): Weight of the logit distillation, times `2 * n_group / N` (1e-3).
    """

    diffusion: float = 0.01
    classification: float = 1e-5
    distillation_diffusion: float = 1.0
    distillation_classification: float = 1e-3

    @property
    def needs_noise_prediction(self) -> bool:
        """Whether any term reads the noise predictions; a stage without one skips the decoder."""
        return self.diffusion != 0 or self.distillation_diffusion != 0

    @property
    def needs_logits(self) -> bool:
        """Whether any term reads the logits; a stage without one skips the classifier."""
        return self.classification != 0 or self.distillation_classification != 0


def distillation_loss(
    noise_pred: torch.Tensor | None,
    noise: torch.Tensor,
    logits: torch.Tensor | None,
    labels: torch.Tensor,
    is_old: torch.Tensor,
    old_teacher_noise_pred: torch.Tensor | None,
    old_teacher_logits: torch.Tensor | None,
    new_teacher_noise_pred: torch.Tensor | None,
    new_teacher_logits: torch.Tensor | None,
    weights: DistillationLossWeights,
    classification_enabled: bool = True,
) -> dict[str, torch.Tensor]:
    r"""
    JDCL's global-stage loss on a batch of generated samples, distilled from two teachers:

    `diffusion * MSE(eps_s, eps) + classification * CE(logits_s, y)`
    `+ sum over groups g in (new, old) of 2 * (n_g / N) * [distillation_diffusion * MSE(eps_s[g], eps_teacher_g[g])`
    `+ distillation_classification * SoftCE(logits_s[g], softmax(logits_teacher_g[g]))]`.

    The teachers' outputs are given only for their own group (old: the previous global model; new: the local model),
    computed on the same noisy input and timestep as the student. A group whose teacher outputs are `None` is not
    distilled. A stage that weighs no noise-prediction term (or no classification term) passes `None` for the
    noise predictions (or the logits) of student and teachers, and those terms are left out.

    Args:
        noise_pred (`torch.Tensor` of shape `(N, C, H, W)`, *optional*): The student's noise prediction.
        noise (`torch.Tensor`): The noise that was added.
        logits (`torch.Tensor` of shape `(N, num_classes)`, *optional*): The student's logits on the clean samples.
        labels (`torch.Tensor` of shape `(N,)`): The generated labels.
        is_old (`torch.Tensor` of shape `(N,)`, bool): Which samples belong to classes of earlier tasks.
        old_teacher_noise_pred (`torch.Tensor`, *optional*): The previous model's noise prediction on `is_old`.
        old_teacher_logits (`torch.Tensor`, *optional*): The previous model's logits on `is_old`.
        new_teacher_noise_pred (`torch.Tensor`, *optional*): The local model's noise prediction on `~is_old`.
        new_teacher_logits (`torch.Tensor`, *optional*): The local model's logits on `~is_old`.
        weights ([`DistillationLossWeights`]): The term weights.
        classification_enabled (`bool`, *optional*, defaults to `True`):
            `False` leaves the CE and logit-distillation terms out (their warm-up).

    Returns:
        `dict[str, torch.Tensor]`: `"loss"` and the unweighted terms `"diffusion"`, `"classification"`,
        `"distill_diffusion_old"`, `"distill_diffusion_new"`, `"distill_classification_old"`,
        `"distill_classification_new"` (0 for an empty group or one without a teacher; the noise terms only with
        `noise_pred`, the classification terms only with `logits`).
    """
    _check_inputs(noise_pred, logits, weights)
    batch_size = labels.shape[0]
    outputs = {"diffusion": noise_pred, "classification": logits}
    # The terms against the true noise and the generated labels are the joint loss's, with the global stage's weights.
    terms = joint_loss(
        noise_pred,
        noise,
        logits,
        labels,
        JointLossWeights(diffusion=weights.diffusion, classification=weights.classification),
        classification_enabled,
    )
    loss = terms.pop("loss")

    groups = (
        ("old", is_old, {"diffusion": old_teacher_noise_pred, "classification": old_teacher_logits}),
        ("new", ~is_old, {"diffusion": new_teacher_noise_pred, "classification": new_teacher_logits}),
    )
    for name, mask, teacher_outputs in groups:
        group_size = int(mask.sum())
        for kind, student_output in outputs.items():
            if student_output is None:
                continue
            teacher_output = teacher_outputs[kind]
            # An empty group, or one without a teacher (e.g. real new data in the single-stage ablation), is learnt
            # from its data alone.
            if group_size == 0 or teacher_output is None:
                terms[f"distill_{kind}_{name}"] = loss.new_zeros(())
                continue
            group_weight = 2 * group_size / batch_size
            if kind == "diffusion":
                term = F.mse_loss(student_output[mask].float(), teacher_output.float())
                loss = loss + group_weight * weights.distillation_diffusion * term
            else:
                term = soft_cross_entropy(student_output[mask], teacher_output.float().softmax(dim=-1))
                if classification_enabled:
                    loss = loss + group_weight * weights.distillation_classification * term
            terms[f"distill_{kind}_{name}"] = term.detach()
    return {"loss": loss, **terms}

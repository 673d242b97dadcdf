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


def joint_loss(
    noise_pred: torch.Tensor,
    noise: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: JointLossWeights,
    classification_enabled: bool = True,
) -> dict[str, torch.Tensor]:
    r"""
    The local-stage (and first-task) loss of JDCL.

    Args:
        noise_pred (`torch.Tensor`): The predicted noise.
        noise (`torch.Tensor`): The noise that was added.
        logits (`torch.Tensor`): Logits of the clean view.
        labels (`torch.Tensor`): Class labels.
        weights ([`JointLossWeights`]): The term weights.
        classification_enabled (`bool`, *optional*, defaults to `True`): `False` leaves the CE term out (warm-up).

    Returns:
        `dict[str, torch.Tensor]`: `"loss"` (the weighted sum) and the unweighted terms `"diffusion"` and
        `"classification"`.
    """
    diffusion = F.mse_loss(noise_pred.float(), noise.float())
    classification = F.cross_entropy(logits.float(), labels)
    loss = weights.diffusion * diffusion
    if classification_enabled:
        loss = loss + weights.classification * classification
    return {"loss": loss, "diffusion": diffusion.detach(), "classification": classification.detach()}


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


def distillation_loss(
    noise_pred: torch.Tensor,
    noise: torch.Tensor,
    logits: torch.Tensor,
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
    distilled.

    Args:
        noise_pred (`torch.Tensor` of shape `(N, C, H, W)`): The student's noise prediction.
        noise (`torch.Tensor`): The noise that was added.
        logits (`torch.Tensor` of shape `(N, num_classes)`): The student's logits on the clean samples.
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
        `"distill_classification_new"` (0 for an empty group).
    """
    batch_size = noise_pred.shape[0]
    diffusion = F.mse_loss(noise_pred.float(), noise.float())
    classification = F.cross_entropy(logits.float(), labels)
    loss = weights.diffusion * diffusion
    if classification_enabled:
        loss = loss + weights.classification * classification
    terms = {"diffusion": diffusion.detach(), "classification": classification.detach()}

    groups = (
        ("old", is_old, old_teacher_noise_pred, old_teacher_logits),
        ("new", ~is_old, new_teacher_noise_pred, new_teacher_logits),
    )
    for name, mask, teacher_noise_pred, teacher_logits in groups:
        group_size = int(mask.sum())
        zero = noise_pred.new_zeros((), dtype=torch.float32)
        if group_size == 0:
            terms[f"distill_diffusion_{name}"] = zero
            terms[f"distill_classification_{name}"] = zero
            continue
        if teacher_noise_pred is None or teacher_logits is None:
            # A group without a teacher is learnt from its data alone (e.g. real new data in the single-stage
            # ablation).
            terms[f"distill_diffusion_{name}"] = zero
            terms[f"distill_classification_{name}"] = zero
            continue
        group_weight = 2 * group_size / batch_size
        distill_diffusion = F.mse_loss(noise_pred[mask].float(), teacher_noise_pred.float())
        distill_classification = soft_cross_entropy(logits[mask], teacher_logits.float().softmax(dim=-1))
        loss = loss + group_weight * weights.distillation_diffusion * distill_diffusion
        if classification_enabled:
            loss = loss + group_weight * weights.distillation_classification * distill_classification
        terms[f"distill_diffusion_{name}"] = distill_diffusion.detach()
        terms[f"distill_classification_{name}"] = distill_classification.detach()
    return {"loss": loss, **terms}

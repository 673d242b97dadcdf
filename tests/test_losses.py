import math

import pytest
import torch
import torch.nn.functional as F

from jdcl.losses import DistillationLossWeights, JointLossWeights, distillation_loss, joint_loss, soft_cross_entropy


def test_soft_cross_entropy_hand_case():
    logits = torch.tensor([[0.0, 0.0]])
    target = torch.tensor([[0.25, 0.75]])
    assert math.isclose(soft_cross_entropy(logits, target).item(), math.log(2), rel_tol=1e-6)
    # Against a one-hot target it is the ordinary cross-entropy.
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 1])
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(labels, 3).float()), F.cross_entropy(logits, labels))


def test_joint_loss_weights_and_warmup():
    noise_pred, noise = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    logits, labels = torch.zeros(2, 4), torch.tensor([0, 3])
    terms = joint_loss(noise_pred, noise, logits, labels, JointLossWeights(diffusion=2.0, classification=0.5))
    assert math.isclose(terms["diffusion"].item(), 1.0)
    assert math.isclose(terms["classification"].item(), math.log(4), rel_tol=1e-6)
    assert math.isclose(terms["loss"].item(), 2.0 + 0.5 * math.log(4), rel_tol=1e-6)
    warm = joint_loss(noise_pred, noise, logits, labels, JointLossWeights(2.0, 0.5), classification_enabled=False)
    assert math.isclose(warm["loss"].item(), 2.0)


def test_distillation_loss_matches_the_papers_formula():
    torch.manual_seed(0)
    batch = 4
    noise_pred, noise = torch.randn(batch, 1, 2, 2), torch.randn(batch, 1, 2, 2)
    logits, labels = torch.randn(batch, 5), torch.tensor([0, 1, 3, 4])
    is_old = torch.tensor([True, True, True, False])
    old_eps, new_eps = torch.randn(3, 1, 2, 2), torch.randn(1, 1, 2, 2)
    old_logits, new_logits = torch.randn(3, 5), torch.randn(1, 5)
    weights = DistillationLossWeights(0.01, 1e-5, 1.0, 1e-3)
    terms = distillation_loss(
        noise_pred, noise, logits, labels, is_old, old_eps, old_logits, new_eps, new_logits, weights
    )
    expected = (
        0.01 * F.mse_loss(noise_pred, noise)
        + 1e-5 * F.cross_entropy(logits, labels)
        + 2 * (1 / 4) * F.mse_loss(noise_pred[3:], new_eps)
        + 2 * (3 / 4) * F.mse_loss(noise_pred[:3], old_eps)
        + 1e-3 * 2 * (1 / 4) * -(new_logits.softmax(-1) * logits[3:].log_softmax(-1)).sum(-1).mean()
        + 1e-3 * 2 * (3 / 4) * -(old_logits.softmax(-1) * logits[:3].log_softmax(-1)).sum(-1).mean()
    )
    assert torch.allclose(terms["loss"], expected, atol=1e-6)
    # Warm-up: without the CE and the logit distillation.
    warm = distillation_loss(
        noise_pred,
        noise,
        logits,
        labels,
        is_old,
        old_eps,
        old_logits,
        new_eps,
        new_logits,
        weights,
        classification_enabled=False,
    )
    expected_warm = (
        0.01 * F.mse_loss(noise_pred, noise)
        + 2 * (1 / 4) * F.mse_loss(noise_pred[3:], new_eps)
        + 2 * (3 / 4) * F.mse_loss(noise_pred[:3], old_eps)
    )
    assert torch.allclose(warm["loss"], expected_warm, atol=1e-6)


def test_distillation_loss_group_without_teacher_is_not_distilled():
    noise_pred, noise = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    logits, labels = torch.randn(2, 3), torch.tensor([0, 2])
    is_old = torch.tensor([True, False])
    weights = DistillationLossWeights(1.0, 0.0, 1.0, 0.0)
    terms = distillation_loss(
        noise_pred, noise, logits, labels, is_old, noise[:1] * 0, logits[:1], None, None, weights
    )
    expected = F.mse_loss(noise_pred, noise) + 2 * 0.5 * F.mse_loss(noise_pred[:1], torch.zeros(1, 1, 2, 2))
    assert torch.allclose(terms["loss"], expected, atol=1e-6)
    assert terms["distill_diffusion_new"].item() == 0.0


def test_a_loss_without_one_output_leaves_its_terms_out():
    torch.manual_seed(0)
    noise_pred, noise = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 3, 4])
    is_old = torch.tensor([True, True, False, False])
    old_eps, new_eps, old_logits, new_logits = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2), *torch.randn(2, 2, 5)

    # A classifier-only stage (the separate ablation's classifier): the logits' terms, and exactly those.
    classifier_weights = DistillationLossWeights(0.0, 1e-2, 0.0, 0.5)
    terms = distillation_loss(
        None, noise, logits, labels, is_old, None, old_logits, None, new_logits, classifier_weights
    )
    expected = (
        1e-2 * F.cross_entropy(logits, labels)
        + 0.5 * soft_cross_entropy(logits[:2], old_logits.softmax(-1))
        + 0.5 * soft_cross_entropy(logits[2:], new_logits.softmax(-1))
    )
    assert torch.allclose(terms["loss"], expected, atol=1e-6)
    assert "diffusion" not in terms and "distill_diffusion_old" not in terms
    # With every output given, the same weights give the same loss: the skipped terms weighed nothing.
    full = distillation_loss(
        noise_pred, noise, logits, labels, is_old, old_eps, old_logits, new_eps, new_logits, classifier_weights
    )
    assert torch.allclose(full["loss"], terms["loss"], atol=1e-6)

    # A generator-only stage.
    generator_terms = joint_loss(noise_pred, noise, None, labels, JointLossWeights(diffusion=1.0, classification=0.0))
    assert torch.allclose(generator_terms["loss"], F.mse_loss(noise_pred, noise))
    assert set(generator_terms) == {"loss", "diffusion"}

    # An output that a weighted term needs cannot be left out.
    with pytest.raises(ValueError, match="`logits` is None"):
        joint_loss(noise_pred, noise, None, labels, JointLossWeights(diffusion=1.0, classification=1e-3))
    with pytest.raises(ValueError, match="`noise_pred` is None"):
        distillation_loss(
            None, noise, logits, labels, is_old, None, old_logits, None, new_logits, weights=DistillationLossWeights()
        )

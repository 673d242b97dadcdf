import math

import pytest
import torch
import torch.nn.functional as F

from jdcl.objectives import (
    DistillationObjective,
    JointObjective,
    StageOutputs,
    TeacherOutputs,
    group_indices,
    soft_cross_entropy,
    stage_outputs,
)

from .utils import tiny_unet


def step_outputs(noise_pred, noise, logits, labels, is_old=None, step=0) -> StageOutputs:
    batch = labels.shape[0]
    return StageOutputs(
        noise_pred=noise_pred,
        logits=logits,
        noise=noise,
        labels=labels,
        is_old=torch.zeros(batch, dtype=torch.bool) if is_old is None else is_old,
        noisy_sample=noise,
        timesteps=torch.zeros(batch, dtype=torch.long),
        clean_sample=noise,
        step=step,
    )


def test_soft_cross_entropy_hand_case():
    logits = torch.tensor([[0.0, 0.0]])
    target = torch.tensor([[0.25, 0.75]])
    assert math.isclose(soft_cross_entropy(logits, target).item(), math.log(2), rel_tol=1e-6)
    # Against a one-hot target it is the ordinary cross-entropy.
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 1])
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(labels, 3).float()), F.cross_entropy(logits, labels))


def test_joint_objective_weights():
    noise_pred, noise = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    logits, labels = torch.zeros(2, 4), torch.tensor([0, 3])
    terms = JointObjective(diffusion=2.0, classification=0.5)(step_outputs(noise_pred, noise, logits, labels))
    assert math.isclose(terms["diffusion"].item(), 1.0)
    assert math.isclose(terms["classification"].item(), math.log(4), rel_tol=1e-6)
    assert math.isclose(terms["loss"].item(), 2.0 + 0.5 * math.log(4), rel_tol=1e-6)


def paper_batch():
    torch.manual_seed(0)
    batch = 4
    noise_pred, noise = torch.randn(batch, 1, 2, 2), torch.randn(batch, 1, 2, 2)
    logits, labels = torch.randn(batch, 5), torch.tensor([0, 1, 3, 4])
    is_old = torch.tensor([True, True, True, False])
    teachers = {
        "old": TeacherOutputs(noise_pred=torch.randn(3, 1, 2, 2), logits=torch.randn(3, 5)),
        "new": TeacherOutputs(noise_pred=torch.randn(1, 1, 2, 2), logits=torch.randn(1, 5)),
    }
    return noise_pred, noise, logits, labels, is_old, teachers


def test_distillation_objective_matches_the_papers_formula():
    noise_pred, noise, logits, labels, is_old, teachers = paper_batch()
    objective = DistillationObjective(
        diffusion=0.01, classification=1e-5, distillation_diffusion=1.0, distillation_classification=1e-3
    )
    terms = objective.loss(step_outputs(noise_pred, noise, logits, labels, is_old), teachers)
    old, new = teachers["old"], teachers["new"]
    expected = (
        0.01 * F.mse_loss(noise_pred, noise)
        + 1e-5 * F.cross_entropy(logits, labels)
        + 2 * (1 / 4) * F.mse_loss(noise_pred[3:], new.noise_pred)
        + 2 * (3 / 4) * F.mse_loss(noise_pred[:3], old.noise_pred)
        + 1e-3 * 2 * (1 / 4) * -(new.logits.softmax(-1) * logits[3:].log_softmax(-1)).sum(-1).mean()
        + 1e-3 * 2 * (3 / 4) * -(old.logits.softmax(-1) * logits[:3].log_softmax(-1)).sum(-1).mean()
    )
    assert torch.allclose(terms["loss"], expected, atol=1e-6)


def test_distillation_warmup_leaves_the_classification_terms_out_until_its_step():
    noise_pred, noise, logits, labels, is_old, teachers = paper_batch()
    objective = DistillationObjective(classification_warmup_steps=5)
    old, new = teachers["old"], teachers["new"]
    expected_warm = (
        0.01 * F.mse_loss(noise_pred, noise)
        + 2 * (1 / 4) * F.mse_loss(noise_pred[3:], new.noise_pred)
        + 2 * (3 / 4) * F.mse_loss(noise_pred[:3], old.noise_pred)
    )
    warm = objective.loss(step_outputs(noise_pred, noise, logits, labels, is_old, step=4), teachers)
    assert torch.allclose(warm["loss"], expected_warm, atol=1e-6)
    # The terms are still reported during the warm-up.
    assert warm["classification"].item() > 0 and warm["distill_classification_old"].item() > 0
    after = objective.loss(step_outputs(noise_pred, noise, logits, labels, is_old, step=5), teachers)
    assert after["loss"].item() > warm["loss"].item()


def test_distillation_group_without_teacher_is_not_distilled():
    noise_pred, noise = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    logits, labels = torch.randn(2, 3), torch.tensor([0, 2])
    is_old = torch.tensor([True, False])
    objective = DistillationObjective(
        diffusion=1.0, classification=0.0, distillation_diffusion=1.0, distillation_classification=0.0
    )
    teachers = {"old": TeacherOutputs(noise_pred=noise[:1] * 0, logits=logits[:1]), "new": TeacherOutputs()}
    terms = objective.loss(step_outputs(noise_pred, noise, logits, labels, is_old), teachers)
    expected = F.mse_loss(noise_pred, noise) + 2 * 0.5 * F.mse_loss(noise_pred[:1], torch.zeros(1, 1, 2, 2))
    assert torch.allclose(terms["loss"], expected, atol=1e-6)
    assert terms["distill_diffusion_new"].item() == 0.0


def test_an_objective_without_one_output_leaves_its_terms_out():
    noise_pred, noise, logits, labels, _, teachers = paper_batch()
    is_old = torch.tensor([True, True, False, False])
    teachers = {
        "old": TeacherOutputs(noise_pred=torch.randn(2, 1, 2, 2), logits=torch.randn(2, 5)),
        "new": TeacherOutputs(noise_pred=torch.randn(2, 1, 2, 2), logits=torch.randn(2, 5)),
    }
    # A classifier-only stage (the separate ablation's classifier): the logits' terms, and exactly those.
    classifier = DistillationObjective(
        diffusion=0.0, classification=1e-2, distillation_diffusion=0.0, distillation_classification=0.5
    )
    assert not classifier.predict_noise and classifier.classify
    terms = classifier.loss(step_outputs(None, noise, logits, labels, is_old), teachers)
    expected = (
        1e-2 * F.cross_entropy(logits, labels)
        + 0.5 * soft_cross_entropy(logits[:2], teachers["old"].logits.softmax(-1))
        + 0.5 * soft_cross_entropy(logits[2:], teachers["new"].logits.softmax(-1))
    )
    assert torch.allclose(terms["loss"], expected, atol=1e-6)
    assert "diffusion" not in terms and "distill_diffusion_old" not in terms
    # With every output given, the same weights give the same loss: the skipped terms weighed nothing.
    full = classifier.loss(step_outputs(noise_pred, noise, logits, labels, is_old), teachers)
    assert torch.allclose(full["loss"], terms["loss"], atol=1e-6)

    # A generator-only stage.
    generator = JointObjective(diffusion=1.0, classification=0.0)
    assert generator.predict_noise and not generator.classify
    generator_terms = generator(step_outputs(noise_pred, noise, None, labels))
    assert torch.allclose(generator_terms["loss"], F.mse_loss(noise_pred, noise))
    assert set(generator_terms) == {"loss", "diffusion"}

    # An output that a weighted term needs cannot be left out.
    with pytest.raises(ValueError, match="`logits` is None"):
        JointObjective(diffusion=1.0, classification=1e-3)(step_outputs(noise_pred, noise, None, labels))
    with pytest.raises(ValueError, match="`noise_pred` is None"):
        DistillationObjective().loss(step_outputs(None, noise, logits, labels, is_old), teachers)


def test_distillation_objective_runs_its_teachers_on_their_own_groups():
    old_teacher, new_teacher, student = tiny_unet(seed=1), tiny_unet(seed=2), tiny_unet(seed=3)
    noisy, clean = torch.randn(3, 1, 16, 16), torch.rand(3, 1, 16, 16) * 2 - 1
    timesteps, is_old = torch.tensor([5, 500, 900]), torch.tensor([True, False, True])
    objective = DistillationObjective(old_teacher=old_teacher, new_teacher=new_teacher).to(torch.device("cpu"))
    assert not old_teacher.training and not any(p.requires_grad for p in old_teacher.parameters())
    with torch.no_grad():
        noise_pred, logits = stage_outputs(student, noisy, timesteps, clean)
    outputs = StageOutputs(
        noise_pred, logits, torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 2]), is_old, noisy, timesteps, clean, 0
    )
    targets = objective.teacher_outputs(outputs)
    with torch.no_grad():
        expected_old = old_teacher.joint_forward(noisy[is_old], timesteps[is_old], clean[is_old])
        expected_new = new_teacher.joint_forward(noisy[~is_old], timesteps[~is_old], clean[~is_old])
    assert torch.equal(targets["old"].noise_pred, expected_old.sample)
    assert torch.equal(targets["old"].logits, expected_old.logits)
    assert torch.equal(targets["new"].noise_pred, expected_new.sample)
    assert torch.equal(objective(outputs)["loss"], objective.loss(outputs, targets)["loss"])


def test_group_indices_of_a_batch():
    groups = group_indices(torch.tensor([True, False, False, True, True]), torch.device("cpu"))
    assert groups["old"].tolist() == [0, 3, 4] and groups["new"].tolist() == [1, 2]
    assert groups["old"].dtype == torch.long
    empty = group_indices(torch.zeros(3, dtype=torch.bool), torch.device("cpu"))
    assert len(empty["old"]) == 0 and empty["new"].tolist() == [0, 1, 2]


def test_stage_outputs_computes_only_what_is_asked():
    unet = tiny_unet()
    noisy, clean, timesteps = torch.randn(2, 1, 16, 16), torch.rand(2, 1, 16, 16) * 2 - 1, torch.tensor([3, 500])
    with torch.no_grad():
        joint = unet.joint_forward(noisy, timesteps, clean)
        noise_only = stage_outputs(unet, noisy, timesteps, clean, predict_noise=True, classify=False)
        logits_only = stage_outputs(unet, noisy, timesteps, clean, predict_noise=False, classify=True)
        assert noise_only[1] is None and torch.equal(noise_only[0], unet(noisy, timesteps).sample)
        assert logits_only[0] is None and torch.equal(logits_only[1], unet.classify(clean))
        assert torch.allclose(noise_only[0], joint.sample, atol=1e-5)
        assert torch.allclose(logits_only[1], joint.logits, atol=1e-5)
    with pytest.raises(ValueError, match="noise prediction, the logits or both"):
        stage_outputs(unet, noisy, timesteps, clean, predict_noise=False, classify=False)

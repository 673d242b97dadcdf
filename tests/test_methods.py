"""DER++ and LwF, the methods that bring their own options, per-sample data and objective: their losses against
hand computations, buffer fields that stay with their images, runs through the trainer, and steps that learn."""

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from jdcl import JDCLPipeline
from jdcl.buffer import ReplayBuffer
from jdcl.config import JDCLTrainingConfig
from jdcl.objectives import StageOutputs
from jdcl.stage_data import StageData
from jdcl.strategies.der import DERObjective
from jdcl.strategies.lwf import LwFObjective
from jdcl.tensor_data import TensorData
from jdcl.trainer import train_jdcl

from .utils import TINY_RUN, tiny_unet


def outputs(logits, labels, fields=None, clean=None) -> StageOutputs:
    batch = len(labels)
    noise = torch.zeros(batch, 1, 16, 16)
    return StageOutputs(
        noise_pred=noise + 0.5,
        logits=logits,
        noise=noise,
        labels=labels,
        is_old=torch.zeros(batch, dtype=torch.bool),
        noisy_sample=noise if clean is None else clean,
        timesteps=torch.zeros(batch, dtype=torch.long),
        clean_sample=noise if clean is None else clean,
        step=0,
        fields=fields or {},
    )


def test_der_loss_is_its_hand_computed_terms():
    torch.manual_seed(0)
    logits, labels, stored = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1]), torch.randn(2, 4)
    terms = DERObjective(diffusion=2.0, classification=0.1, alpha=0.3, beta=0.7)(
        outputs(logits, labels, {"logits": stored})
    )
    ce_new = F.cross_entropy(logits[:4], labels[:4])
    matching, ce_buffer = F.mse_loss(logits[4:], stored), F.cross_entropy(logits[4:], labels[4:])
    expected = 2.0 * 0.25 + 0.1 * (ce_new + 0.3 * matching + 0.7 * ce_buffer)
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["logit_matching"], matching)
    # Without stored logits (the first task) it is the joint loss over every row.
    plain = DERObjective(diffusion=2.0, classification=0.1)(outputs(logits, labels))
    torch.testing.assert_close(plain["loss"], 2.0 * 0.25 + 0.1 * F.cross_entropy(logits, labels))


def test_lwf_distils_the_old_classes_only_at_its_temperature():
    teacher, student = tiny_unet(seed=0), tiny_unet(seed=1)
    images = torch.rand(5, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        logits, teacher_logits = student.classify(images), teacher.classify(images)
    labels = torch.tensor([2, 3, 2, 3, 2])
    objective = LwFObjective(diffusion=0.0, classification=0.5, teacher=teacher, old_classes=[0, 1], temperature=3.0)
    terms = objective(outputs(logits, labels, clean=images))
    target = F.softmax(teacher_logits[:, :2] / 3.0, dim=-1)
    kl = (target * (target.log() - F.log_softmax(logits[:, :2] / 3.0, dim=-1))).sum(dim=-1).mean() * 9.0
    torch.testing.assert_close(terms["distillation"], kl)
    torch.testing.assert_close(terms["loss"], 0.5 * (F.cross_entropy(logits, labels) + kl))
    # The previous model distilled into itself costs nothing; the first task (no teacher) is the joint loss.
    same = LwFObjective(teacher=copy.deepcopy(student), old_classes=[0, 1])(outputs(logits, labels, clean=images))
    assert float(same["distillation"]) == pytest.approx(0.0, abs=1e-6)
    assert "distillation" not in LwFObjective()(outputs(logits, labels, clean=images))


@pytest.mark.parametrize("policy", ["class_balanced", "reservoir"])
def test_buffer_fields_stay_with_their_images_and_reach_the_batch(tmp_path, policy):
    def task(classes, offset):
        images = (
            torch.arange(offset, offset + 10 * len(classes), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
        )
        data = TensorData(images=images.contiguous(), labels=torch.tensor(classes).repeat_interleave(10))
        # A field that names its image: its pixel value, twice.
        return data, {"tag": images[:, 0, 0, 0].float().unsqueeze(1).repeat(1, 2)}

    buffer = ReplayBuffer.empty((1, 2, 2))
    for index, (classes, offset) in enumerate([([0, 1], 0), ([2, 3], 100)]):
        data, fields = task(classes, offset)
        buffer = buffer.updated(data, capacity=8, policy=policy, seed=index, new_fields=fields)
        assert torch.equal(buffer.fields["tag"][:, 0], buffer.images[:, 0, 0, 0].float())
    buffer.save(tmp_path / "buffer.safetensors")
    loaded = ReplayBuffer.load(tmp_path / "buffer.safetensors")
    assert torch.equal(loaded.fields["tag"], buffer.fields["tag"]) and torch.equal(loaded.images, buffer.images)
    new, _ = task([4], 200)
    batch = StageData(real=new, buffer=loaded.as_data(), buffer_fields=loaded.fields).sample(
        10, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    # The buffer's rows are the batch's last ones, each with its own field.
    pixels = ((batch.images[5:, 0, 0, 0] + 1) * 127.5).round()
    assert torch.equal(batch.fields["tag"][:, 0], pixels)
    with pytest.raises(ValueError, match="one row per image"):
        StageData(real=new, buffer=loaded.as_data(), buffer_fields={"tag": loaded.fields["tag"][:3]})


def _steps(objective, model, images, labels, fields, num_steps=30):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(num_steps):
        terms = objective(outputs(model.classify(images), labels, fields, clean=images))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        history.append({name: float(value.detach()) for name, value in terms.items()})
    return history


def test_der_and_lwf_steps_learn_their_own_terms():
    torch.manual_seed(0)
    images, labels = torch.rand(8, 1, 16, 16) * 2 - 1, torch.tensor([2, 3] * 4)
    stored = torch.randn(4, 4) * 3
    der = _steps(
        DERObjective(diffusion=0.0, classification=1.0, alpha=1.0),
        tiny_unet(seed=1).train(),
        images,
        labels,
        {"logits": stored},
    )
    assert der[-1]["logit_matching"] < 0.5 * der[0]["logit_matching"]
    # LwF keeps the old classes' logits nearer the previous model's than the same steps without its term do.
    teacher = tiny_unet(seed=0)
    kept, forgotten = (
        _steps(
            LwFObjective(diffusion=0.0, classification=1.0, teacher=teacher, old_classes=[0, 1], alpha=alpha),
            tiny_unet(seed=0).train(),
            images,
            labels,
            {},
        )[-1]["distillation"]
        for alpha in (10.0, 0.0)
    )
    assert kept < 0.5 * forgotten


def test_der_run_stores_the_logits_of_the_model_that_stored_each_image(tmp_path):
    config = JDCLTrainingConfig(
        **{**TINY_RUN, "output_dir": str(tmp_path), "strategy": "der", "buffer_size": 12, "der_alpha": 0.4}
    )
    metrics = train_jdcl(config)
    assert len(metrics["accuracy_matrix"]) == 2 and metrics["rehearsal"]["2"]["stored"] == 12
    assert config.run_identity()["der_alpha"] == 0.4 and config.run_identity()["der_beta"] == 0.5
    stored = load_file(tmp_path / "state" / "task-1" / "buffer.safetensors")
    model = JDCLPipeline.from_pretrained(tmp_path / "task-1").unet
    with torch.no_grad():
        expected = model.classify(stored["images"].float().div(127.5).sub(1.0))
    torch.testing.assert_close(stored["field.logits"], expected, rtol=1e-4, atol=1e-4)
    later = load_file(tmp_path / "state" / "task-2" / "buffer.safetensors")
    assert later["field.logits"].shape == (12, model.config.num_classes)


def test_lwf_run_trains_each_task_once(tmp_path):
    metrics = train_jdcl(
        JDCLTrainingConfig(**{**TINY_RUN, "output_dir": str(tmp_path), "strategy": "lwf", "lwf_temperature": 4.0})
    )
    assert len(metrics["accuracy_matrix"]) == 2 and metrics["accuracy_matrix"][1][1] is not None
    assert set(metrics["stage_seconds"]["2"]) == {"train", "task_total"}
    with pytest.raises(ValueError, match="`--lwf_temperature` must be > 0"):
        JDCLTrainingConfig(strategy="lwf", lwf_temperature=0.0)


def test_only_methods_that_declare_it_learn_from_unlabelled_images():
    from jdcl.strategies import STRATEGIES
    from jdcl.strategies.finetune import FinetuneStrategy

    semi = {name for name, strategy in STRATEGIES.items() if strategy.learns_unlabeled()}
    assert {"jdcl", "finetune", "cumulative", "replay_buffer"} <= semi
    assert not semi & {"der", "lwf", "separate", "single_stage"}

    # A method with its own objective, derived from one that learns from unlabelled images, does not inherit it.
    class OwnObjective(FinetuneStrategy):
        name = "own_objective"

    config = JDCLTrainingConfig(strategy="finetune", labeled_fraction=0.5)
    FinetuneStrategy.check_config(config)
    with pytest.raises(ValueError, match="`--strategy own_objective` has no semi-supervised stage"):
        OwnObjective.check_config(config)

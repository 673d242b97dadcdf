"""Few labels: the class-balanced choice, the FixMatch objective and the stage's wiring of its views, the measured
pseudo-labels, and runs whose unlabelled labels are never read."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file

from jdcl import JDCLPipeline, JointUNet2DModel
from jdcl.augment import TwoViewAugmentation
from jdcl.data import ClassificationData, labels_of, load_classification_dataset
from jdcl.labels import count_pseudo_labels, pseudo_label_summary, select_labeled
from jdcl.objectives import FixMatchObjective, JointObjective, StageOutputs
from jdcl.stage import LOCAL, StageRunner
from jdcl.stage_data import StageData
from jdcl.tensor_data import TensorData
from jdcl.trainer import ContinualTrainer, train_jdcl

from .test_reliability import tiny_config
from .utils import TINY_UNET, task_unet_weights


def test_the_labelled_examples_are_class_balanced_seeded_and_at_least_one_per_class():
    labels = np.array([0] * 40 + [1] * 20 + [2] * 3)
    labeled = select_labeled(labels, fraction=0.1, seed=0)
    assert [int(labeled[labels == c].sum()) for c in (0, 1, 2)] == [4, 2, 1]
    assert np.array_equal(labeled, select_labeled(labels, fraction=0.1, seed=0))
    assert not np.array_equal(labeled, select_labeled(labels, fraction=0.1, seed=1))
    assert [int(select_labeled(labels, per_class=3, seed=0)[labels == c].sum()) for c in (0, 1, 2)] == [3, 3, 3]
    assert select_labeled(labels, fraction=1.0).all()
    with pytest.raises(ValueError, match="more than the 3 training examples of class 2"):
        select_labeled(labels, per_class=4)
    with pytest.raises(ValueError, match="exactly one"):
        select_labeled(labels)


def test_fixmatch_objective_on_a_hand_computed_case():
    noise_pred, noise = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    logits, labels = torch.zeros(1, 2), torch.tensor([0])
    # Two unlabelled images: the weak view of the first is confident (class 1), of the second not.
    weak_logits = torch.tensor([[0.0, 10.0], [0.0, 0.1]])
    unlabeled_logits = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    outputs = StageOutputs(
        noise_pred, logits, noise, labels, torch.zeros(1, dtype=torch.bool), noise, torch.zeros(3), logits, 0,
        unlabeled_logits=unlabeled_logits, weak_logits=weak_logits,
    )  # fmt: skip
    terms = FixMatchObjective(diffusion=1.0, classification=0.5, pseudo_label_threshold=0.95)(outputs)
    # The MSE over the three noised (unlabelled) images, the labelled CE, and half (one kept of two) of the
    # pseudo-label CE.
    expected = 1.0 + 0.5 * math.log(2) + 0.5 * 0.5 * F.cross_entropy(unlabeled_logits[:1], torch.tensor([1])).item()
    assert math.isclose(terms["loss"].item(), expected, rel_tol=1e-6)
    assert terms["pseudo_label_fraction"].item() == 0.5


SEMI = {"num_tasks": 2, "class_order": [0, 1, 2, 3], "local_train_steps": 2, "global_train_steps": 2}
SEMI["unlabeled_batch_ratio"] = 3


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_a_semi_supervised_run_records_its_labels_and_logs_pseudo_labels(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir = tmp_path / "run"
    metrics = train_jdcl(tiny_config(output_dir, labeled_per_class=5, logger="tensorboard", **SEMI))
    assert len(metrics["accuracy_matrix"]) == 2
    record = json.loads((output_dir / "labeled_examples.json").read_text())
    assert record["per_class"] == {str(c): 5 for c in range(10)} and len(record["labeled_indices"]) == 50
    tags = set()
    for event_file in (output_dir / "logs").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"task_1/local/pseudo_label_fraction", "task_2/local/pseudo_label"} <= tags
    assert {"task_2/local/pseudo_label_precision", "task_2/local/pseudo_label_other_task"} <= tags
    assert "task_2/global/pseudo_label" not in tags  # the global stage is unchanged: generated data only
    # The pseudo-labels of every task, counted over each logging interval of its local stage: steps 0 and 1 of task
    # 2's, steps 0 and 1-3 of the first task's (one stage of local plus global steps).
    for task, steps, unlabeled in (("1", [0, 3], [8 * 3, 3 * 8 * 3]), ("2", [0, 1], [8 * 3, 8 * 3])):
        local = metrics["pseudo_labels"][task]["local"]
        assert local["step"] == steps and local["unlabeled"] == unlabeled
        assert all(value is None or 0 <= value <= 1 for value in local["precision"] + local["old_class_share"])
    assert metrics["pseudo_labels"]["1"]["local"]["on_old_classes"] == [0, 0]


def test_all_labels_is_the_supervised_run(tmp_path):
    train_jdcl(tiny_config(tmp_path / "supervised", **SEMI))
    train_jdcl(tiny_config(tmp_path / "all_labels", labeled_fraction=1.0, **SEMI))
    assert not (tmp_path / "all_labels" / "labeled_examples.json").exists()
    for task in (1, 2):
        assert same_weights(
            task_unet_weights(tmp_path / "supervised", task), task_unet_weights(tmp_path / "all_labels", task)
        )


@pytest.mark.parametrize("strategy", ["jdcl", "replay_buffer"])
def test_the_labels_of_unlabelled_examples_are_never_read(tmp_path, monkeypatch, strategy):
    data = load_classification_dataset()
    labels = labels_of(data.train, data.label_column)
    labeled = select_labeled(labels, per_class=4, seed=0)
    # The same choice of labelled examples in both runs, whatever labels the data set claims.
    monkeypatch.setattr("jdcl.trainer.select_labeled", lambda *args, **kwargs: labeled)

    def poison(example, index):
        # Another class of the same task (0 <-> 1, 2 <-> 3, ...): the task an image belongs to stays what it was.
        return {"label": example["label"] ^ 1 if not labeled[index] else example["label"]}

    poisoned = ClassificationData(
        data.train.map(poison, with_indices=True), data.test, data.image_column, data.label_column, data.class_names
    )
    assert (labels_of(poisoned.train, data.label_column) != labels).sum() == (~labeled).sum()
    settings = {**SEMI, "labeled_per_class": 4, "strategy": strategy}
    if strategy == "replay_buffer":
        settings["buffer_size"] = 8
    clean = train_jdcl(tiny_config(tmp_path / "clean", **settings), data=data)
    dirty = train_jdcl(tiny_config(tmp_path / "poisoned", **settings), data=poisoned)
    assert clean["accuracy_matrix"] == dirty["accuracy_matrix"]
    for task in (1, 2):
        assert same_weights(
            task_unet_weights(tmp_path / "clean", task), task_unet_weights(tmp_path / "poisoned", task)
        )
    if strategy == "replay_buffer":
        # The buffer keeps labelled images only.
        buffer = load_file(tmp_path / "clean" / "state" / "task-2" / "buffer.safetensors")
        assert len(buffer["labels"]) == 8


def _constant_images(values: list[int]) -> torch.Tensor:
    # One uint8 value per image: a view that only moves pixels keeps it, and the value names the image.
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()


def _values(images: torch.Tensor) -> list[int]:
    return [round(v) for v in ((images.flatten(1)[:, 0].float() + 1) * 127.5).tolist()]


def _is_constant(images: torch.Tensor) -> torch.Tensor:
    # Up to the rounding of an interpolating crop (a level is 1/127.5 from the next).
    flat = images.flatten(1)
    return ((flat - flat[:, :1]).abs() < 1e-4).all(dim=1)


def test_the_semi_supervised_stage_feeds_each_view_where_the_authors_do(tmp_path):
    # Labelled images 200..203 and unlabelled ones 20..31, each of a single gray level: the weak view (flip and
    # reflect-padded crop) and the diffusion view keep an image's level; the strong view's Cutout never does.
    labeled = TensorData(_constant_images(list(range(200, 204))), torch.tensor([0, 1, 0, 1]))
    unlabeled = TensorData(_constant_images(list(range(20, 32))), torch.tensor([0, 1] * 6))
    config = tiny_config(tmp_path, train_batch_size=4, unlabeled_batch_ratio=3, augment=True)
    runner = StageRunner(
        Accelerator(cpu=True), config, TwoViewAugmentation(8, 1, horizontal_flip=False), show_progress=False
    )
    torch.manual_seed(0)
    model = JointUNet2DModel(sample_size=8, in_channels=1, out_channels=1, num_classes=4, **TINY_UNET)
    seen = {"diffusion": [], "classifier": [], "weak": []}
    add_noise, joint_forward, classify = runner.noise_scheduler.add_noise, model.joint_forward, model.classify

    def record_diffusion(samples, noise, timesteps):
        seen["diffusion"].append(samples.detach().clone())
        return add_noise(samples, noise, timesteps)

    def record_classifier(noisy, timesteps, clean, **kwargs):
        seen["classifier"].append(clean.detach().clone())
        return joint_forward(noisy, timesteps, clean, **kwargs)

    def record_weak(images):
        seen["weak"].append(images.detach().clone())
        return classify(images)

    runner.noise_scheduler.add_noise, model.joint_forward, model.classify = (
        record_diffusion,
        record_classifier,
        record_weak,
    )
    data = StageData(real=labeled, unlabeled=unlabeled, unlabeled_batch_ratio=3)
    runner.run(LOCAL, 0, model, data, 2, FixMatchObjective(classification=1e-2))

    assert len(seen["diffusion"]) == len(seen["classifier"]) == len(seen["weak"]) == 2
    for diffusion, classifier, weak in zip(seen["diffusion"], seen["classifier"], seen["weak"]):
        # The diffusion loss sees the unlabelled batch, and it alone (no labelled image on top of it).
        assert len(diffusion) == 12 and _is_constant(diffusion).all()
        assert set(_values(diffusion)) <= set(range(20, 32))
        # The classifier learns the weak views of the labelled images, then the strong views of the unlabelled ones;
        # it pseudo-labels their weak views: the same unlabelled images as the diffusion loss.
        assert len(classifier) == 4 + 12
        assert _is_constant(classifier[:4]).all() and set(_values(classifier[:4])) <= set(range(200, 204))
        assert not _is_constant(classifier[4:]).any()
        assert len(weak) == 12 and _is_constant(weak).all()
        assert sorted(_values(weak)) == sorted(_values(diffusion))


def test_the_unlabelled_pool_is_every_training_image_and_the_labelled_batch_the_labelled_ones(tmp_path):
    trainer = ContinualTrainer(tiny_config(tmp_path / "run", labeled_per_class=3, **SEMI))
    trainer.load_tensors()
    labeled = torch.from_numpy(trainer.labeled)
    assert len(trainer.train_data) == int(labeled.sum()) == 30
    # As the authors' ssl_split.py: the labelled images are in the unlabelled pool too, once.
    assert len(trainer.unlabeled_data) == len(labeled)
    assert torch.equal(trainer.unlabeled_data.images[labeled], trainer.train_data.images)


def test_counted_pseudo_labels_and_their_summary_on_a_hand_computed_case(tmp_path):
    runner = StageRunner(Accelerator(cpu=True), tiny_config(tmp_path), TwoViewAugmentation(8, 1), show_progress=False)
    objective = FixMatchObjective(pseudo_label_threshold=0.9)
    # Four images of classes 2 and 3: confident in 2 (right), in 0 (an old class), in 3 (wrong), and unsure.
    weak_logits = torch.tensor([[0, 0, 9, 0], [9, 0, 0, 0], [0, 0, 0, 9], [1, 1, 1, 1]], dtype=torch.float)
    counts = count_pseudo_labels(None, *objective.pseudo_labels(weak_logits), torch.tensor([2, 3, 2, 3]), 4)
    assert counts.tolist() == [4, 3, 1, 1, 0, 1, 1]
    counts = count_pseudo_labels(counts, *objective.pseudo_labels(weak_logits[:1]), torch.tensor([2]), 4)
    logged = runner._record_pseudo_labels(counts, torch.tensor([2, 3]), LOCAL, 1, 9)
    assert logged == {"pseudo_label_precision": 2 / 4, "pseudo_label_other_task": 1 / 4}
    record = runner.pseudo_label_records[1]
    assert record == [
        {"stage": "local", "step": 9, "unlabeled": 5, "kept": 4, "correct": 2, "kept_per_class": [1, 0, 2, 1]}
    ]
    summary = pseudo_label_summary(record + [{**record[0], "step": 19, "kept": 0, "correct": 0}], old_classes=[0, 1])
    assert summary == {
        "local": {
            "step": [9, 19],
            "unlabeled": [5, 5],
            "kept": [4, 0],
            "correct": [2, 0],
            "on_old_classes": [1, 1],
            "coverage": [4 / 5, 0.0],
            "precision": [2 / 4, None],
            "old_class_share": [1 / 4, None],
        }
    }


def test_semi_supervised_without_a_classification_term_trains_the_generator_alone(tmp_path):
    # `--classification_loss_weight 0`: the local stages train the diffusion model on the unlabelled images only; the
    # classifier of the first task (one local stage) keeps its initial weights.
    config = tiny_config(tmp_path / "run", labeled_per_class=5, classification_loss_weight=0.0, **SEMI)
    metrics = train_jdcl(config)
    assert len(metrics["accuracy_matrix"]) == 2 and "pseudo_labels" not in metrics
    initial = ContinualTrainer(tiny_config(tmp_path / "other", **SEMI)).new_model(config.seed)
    first = JDCLPipeline.from_pretrained(tmp_path / "run" / "task-1").unet
    for name, weight in initial.classifier.state_dict().items():
        assert torch.equal(weight, first.classifier.state_dict()[name]), name
    assert not torch.equal(initial.conv_out.weight, first.conv_out.weight)


def test_a_semi_supervised_stage_trains_an_objective_that_does_not_pseudo_label(tmp_path):
    # A method's own objective (here the plain joint loss) on a stage with unlabelled images: it learns them through
    # the diffusion loss; only an objective with `pseudo_labels` has its pseudo-labels counted.
    labeled = TensorData(_constant_images(list(range(200, 204))), torch.tensor([0, 1, 0, 1]))
    unlabeled = TensorData(_constant_images(list(range(20, 32))), torch.tensor([0, 1] * 6))
    config = tiny_config(tmp_path)
    runner = StageRunner(Accelerator(cpu=True), config, TwoViewAugmentation(8, 1), show_progress=False)
    torch.manual_seed(0)
    model = JointUNet2DModel(sample_size=8, in_channels=1, out_channels=1, num_classes=4, **TINY_UNET)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    data = StageData(real=labeled, unlabeled=unlabeled, unlabeled_batch_ratio=3)
    trained = runner.run(LOCAL, 0, model, data, 2, JointObjective(classification=1e-2))
    assert any(not torch.equal(before[name], value) for name, value in trained.state_dict().items())
    assert not runner.pseudo_label_records
    runner.run(LOCAL, 0, model, data, 1, FixMatchObjective(classification=1e-2))
    assert runner.pseudo_label_records[0][0]["unlabeled"] == 3 * config.train_batch_size

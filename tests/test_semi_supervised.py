"""Few labels: the class-balanced choice, the FixMatch objective, and runs whose unlabelled labels are never read."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from jdcl.data import ClassificationData, labels_of, load_classification_dataset
from jdcl.labels import select_labeled
from jdcl.objectives import FixMatchObjective, StageOutputs
from jdcl.trainer import train_jdcl

from .test_reliability import tiny_config
from .utils import task_unet_weights


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
    # The MSE over all three images, the labelled CE, and half (one of two kept) of the pseudo-label CE.
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
    assert "task_2/global/pseudo_label" not in tags  # the global stage is unchanged: generated data only


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

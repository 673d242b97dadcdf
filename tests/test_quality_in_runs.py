"""Quality metrics in a continual run: measured after every task into every output, without changing the run."""

import json

import pytest
import torch

from jdcl.run_folder import RunFolder
from jdcl.trainer import train_jdcl

from .test_trainer import tiny_config
from .utils import SimulatedKill, task_unet_weights


QUALITY = {"quality_metrics": ["referee"], "quality_samples_per_class": 6, "quality_referee_steps": 40}


def test_quality_is_measured_after_every_task_and_leaves_the_run_unchanged(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plain = train_jdcl(tiny_config(tmp_path / "plain"))
    measured = train_jdcl(tiny_config(tmp_path / "measured", logger="tensorboard", **QUALITY))

    # 1. The same run: accuracies and weights, bit for bit.
    assert measured["accuracy_matrix"] == plain["accuracy_matrix"]
    for name, tensor in task_unet_weights(tmp_path / "plain", 2).items():
        assert torch.equal(tensor, task_unet_weights(tmp_path / "measured", 2)[name]), name

    # 2. metrics.json: the referee's accuracy, and per task the samples (and, from task 2, the rehearsal).
    assert "quality" not in plain
    quality = json.loads((tmp_path / "measured" / "metrics.json").read_text())["quality"]
    assert 0.0 <= quality["extractors"]["referee"]["test_accuracy"] <= 1.0
    assert set(quality["tasks"]) == {"1", "2"}
    assert set(quality["tasks"]["1"]["referee"]) == {"samples"}
    samples, rehearsal = quality["tasks"]["2"]["referee"]["samples"], quality["tasks"]["2"]["referee"]["rehearsal"]
    assert samples["num_images"] == 6 * 4 and rehearsal["num_images"] == 4 * 4
    assert set(samples["per_class"]) == set(rehearsal["per_class"]) == {"0", "1", "2", "3"}
    assert samples["fd"] > 0 and rehearsal["fd"] > 0
    assert (tmp_path / "measured" / "quality" / "referee" / "referee.json").is_file()
    # Its cost, per task, beside the stages'; not in a run without it.
    assert all(measured["stage_seconds"][task]["quality"] > 0 for task in ("1", "2"))
    assert all("quality" not in plain["stage_seconds"][task] for task in ("1", "2"))

    # 3. The model card's table and the tensorboard scalars.
    card = (tmp_path / "measured" / "task-2" / "README.md").read_text()
    assert "## Generation quality" in card and f"| referee | {samples['fd']:.3f} |" in card
    assert "## Generation quality" not in (tmp_path / "plain" / "task-2" / "README.md").read_text()
    events = EventAccumulator(str(next((tmp_path / "measured" / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    steps = {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    # At each task's end, with its evaluation (the run's global step); the first task has no rehearsal.
    assert len(steps["eval/average_accuracy"]) == 2
    assert steps["quality/referee/samples_fd"] == steps["eval/average_accuracy"]
    assert steps["quality/referee/rehearsal_fd"] == steps["eval/average_accuracy"][1:]


def test_separate_is_measured_on_its_generator(tmp_path):
    metrics = train_jdcl(tiny_config(tmp_path / "run", strategy="separate", **QUALITY))
    generator = RunFolder(tmp_path / "run").state_dir / "task-2" / "generator"
    assert (generator / "config.json").is_file()
    assert set(metrics["quality"]["tasks"]["2"]["referee"]) == {"samples", "rehearsal"}


def test_a_run_killed_after_a_task_resumes_with_its_quality(tmp_path, monkeypatch):
    reference = train_jdcl(tiny_config(tmp_path / "reference", **QUALITY))
    original = RunFolder.write_metrics

    def die_at_task_2(self, *args, **kwargs):
        if (self.path / "task-2" / "model_index.json").is_file():
            raise SimulatedKill
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunFolder, "write_metrics", die_at_task_2)
    with pytest.raises(SimulatedKill):
        train_jdcl(tiny_config(tmp_path / "run", **QUALITY))
    monkeypatch.setattr(RunFolder, "write_metrics", original)
    resumed = train_jdcl(tiny_config(tmp_path / "run", resume_from_checkpoint="latest", **QUALITY))
    assert resumed["quality"] == reference["quality"]

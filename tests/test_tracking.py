"""What a run reports: tensorboard's pictures, accuracy rows and one global step; evaluation lines; file modes."""

import importlib.util
import io
import logging
import os
import stat

import numpy as np
import pytest
from PIL import Image

from jdcl.evaluation import TaskEvaluation
from jdcl.stage import StageRunner
from jdcl.tracking import check_tracker_installed
from jdcl.trainer import ContinualTrainer, train_jdcl

from .test_trainer import tiny_config


def read_events(log_dir) -> tuple[dict, dict]:
    """Scalars (tag -> [(step, value)]) and images (tag -> [(step, PIL image)]) of every event file under `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = {}, {}
    for event_file in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((event.step, event.value) for event in accumulator.Scalars(tag))
        for tag in accumulator.Tags()["images"]:
            images.setdefault(tag, []).extend(
                (event.step, Image.open(io.BytesIO(event.encoded_image_string))) for event in accumulator.Images(tag)
            )
    return scalars, images


def steps(scalars: dict, tag: str) -> list[int]:
    return sorted(step for step, _ in scalars[tag])


def test_tensorboard_holds_sample_grids_accuracy_rows_and_one_global_step(tmp_path):
    output_dir = tmp_path / "run"
    previous_umask = os.umask(0o027)
    try:
        # The first task trains 6 steps, the second 3 local and 3 global.
        metrics = train_jdcl(tiny_config(output_dir, logger="tensorboard"))
    finally:
        os.umask(previous_umask)
    scalars, images = read_events(output_dir / "logs")

    # Stages log at the run's step, which never restarts: a stage logs its first and last step (and every tenth).
    assert steps(scalars, "task_1/local/loss") == [0, 5]
    assert steps(scalars, "task_2/local/loss") == [6, 8]
    assert steps(scalars, "task_2/global/loss") == [9, 11]
    # Each task's evaluation comes at the step its stages reached: its row of the accuracy matrix, one tag per task.
    assert steps(scalars, "eval/average_accuracy") == [6, 12]
    assert steps(scalars, "eval/accuracy_task_1") == [6, 12] and steps(scalars, "eval/accuracy_task_2") == [12]
    for j in range(2):
        logged = [value for _, value in sorted(scalars[f"eval/accuracy_task_{j + 1}"])]
        recorded = [row[j] for row in metrics["accuracy_matrix"] if row[j] is not None]
        assert logged == pytest.approx(recorded, abs=1e-6)

    # The sample grid of each task, as its task folder holds it.
    assert set(images) == {"samples/task_1", "samples/task_2"}
    for k, step in ((1, 6), (2, 12)):
        [(logged_step, picture)] = images[f"samples/task_{k}"]
        with Image.open(output_dir / f"task-{k}" / "samples.png") as saved:
            assert logged_step == step and picture.size == saved.size
            assert np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(saved.convert("RGB")))

    # Every file of the run follows the umask (0o027), written atomically or not, weights included.
    modes = {str(path.relative_to(output_dir)): stat.S_IMODE(path.stat().st_mode) for path in output_dir.rglob("*")}
    written = [
        "metrics.json",
        "run_config.json",
        "accuracy_matrix.png",
        "task-2/unet/diffusion_pytorch_model.safetensors",
    ]
    assert all(name in modes for name in written)
    assert {mode for name, mode in modes.items() if (output_dir / name).is_file()} == {0o640}, modes
    assert {mode for name, mode in modes.items() if (output_dir / name).is_dir()} == {0o750}, modes

    # The model card names no path of this machine.
    card = (output_dir / "task-2" / "README.md").read_text()
    assert str(tmp_path) not in card and "output_dir" not in card


def test_resumed_run_continues_the_global_step(tmp_path):
    from .utils import run_killed_when_logged

    settings = {"checkpointing_steps": 2, "grid_samples_per_class": 0, "logger": "tensorboard"}
    output_dir = tmp_path / "run"
    # Killed when task 2's global stage logs its last step (2), after its checkpoint at step 2.
    run_killed_when_logged(tiny_config(output_dir, **settings), "task_2/global/loss", step=2)
    train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest", **settings))
    scalars, _ = read_events(output_dir / "logs")
    # Task 1 and task 2's local stage are not trained again, yet the resumed stage logs where the run had got to.
    assert steps(scalars, "task_2/local/loss") == [6, 8]
    assert steps(scalars, "task_2/global/loss") == [9, 11]
    assert steps(scalars, "eval/average_accuracy") == [6, 12]


@pytest.mark.parametrize("show_info", [True, False])
def test_each_evaluation_line_is_printed_once(tmp_path, capsys, caplog, show_info):
    trainer = ContinualTrainer(tiny_config(tmp_path / "run", show_progress=True))
    message = "Task 1/2: accuracy on seen classes 0.7500"
    with caplog.at_level(logging.INFO if show_info else logging.WARNING, logger="jdcl"):
        summary = {"average_accuracy": 0.75, "forgetting": 0.0}
        trainer._report(0, TaskEvaluation(accuracy_per_task=[0.75], accuracy_seen=0.75), summary)
    captured = capsys.readouterr()
    printed = captured.out.count(message) + captured.err.count(message)
    logged = sum(message in record.getMessage() for record in caplog.records)
    # Through logging when it shows INFO lines (as `jdcl-train` does), else beside the progress bars: once either way.
    assert (logged, printed) == ((1, 0) if show_info else (0, 1))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_tracker_that_is_not_installed_is_refused_before_training(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started although the tracker is missing")

    monkeypatch.setattr(StageRunner, "run", fail)
    with pytest.raises(ValueError, match=r"--logger wandb.*pip install wandb"):
        ContinualTrainer(tiny_config(tmp_path / "run", logger="wandb"))
    assert not (tmp_path / "run" / "run_config.json").exists()
    check_tracker_installed("tensorboard")
    check_tracker_installed("all")
    check_tracker_installed("none")

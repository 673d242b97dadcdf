"""A run folder that defends itself: claims, locks, resume targets, kills at the worst moments, tokens, messages."""

import json
import logging
import os
from pathlib import Path

import datasets
import filelock
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from jdcl import JDCLPipeline
from jdcl.config import JDCLTrainingConfig
from jdcl.data import load_classification_dataset
from jdcl.run_folder import LOCK_NAME, RunFolder
from jdcl.stage import StageRunner
from jdcl.trainer import ContinualTrainer, train_jdcl

from .test_bad_inputs import make_input_files, tiny_config
from .utils import SimulatedKill, tiny_pipeline


def folder_files(path: Path) -> set[str]:
    # Tensorboard event files are named after the time and the host: not part of what must match.
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and "logs" not in p.parts}


def comparable_metrics(path: Path) -> dict:
    metrics = json.loads((path / "metrics.json").read_text())
    # Wall times differ from run to run; which stages were timed must not.
    metrics["stage_seconds"] = {task: sorted(stages) for task, stages in metrics["stage_seconds"].items()}
    return metrics


@pytest.mark.parametrize("moment", ["after_the_task_folder", "after_the_metrics"])
def test_a_kill_after_a_task_is_saved_resumes_to_the_same_folder_and_metrics(tmp_path, monkeypatch, moment):
    settings = {"local_train_steps": 2, "global_train_steps": 2, "checkpointing_steps": 1}
    train_jdcl(tiny_config(tmp_path / "reference", **settings))

    # Task 2's folder is saved; the run dies before metrics.json has it, or before its stage checkpoints are gone.
    method = "write_metrics" if moment == "after_the_task_folder" else "remove_stage_checkpoints"
    original = getattr(RunFolder, method)

    def die_at_task_2(self, *args, **kwargs):
        if (self.path / "task-2" / "model_index.json").is_file():
            raise SimulatedKill
        return original(self, *args, **kwargs)

    output_dir = tmp_path / "run"
    monkeypatch.setattr(RunFolder, method, die_at_task_2)
    with pytest.raises(SimulatedKill):
        train_jdcl(tiny_config(output_dir, **settings))
    monkeypatch.setattr(RunFolder, method, original)
    if moment == "after_the_metrics":
        assert list((output_dir / "checkpoints").glob("task-2-*/checkpoint-*"))  # the leftovers to clean
    else:
        assert len(json.loads((output_dir / "metrics.json").read_text())["accuracy_seen"]) == 1

    train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest", **settings))
    assert folder_files(output_dir) == folder_files(tmp_path / "reference")
    assert comparable_metrics(output_dir) == comparable_metrics(tmp_path / "reference")


def test_a_second_run_into_a_live_folder_is_refused(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    with filelock.FileLock(output_dir / LOCK_NAME, timeout=0):
        with pytest.raises(ValueError, match="Another jdcl run is live"):
            train_jdcl(tiny_config(output_dir))
    assert sorted(p.name for p in output_dir.iterdir()) == [LOCK_NAME]
    # Released (as the OS does when a run dies), the folder is usable again.
    metrics = train_jdcl(tiny_config(output_dir, num_tasks=1, class_order=[0, 1]))
    assert len(metrics["accuracy_matrix"]) == 1


def test_a_folder_whose_run_failed_before_any_result_may_be_claimed_again(tmp_path):
    output_dir = tmp_path / "run"
    first = ContinualTrainer(tiny_config(output_dir, seed=3))
    first.run_folder.write_run_config(first.identity, first.config.to_dict())
    # Nothing finished: another configuration (or the same one without --resume) may take the folder.
    config = tiny_config(output_dir, num_tasks=1, class_order=[0, 1])
    train_jdcl(config)
    recorded = json.loads((output_dir / "run_config.json").read_text())["identity"]
    assert recorded["seed"] == 0 and recorded["tasks"] == [[0, 1]]
    # With a finished task in it, the folder is another run's again.
    with pytest.raises(ValueError, match="another configuration"):
        ContinualTrainer(tiny_config(output_dir, seed=3))


def test_a_few_label_run_of_the_earlier_semi_supervised_stage_is_not_resumed(tmp_path):
    output_dir = tmp_path / "run"
    config = tiny_config(output_dir, labeled_fraction=0.5, resume_from_checkpoint="latest")
    trainer = ContinualTrainer(config)
    # A few-label folder of an earlier version: its identity has no `horizontal_flip` (added with the authors' stage).
    earlier = {k: v for k, v in trainer.identity.items() if k != "horizontal_flip"}
    trainer.run_folder.write_run_config(earlier, config.to_dict())
    (output_dir / "task-1").mkdir()
    with pytest.raises(ValueError, match="few-label run of an earlier jdcl version"):
        ContinualTrainer(config)
    # The same record without few labels is an ordinary run of another configuration, not the earlier stage.
    trainer.run_folder.write_run_config({**earlier, "labeled_fraction": None}, config.to_dict(), replace=True)
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['labeled_fraction'\]\)"):
        ContinualTrainer(config)


def test_resume_from_a_named_checkpoint(tmp_path, monkeypatch, caplog):
    settings = {"local_train_steps": 4, "global_train_steps": 4, "checkpointing_steps": 2, "num_tasks": 1}
    settings["class_order"] = [0, 1]
    output_dir = tmp_path / "run"
    original = RunFolder.save_task

    def die(self, *args, **kwargs):
        raise SimulatedKill

    monkeypatch.setattr(RunFolder, "save_task", die)
    with pytest.raises(SimulatedKill):
        train_jdcl(tiny_config(output_dir, **settings))
    monkeypatch.setattr(RunFolder, "save_task", original)
    # The first task trains 8 steps; the two newest checkpoints (4 and 6) are kept.
    checkpoint = output_dir / "checkpoints" / "task-1-local" / "checkpoint-4"
    assert checkpoint.is_dir()
    with caplog.at_level(logging.INFO, logger="jdcl"):
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint=str(checkpoint), **settings))
    assert "(step 4)" in caplog.text
    with pytest.raises(ValueError, match="not a stage checkpoint of this run"):
        ContinualTrainer(tiny_config(output_dir, resume_from_checkpoint=str(output_dir / "task-1"), **settings))


def test_a_partial_unet_config_changes_the_default_unet(tmp_path):
    config = tiny_config(tmp_path / "run", unet_config={"classifier_hidden_dim": 16})
    assert (
        config.unet_config["block_out_channels"] == [32, 64, 64] and config.unet_config["classifier_hidden_dim"] == 16
    )


def test_the_token_never_reaches_the_command_line_or_a_file(tmp_path, capsys):
    from .test_train_script import parse_config

    with pytest.raises(SystemExit) as error:
        parse_config(["--output_dir", str(tmp_path), "--hub_token", "hf_secret_xyz"])
    assert "huggingface-cli login" in str(error.value) and "hf_secret_xyz" not in str(error.value)
    captured = capsys.readouterr()
    assert "hf_secret_xyz" not in captured.out + captured.err
    preset = tmp_path / "preset.yaml"
    preset.write_text("hub_token: hf_secret_xyz\n")
    with pytest.raises(ValueError, match="does not belong in a file") as error:
        JDCLTrainingConfig.from_file(preset)
    assert "hf_secret_xyz" not in str(error.value)


def test_a_broken_yaml_preset_is_named(tmp_path):
    preset = tmp_path / "broken.yaml"
    preset.write_text("resolution: [8\n")
    with pytest.raises(ValueError, match=f"{preset} is not valid YAML"):
        JDCLTrainingConfig.from_file(preset)


def test_diffusers_generic_loader_finds_the_pipeline(tmp_path):
    from diffusers import DiffusionPipeline

    tiny_pipeline().save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded, JDCLPipeline)
    assert torch.equal(loaded.unet.classifier.linear_2.weight, tiny_pipeline().unet.classifier.linear_2.weight)


# ------------------------------------------------------------------------------------------- the user's own files


@pytest.mark.parametrize(
    "own_file", ["metrics.json", "run_config.json", "labeled_examples.json", "accuracy_matrix.png", "samples/a.png"]
)
def test_a_folder_of_the_users_own_files_is_refused_and_left_as_it_was(tmp_path, own_file):
    output_dir = tmp_path / "results"
    (output_dir / own_file).parent.mkdir(parents=True, exist_ok=True)
    (output_dir / own_file).write_text('{"mine": true}')
    before = {str(p.relative_to(output_dir)): p.read_bytes() for p in output_dir.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="holds no jdcl run|not the record of a jdcl run") as error:
        train_jdcl(tiny_config(output_dir))
    assert "--output_dir" in str(error.value)
    after = {str(p.relative_to(output_dir)): p.read_bytes() for p in output_dir.rglob("*") if p.is_file()}
    assert after == before


def test_a_live_run_is_named_before_anything_else_about_the_folder(tmp_path):
    output_dir = tmp_path / "run"
    train_jdcl(tiny_config(output_dir, num_tasks=1, class_order=[0, 1]))
    # The plain second run would otherwise be told to pass --resume_from_checkpoint latest.
    with filelock.FileLock(output_dir / LOCK_NAME, timeout=0):
        for resume in (None, "latest"):
            with pytest.raises(ValueError, match="Another jdcl run is live"):
                train_jdcl(tiny_config(output_dir, num_tasks=1, class_order=[0, 1], resume_from_checkpoint=resume))
    with pytest.raises(ValueError, match="already holds this run"):
        train_jdcl(tiny_config(output_dir, num_tasks=1, class_order=[0, 1]))


@pytest.mark.skipif(os.geteuid() == 0, reason="the superuser may write anywhere")
def test_an_unwritable_output_dir_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="cannot be written"):
            train_jdcl(tiny_config(locked / "run"))
    finally:
        locked.chmod(0o700)


def test_resuming_latest_from_an_empty_folder_says_it_starts_a_new_run(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="jdcl"):
        train_jdcl(tiny_config(tmp_path / "run", num_tasks=1, class_order=[0, 1], resume_from_checkpoint="latest"))
    assert "starting a new run" in caplog.text
    assert (tmp_path / "run" / "task-1" / "model_index.json").is_file()


# ------------------------------------------------------------------------------------------ damaged run folders


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def unet_weights(task_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(task_dir / "unet" / "diffusion_pytorch_model.safetensors")


def kill_at_stage(monkeypatch, stage_name: str, task_index: int):
    """Makes `StageRunner.run` die when it starts the stage `stage_name` of task `task_index` (from 0)."""
    original = StageRunner.run

    def die(self, stage, index, *args, **kwargs):
        if stage.name == stage_name and index == task_index:
            raise SimulatedKill
        return original(self, stage, index, *args, **kwargs)

    monkeypatch.setattr(StageRunner, "run", die)
    return lambda: monkeypatch.setattr(StageRunner, "run", original)


def run_killed_before_the_task_is_saved(monkeypatch, config: JDCLTrainingConfig) -> None:
    """Runs `config` and kills it once its (only) task is trained, before it is saved: its checkpoints are left."""
    original = RunFolder.save_task

    def die(self, *args, **kwargs):
        raise SimulatedKill

    monkeypatch.setattr(RunFolder, "save_task", die)
    with pytest.raises(SimulatedKill):
        train_jdcl(config)
    monkeypatch.setattr(RunFolder, "save_task", original)


def test_a_damaged_newest_stage_checkpoint_falls_back_to_the_one_before(tmp_path, monkeypatch, caplog):
    settings = {"local_train_steps": 4, "global_train_steps": 4, "checkpointing_steps": 2, "num_tasks": 1}
    settings["class_order"] = [0, 1]
    train_jdcl(tiny_config(tmp_path / "reference", **settings))
    output_dir = tmp_path / "run"
    # The first task trains 8 steps; the two newest checkpoints (4 and 6) are kept.
    run_killed_before_the_task_is_saved(monkeypatch, tiny_config(output_dir, **settings))
    root = output_dir / "checkpoints" / "task-1-local"
    cut_in_half(root / "checkpoint-6" / "model.safetensors")

    with pytest.raises(
        ValueError, match="checkpoint-6 is damaged.*Remove it, or pass --resume_from_checkpoint latest"
    ):
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint=str(root / "checkpoint-6"), **settings))
    with caplog.at_level(logging.INFO, logger="jdcl"):
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest", **settings))
    assert f"{root / 'checkpoint-6'} is damaged" in caplog.text and "the one before it" in caplog.text
    assert "(step 4)" in caplog.text
    reference = unet_weights(tmp_path / "reference" / "task-1")
    resumed = unet_weights(output_dir / "task-1")
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)


def test_every_stage_checkpoint_damaged_is_named(tmp_path, monkeypatch):
    settings = {"local_train_steps": 2, "global_train_steps": 2, "checkpointing_steps": 2, "num_tasks": 1}
    settings["class_order"] = [0, 1]
    output_dir = tmp_path / "run"
    run_killed_before_the_task_is_saved(monkeypatch, tiny_config(output_dir, **settings))
    checkpoint = output_dir / "checkpoints" / "task-1-local" / "checkpoint-2"
    (checkpoint / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{checkpoint} is damaged.*Remove .*task-1-local to start the stage over"):
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest", **settings))


def test_a_damaged_rehearsal_file_is_named_and_made_again_once_removed(tmp_path, monkeypatch):
    train_jdcl(tiny_config(tmp_path / "reference"))
    output_dir = tmp_path / "run"
    restore = kill_at_stage(monkeypatch, "global", 1)
    with pytest.raises(SimulatedKill):
        train_jdcl(tiny_config(output_dir))
    restore()
    rehearsal = output_dir / "state" / "task-2" / "rehearsal.safetensors"
    cut_in_half(rehearsal)
    with pytest.raises(ValueError, match=f"{rehearsal} is damaged.*Remove it and resume again"):
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest"))
    rehearsal.unlink()
    train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest"))
    reference, resumed = unet_weights(tmp_path / "reference" / "task-2"), unet_weights(output_dir / "task-2")
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)


def test_a_damaged_replay_buffer_is_named(tmp_path, monkeypatch):
    settings = {"strategy": "replay_buffer", "buffer_size": 8}
    output_dir = tmp_path / "run"
    restore = kill_at_stage(monkeypatch, "replay", 1)
    with pytest.raises(SimulatedKill):
        train_jdcl(tiny_config(output_dir, **settings))
    restore()
    buffer = output_dir / "state" / "task-1" / "buffer.safetensors"
    cut_in_half(buffer)
    with pytest.raises(ValueError, match=f"{buffer} is damaged.*restore the file, or start the run again"):
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest", **settings))


@pytest.mark.parametrize("damaged", ["metrics.json", "run_config.json"])
def test_damaged_run_records_are_named(tmp_path, damaged):
    output_dir = tmp_path / "run"
    train_jdcl(tiny_config(output_dir))
    reference = comparable_metrics(output_dir)
    cut_in_half(output_dir / damaged)
    with pytest.raises(ValueError, match=f"{output_dir / damaged} is damaged: it is not valid JSON"):
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest"))
    if damaged == "metrics.json":
        # As the message says: removed, it is rebuilt from the finished tasks' records.
        (output_dir / damaged).unlink()
        train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest"))
        assert comparable_metrics(output_dir) == reference


# ----------------------------------------------------------------------------------------- data and the pipeline


def test_unreadable_images_are_left_out_with_skip_bad_images_and_counted(tmp_path, caplog):
    make_input_files(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jdcl"):
        data = load_classification_dataset(train_data_dir=str(tmp_path / "empty_image"), skip_bad_images=True)
    assert "Left out 1 unreadable image(s)" in caplog.text and "empty.png" in caplog.text
    # 12 readable images of four classes, of which 10% (rounded up, stratified) are held out.
    assert len(data.train) + len(data.test) == 12
    with pytest.raises(ValueError, match="--skip_bad_images"):
        load_classification_dataset(train_data_dir=str(tmp_path / "empty_image"))


def test_a_class_without_test_images_is_warned_about(tmp_path, caplog):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    images = [PIL.Image.new("L", (8, 8), color) for color in (0, 100, 200)]
    splits = {
        "train": datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2]}, features=features),
        "test": datasets.Dataset.from_dict({"image": images[:2], "label": [0, 1]}, features=features),
    }
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="jdcl"):
        load_classification_dataset(dataset_name=str(tmp_path / "data"))
    assert "['c'] have training images but no test images: its accuracy is not measured" in caplog.text


def test_classify_reads_a_list_of_channels_first_tensors_as_one_batch():
    pipe = tiny_pipeline()
    images = torch.rand(3, 1, 16, 16)
    from_list = pipe.classify(list(images)).probabilities
    from_arrays = pipe.classify([image.permute(1, 2, 0).numpy() for image in images]).probabilities
    expected = pipe.classify(images).probabilities
    assert torch.equal(from_list, expected) and torch.allclose(from_arrays, expected)

"""A run folder that defends itself: claims, locks, resume targets, kills at the worst moments, tokens, messages."""

import json
import logging
from pathlib import Path

import filelock
import pytest
import torch

from jdcl import JDCLPipeline
from jdcl.config import JDCLTrainingConfig
from jdcl.run_folder import LOCK_NAME, RunFolder
from jdcl.trainer import ContinualTrainer, train_jdcl

from .test_bad_inputs import TINY
from .utils import SimulatedKill, tiny_pipeline


def tiny_config(output_dir, **overrides) -> JDCLTrainingConfig:
    return JDCLTrainingConfig(**{**TINY, "output_dir": str(output_dir), **overrides})


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

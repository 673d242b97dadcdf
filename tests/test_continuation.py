"""Continuing a published task checkpoint on new classes, and starting from a pretrained diffusers UNet."""

import json
import logging
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import torch
from diffusers import UNet2DModel
from huggingface_hub import HfApi, RepoUrl

from jdcl import JDCLPipeline
from jdcl.config import JDCLTrainingConfig
from jdcl.models import joint_unet_from_unet2d
from jdcl.trainer import ContinualTrainer, train_jdcl

from . import utils
from .utils import TINY_UNET, task_unet_weights


# The library's defaults for the task split (five tasks, classes in label order), a longer first task, no grids.
CONTINUATION = {
    "num_tasks": 5,
    "class_order": None,
    "first_task_train_steps": 4,
    "grid_samples_per_class": 0,
}


def tiny_config(output_dir, **overrides) -> JDCLTrainingConfig:
    return utils.tiny_config(output_dir, **{**CONTINUATION, **overrides})


@pytest.fixture(scope="module")
def four_task_run(tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted run: four tasks of two digits."""
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    metrics = train_jdcl(tiny_config(output_dir, num_tasks=4, class_order=list(range(8))))
    return output_dir, metrics


def test_continuing_task_2_gives_the_uninterrupted_run_bit_for_bit(four_task_run, tmp_path):
    uninterrupted, uninterrupted_metrics = four_task_run
    checkpoint = JDCLPipeline.from_pretrained(uninterrupted / "task-2")
    assert checkpoint.config.tasks == [[0, 1], [2, 3]]
    assert len(checkpoint.config.accuracy_matrix) == 2

    # No class order: the rest of the checkpoint's own order, 4-7, in the two tasks asked for.
    continued = tmp_path / "continued"
    metrics = train_jdcl(
        tiny_config(continued, num_tasks=2, pretrained_model_name_or_path=str(uninterrupted / "task-2"))
    )

    assert not (continued / "task-1").exists() and not (continued / "task-2").exists()
    for task in (3, 4):
        expected, actual = task_unet_weights(uninterrupted, task), task_unet_weights(continued, task)
        assert expected.keys() == actual.keys()
        for name in expected:
            assert torch.equal(expected[name], actual[name]), (task, name)
    assert metrics["accuracy_matrix"] == uninterrupted_metrics["accuracy_matrix"]
    assert metrics["tasks"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    pipe = JDCLPipeline.from_pretrained(continued / "task-4")
    assert pipe.seen_classes == list(range(8))
    assert (pipe.config.task_index, pipe.config.tasks) == (4, [[0, 1], [2, 3], [4, 5], [6, 7]])


def test_continuing_with_jdcl_keeps_old_classes_where_finetune_forgets_them(tmp_path, caplog):
    first = tmp_path / "first"
    train_jdcl(tiny_config(first, num_tasks=1, class_order=[0, 1], first_task_train_steps=60))
    budget = {"num_tasks": 1, "class_order": ["2", "3"], "pretrained_model_name_or_path": str(first / "task-1")}
    budget.update(local_train_steps=30, global_train_steps=30, replay_samples_per_class=32, replay_inference_steps=5)
    with caplog.at_level(logging.WARNING):
        finetune = train_jdcl(tiny_config(tmp_path / "finetune", strategy="finetune", **budget))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert sum("will be forgotten" in message for message in warnings) == 1
    jdcl = train_jdcl(tiny_config(tmp_path / "jdcl", **budget))

    # Rows: the checkpoint's task, then the new one; columns: classes 0-1 and 2-3.
    assert finetune["tasks"] == jdcl["tasks"] == [[0, 1], [2, 3]]
    old_task_finetune, old_task_jdcl = finetune["accuracy_matrix"][1][0], jdcl["accuracy_matrix"][1][0]
    assert old_task_jdcl > old_task_finetune + 0.2, (old_task_jdcl, old_task_finetune)
    assert JDCLPipeline.from_pretrained(tmp_path / "jdcl" / "task-2").seen_classes == [0, 1, 2, 3]


def test_hub_round_trip_download_task_2_continue_push_task_3(four_task_run, tmp_path, monkeypatch):
    uninterrupted, _ = four_task_run
    downloads = []

    def fake_snapshot_download(repo_id, revision=None, repo_type=None):
        downloads.append((repo_id, revision))
        return str(uninterrupted / revision)

    monkeypatch.setattr("jdcl.hub.snapshot_download", fake_snapshot_download)
    api = MagicMock(spec=HfApi)
    api.create_repo.return_value = RepoUrl("https://huggingface.co/me/digits-jdcl")
    config = tiny_config(
        tmp_path / "continued",
        num_tasks=1,
        class_order=[4, 5],
        pretrained_model_name_or_path="me/digits-jdcl",
        pretrained_revision="task-2",
        push_to_hub=True,
        hub_model_id="me/digits-jdcl",
    )
    train_jdcl(config, hub_api=api)

    assert downloads == [("me/digits-jdcl", "task-2")]
    assert [call.kwargs["revision"] for call in api.upload_folder.call_args_list] == ["task-3", "main"]
    api.create_branch.assert_called_once_with("me/digits-jdcl", branch="task-3", exist_ok=True, repo_type="model")
    # The weights the continued run starts from are those of the downloaded task-2 (the first task-3 stage reads them).
    assert json.loads((tmp_path / "continued" / "task-3" / "model_index.json").read_text())["task_index"] == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"class_order": [0, 1]}, r"already learned classes \['0', '1'\]"),
        ({"class_order": [0, 1, 2, 3]}, "has learned every class of its run"),
        ({"class_order": [4, 0]}, r"already learned classes \['0'\]"),
        ({"class_order": [4, 5], "num_tasks": 3}, "--num_tasks counts the new tasks, pass --num_tasks 2 or less"),
        ({"class_order": [4, 5], "strategy": "replay_buffer", "buffer_size": 20}, "the real images its buffer"),
        ({"class_order": [4, 5], "strategy": "separate"}, "its generator"),
        ({"class_order": [4, 5], "pretrained_revision": "task-2"}, "is a local folder, which has no revision"),
        ({"class_order": [4, 5], "class_names_map": {"eleven": "0"}}, r"renames \['eleven'\]"),
        ({"class_order": [4, 5], "class_names_map": {"0": "zero"}}, r"\['zero'\] are not classes of the checkpoint"),
    ],
    ids=["known", "nothing_new", "mixed", "too_many_tasks", "buffer", "separate", "revision", "map_key", "map_value"],
)
def test_bad_continuations_are_refused_before_training(four_task_run, tmp_path, overrides, message):
    uninterrupted, _ = four_task_run
    # The first two tasks of a two-task run of classes 0-3: nothing is left of its own order.
    checkpoint = tmp_path / "checkpoint"
    pipe = JDCLPipeline.from_pretrained(uninterrupted / "task-2")
    pipe.register_to_config(class_order=[0, 1, 2, 3], num_tasks=2)
    pipe.save_pretrained(checkpoint)
    config = tiny_config(
        tmp_path / "run", **{"num_tasks": 1, "pretrained_model_name_or_path": str(checkpoint), **overrides}
    )
    with pytest.raises(ValueError, match=message):
        ContinualTrainer(config)
    assert not (tmp_path / "run").exists()


def test_data_set_names_are_mapped_to_the_checkpoint_s_classes(four_task_run, tmp_path):
    uninterrupted, _ = four_task_run
    # The same digits under other names: refused with both lists, accepted once mapped.
    pipe = JDCLPipeline.from_pretrained(uninterrupted / "task-2")
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    pipe.register_to_config(class_names=words)
    pipe.save_pretrained(tmp_path / "checkpoint")
    config = tiny_config(tmp_path / "run", num_tasks=1, pretrained_model_name_or_path=str(tmp_path / "checkpoint"))
    with pytest.raises(ValueError, match="do not match") as error:
        ContinualTrainer(config)
    assert "checkpoint: ['zero'," in str(error.value) and "data set:   ['0'," in str(error.value)

    # Mapped in reverse order of the labels, so that the relabelling is visible: "0" is "nine", ...
    config.class_names_map = {str(digit): words[9 - digit] for digit in range(10)}
    trainer = ContinualTrainer(config)
    assert trainer.data.class_names == words
    labels = trainer.data.train[trainer.data.label_column]
    original = ContinualTrainer(tiny_config(tmp_path / "plain")).data.train[trainer.data.label_column]
    assert labels == [9 - label for label in original]
    assert trainer.split.tasks == [[0, 1], [2, 3], [4, 5, 6, 7]]


# --------------------------------------------------------------------------------------- a pretrained diffusers UNet


def small_unet2d(sample_size: int = 8) -> UNet2DModel:
    torch.manual_seed(3)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=16,
        norm_num_groups=8,
        layers_per_block=1,
    ).eval()


def test_a_pretrained_unet2d_keeps_its_noise_prediction_bit_for_bit(tmp_path):
    unet = small_unet2d()
    unet.save_pretrained(tmp_path / "ddpm" / "unet")
    config = tiny_config(
        tmp_path / "run", pretrained_unet=str(tmp_path / "ddpm"), pretrained_unet_subfolder="unet", num_tasks=2
    )
    trainer = ContinualTrainer(config)
    model = trainer.new_model(config.seed).eval()
    assert model.config.num_classes == 10 and model.config.block_out_channels == [16, 32]
    sample, timesteps = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])
    with torch.no_grad():
        assert torch.equal(model(sample, timesteps).sample, unet(sample, timesteps).sample)
        assert model.classify(sample).shape == (3, 10)
    # The head is the only new part, seeded: two conversions agree.
    again = joint_unet_from_unet2d(
        UNet2DModel.from_pretrained(tmp_path / "ddpm" / "unet"), num_classes=10, classifier_hidden_dim=32, seed=0
    )
    for name, weight in again.state_dict().items():
        assert torch.equal(weight, model.state_dict()[name]), name


def test_a_pretrained_unet_of_another_size_or_without_a_unet_is_refused(tmp_path):
    small_unet2d(sample_size=16).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(ValueError, match="sample_size=16.*pass --resolution 16"):
        ContinualTrainer(tiny_config(tmp_path / "run", pretrained_unet=str(tmp_path / "ddpm")))
    (tmp_path / "pipeline").mkdir()
    with pytest.raises(ValueError, match="holds no diffusers UNet2DModel in unet/"):
        ContinualTrainer(
            tiny_config(tmp_path / "run", pretrained_unet=str(tmp_path / "pipeline"), pretrained_unet_subfolder="unet")
        )
    assert not (tmp_path / "run").exists()


def test_a_pretrained_unet_trains_through_a_run(tmp_path):
    small_unet2d().save_pretrained(tmp_path / "ddpm")
    metrics = train_jdcl(tiny_config(tmp_path / "run", pretrained_unet=str(tmp_path / "ddpm"), num_tasks=2))
    assert len(metrics["accuracy_matrix"]) == 2
    assert JDCLPipeline.from_pretrained(tmp_path / "run" / "task-2").unet.config.num_classes == 10


def test_a_checkpoint_without_recorded_tasks_or_matrix_is_continued(four_task_run, tmp_path, caplog):
    uninterrupted, uninterrupted_metrics = four_task_run
    # A task-3 pipeline as saved before pipelines recorded their tasks and accuracy matrix.
    pipe = JDCLPipeline.from_pretrained(uninterrupted / "task-3")
    pipe.register_to_config(tasks=None, accuracy_matrix=None)
    pipe.save_pretrained(tmp_path / "old")
    with caplog.at_level(logging.WARNING):
        metrics = train_jdcl(
            tiny_config(tmp_path / "run", num_tasks=1, pretrained_model_name_or_path=str(tmp_path / "old"))
        )
    assert any("records no accuracy matrix" in record.getMessage() for record in caplog.records)
    # Its tasks come from its class order; its own row is measured again (the same model, the same test set), the rows
    # before it are unknown.
    assert metrics["tasks"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    matrix = metrics["accuracy_matrix"]
    assert matrix[0][0] is None and matrix[1][:2] == [None, None]
    assert matrix[2] == uninterrupted_metrics["accuracy_matrix"][2]
    assert matrix[3] == uninterrupted_metrics["accuracy_matrix"][3]
    assert metrics["average_accuracy"] == uninterrupted_metrics["average_accuracy"]


def test_a_new_model_of_a_continued_run_has_the_checkpoint_s_architecture(four_task_run, tmp_path):
    uninterrupted, _ = four_task_run
    config = tiny_config(
        tmp_path / "run",
        num_tasks=1,
        local_init="scratch",
        pretrained_model_name_or_path=str(uninterrupted / "task-2"),
        unet_config={**TINY_UNET, "block_out_channels": [8, 16], "norm_num_groups": 8, "attention_head_dim": 8},
    )
    trainer = ContinualTrainer(config)
    checkpoint = trainer.checkpoint.model
    fresh = trainer.new_model(seed=5)
    assert fresh.config == checkpoint.config
    assert not torch.equal(fresh.conv_in.weight, checkpoint.conv_in.weight)


def test_a_checkpoint_whose_record_contradicts_itself_is_refused(four_task_run, tmp_path):
    uninterrupted, _ = four_task_run
    pipe = JDCLPipeline.from_pretrained(uninterrupted / "task-2")
    pipe.register_to_config(tasks=[[0, 1]])
    pipe.save_pretrained(tmp_path / "edited")
    config = tiny_config(tmp_path / "run", num_tasks=1, pretrained_model_name_or_path=str(tmp_path / "edited"))
    with pytest.raises(
        ValueError, match=r"contradicts itself: it was saved after task 2 with seen classes \[0, 1, 2, 3\]"
    ):
        ContinualTrainer(config)
    assert not (tmp_path / "run").exists()

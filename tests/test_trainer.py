"""End-to-end tests of the continual trainer on the bundled digits with a tiny UNet (each run takes seconds)."""

import json
import logging
import math
from pathlib import Path
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from huggingface_hub import HfApi, RepoUrl
from PIL import Image
from safetensors.torch import load_file

from jdcl import JDCLPipeline, JointUNet2DModel
from jdcl.rehearsal import RehearsalSampler
from jdcl.stage import StageRunner
from jdcl.trainer import ContinualTrainer, train_jdcl

from .utils import TINY_UNET, run_killed_when_logged, tiny_config


def check_metric_ranges(metrics: dict, num_tasks: int) -> None:
    matrix = metrics["accuracy_matrix"]
    assert len(matrix) == num_tasks
    for i, row in enumerate(matrix):
        assert len(row) == num_tasks
        assert all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in row[: i + 1]), row
        assert all(a is None for a in row[i + 1 :]), row
    for name in ("average_accuracy", "average_incremental_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0, name
    # Forgetting is negative when an old task ends above its best earlier accuracy (positive backward transfer).
    assert -1.0 <= metrics["forgetting"] <= 1.0
    assert -1.0 <= metrics["backward_transfer"] <= 1.0
    # The summary numbers are the documented functions of the matrix.
    final = matrix[-1]
    assert math.isclose(metrics["average_accuracy"], sum(final) / num_tasks, abs_tol=1e-9)
    if num_tasks > 1:
        peaks = [max(matrix[k][j] for k in range(j, num_tasks - 1)) for j in range(num_tasks - 1)]
        forgetting = sum(peak - final[j] for j, peak in enumerate(peaks)) / (num_tasks - 1)
        assert math.isclose(metrics["forgetting"], forgetting, abs_tol=1e-9)
        bwt = sum(final[j] - matrix[j][j] for j in range(num_tasks - 1)) / (num_tasks - 1)
        assert math.isclose(metrics["backward_transfer"], bwt, abs_tol=1e-9)


# ----------------------------------------------------------------------------------------------- 1. end to end


def test_end_to_end_jdcl_writes_every_output(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir = tmp_path / "run"
    num_tasks = 3
    config = tiny_config(
        output_dir,
        num_tasks=num_tasks,
        class_order=[0, 1, 2, 3, 4, 5],
        local_train_steps=4,
        global_train_steps=4,
        logger="tensorboard",
    )
    returned = train_jdcl(config)

    for k in range(1, num_tasks + 1):
        task_dir = output_dir / f"task-{k}"
        assert (task_dir / "model_index.json").is_file()
        assert (task_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert (task_dir / "unet" / "config.json").is_file()
        assert (task_dir / "scheduler" / "scheduler_config.json").is_file()
        card = (task_dir / "README.md").read_text()
        assert f"after task {k} of {num_tasks}" in card
        assert "| after task 1 |" in card and f"| after task {k} |" in card
        assert f"| after task {k + 1} |" not in card
        for picture in (task_dir / "samples.png", output_dir / "samples" / f"task-{k}.png"):
            with Image.open(picture) as image:
                image.load()
                assert image.width > 0 and image.height > 0
        assert not task_dir.with_name(task_dir.name + ".tmp").exists()
    assert not (output_dir / f"task-{num_tasks + 1}").exists()
    with Image.open(output_dir / "accuracy_matrix.png") as image:
        image.load()

    # A task's pipeline loads knowing its classes, and classifies among those it has seen.
    pipe = JDCLPipeline.from_pretrained(output_dir / "task-2")
    assert pipe.unet.config.sample_size == 8 and pipe.unet.config.num_classes == 10
    assert pipe.seen_classes == [0, 1, 2, 3] and pipe.class_names == [str(c) for c in range(10)]
    assert (pipe.config.task_index, pipe.config.num_tasks, pipe.config.class_order) == (2, 3, list(range(6)))
    images = torch.rand(3, 1, 8, 8)  # the pipeline's [0, 1] convention
    classified = pipe.classify(images)
    assert classified.label_names == [str(label) for label in classified.labels.tolist()]
    with pytest.raises(ValueError, match="not seen"):
        pipe(class_labels="5", num_inference_steps=1)
    labels = torch.as_tensor(np.asarray(classified.labels))
    probabilities = torch.as_tensor(np.asarray(classified.probabilities))
    assert labels.shape == (3,) and set(labels.tolist()) <= {0, 1, 2, 3}
    assert probabilities.shape == (3, 10)
    assert torch.allclose(probabilities.sum(-1), torch.ones(3), atol=1e-4)
    assert float(probabilities[:, 4:].abs().sum()) == 0.0

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    check_metric_ranges(metrics, num_tasks)
    assert metrics["tasks"] == [[0, 1], [2, 3], [4, 5]]
    assert metrics["strategy"] == "jdcl"
    assert len(metrics["accuracy_seen"]) == num_tasks
    assert set(metrics["stage_seconds"]) == {"1", "2", "3"}
    assert {"local", "task_total"} <= set(metrics["stage_seconds"]["1"])
    for k in ("2", "3"):
        assert {"local", "rehearsal", "global", "task_total"} <= set(metrics["stage_seconds"][k])
        assert all(seconds >= 0 for seconds in metrics["stage_seconds"][k].values())
    assert set(metrics["rehearsal"]) == {"2", "3"}
    for k, seen in (("2", 4), ("3", 6)):
        rehearsal = metrics["rehearsal"][k]
        assert rehearsal["generated"] >= rehearsal["kept"] >= 0
        assert rehearsal["kept"] + rehearsal["filled"] == 4 * seen
        assert rehearsal["per_class"] == {str(c): 4 for c in range(seen)}

    # Tensorboard holds the loss terms of local and global stages, and the evaluation.
    event_files = list((output_dir / "logs").rglob("events.out.tfevents.*"))
    assert event_files
    tags, throughput = set(), []
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
        throughput += [
            event.value
            for tag in accumulator.Tags()["scalars"]
            if tag.endswith("_per_second")
            for event in accumulator.Scalars(tag)
        ]
    # Steps and images per second, at every logged step of every stage.
    assert throughput and all(value > 0 for value in throughput)
    for tag in (
        "task_1/local/loss",
        "task_1/local/steps_per_second",
        "task_2/global/images_per_second",
        "task_1/local/diffusion",
        "task_1/local/classification",
        "task_2/local/loss",
        "task_2/global/loss",
        "task_2/global/distill_diffusion_old",
        "task_2/global/distill_diffusion_new",
        "task_3/global/distill_classification_old",
        "eval/average_accuracy",
    ):
        assert tag in tags, (tag, sorted(tags))
    assert not any(tag.startswith("task_1/global") for tag in tags)


# ------------------------------------------------------------------------------------------ 2. baselines, ablations


@pytest.mark.parametrize(
    "overrides, stages",
    [
        ({"strategy": "finetune"}, {"train"}),
        ({"strategy": "cumulative"}, {"train"}),
        ({"no_distillation": True}, {"local", "rehearsal", "global"}),
        ({"strategy": "single_stage"}, {"rehearsal", "single"}),
        ({"strategy": "separate"}, {"local-generator", "local", "rehearsal", "global-generator", "global"}),
    ],
    ids=["finetune", "cumulative", "no_distillation", "single_stage", "separate"],
)
def test_baselines_and_ablations_complete(tmp_path, overrides, stages):
    config = tiny_config(
        tmp_path / "run", local_train_steps=2, global_train_steps=2, grid_samples_per_class=0, **overrides
    )
    metrics = train_jdcl(config)
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["accuracy_matrix"] == metrics["accuracy_matrix"]
    check_metric_ranges(on_disk, 2)
    assert on_disk["strategy"] == config.strategy
    assert set(on_disk["stage_seconds"]["2"]) == stages | {"task_total"}
    assert ("2" in on_disk["rehearsal"]) == ("rehearsal" in stages)
    assert (tmp_path / "run" / "task-2" / "model_index.json").is_file()
    assert not (tmp_path / "run" / "task-2" / "samples.png").exists()


def test_separate_trains_only_what_each_model_uses(tmp_path):
    # With weight decay, a part that got (zero) gradients would still shrink: these must get none at all.
    config = tiny_config(tmp_path / "run", strategy="separate", num_tasks=1, class_order=[0, 1], adam_weight_decay=0.1)
    train_jdcl(config)
    # The first task's models start from the trainer's initialisations: the generator from seed, the classifier from
    # seed + 1 (as the separate strategy draws them).
    trainer = ContinualTrainer(config.__class__(**{**config.to_dict(), "output_dir": str(tmp_path / "other")}))
    generator_init, classifier_init = trainer.new_model(config.seed), trainer.new_model(config.seed + 1)
    generator = JointUNet2DModel.from_pretrained(tmp_path / "run" / "state" / "task-1" / "generator")
    classifier = JDCLPipeline.from_pretrained(tmp_path / "run" / "task-1").unet

    def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    # The generator's head and the classifier's decoder are never run, so never trained; the rest is.
    assert same(generator.classifier, generator_init.classifier)
    assert not same(generator.down_blocks, generator_init.down_blocks)
    assert not same(generator.up_blocks, generator_init.up_blocks)
    for trained, init in zip(classifier.decoder_modules(), classifier_init.decoder_modules()):
        assert same(trained, init)
    assert not same(classifier.down_blocks, classifier_init.down_blocks)
    assert not same(classifier.classifier, classifier_init.classifier)


@pytest.mark.parametrize(("selection", "eta"), [("first", 0.0), ("confident", 1.0)])
def test_rehearsal_settings_reach_the_sampler(tmp_path, monkeypatch, selection, eta):
    calls = []
    sample = RehearsalSampler.sample

    def recording_sample(self, *args, **kwargs):
        calls.append({"selection": self.selection, "eta": self.eta})
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(RehearsalSampler, "sample", recording_sample)
    config = tiny_config(
        tmp_path / "run",
        local_train_steps=1,
        global_train_steps=1,
        grid_samples_per_class=0,
        replay_selection=selection,
        replay_eta=eta,
    )
    metrics = train_jdcl(config)
    # Task 2 draws old classes from the previous model and new ones from the local model, both with the settings.
    assert [(call["selection"], call["eta"]) for call in calls] == [(selection, eta)] * 2
    assert sum(metrics["rehearsal"]["2"]["per_class"].values()) == 4 * config.replay_samples_per_class


# ------------------------------------------------------------------------------------------------- 3. it learns


def test_one_task_of_zeros_and_ones_is_learned(tmp_path):
    config = tiny_config(
        tmp_path / "run", num_tasks=1, class_order=[0, 1], local_train_steps=60, grid_samples_per_class=0
    )
    metrics = train_jdcl(config)
    assert metrics["accuracy_matrix"][0][0] > 0.9
    assert metrics["average_accuracy"] > 0.9


# ---------------------------------------------------------------------------------------- 4. kill and resume


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path, monkeypatch, caplog):
    settings = {
        "local_train_steps": 10,
        "global_train_steps": 10,
        "checkpointing_steps": 5,
        "grid_samples_per_class": 0,
    }
    reference = train_jdcl(tiny_config(tmp_path / "reference", **settings))

    # The global stage of task 2 logs its last step (9) after its checkpoint at step 5: die there.
    output_dir = tmp_path / "run"
    run_killed_when_logged(tiny_config(output_dir, **settings), "task_2/global/loss", step=9)
    checkpoint = output_dir / "checkpoints" / "task-2-global" / "checkpoint-5"
    assert json.loads((checkpoint / "stage_state.json").read_text()) == {"step": 5}
    assert (checkpoint / "unet_ema" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(checkpoint.parent.glob("tmp-*"))
    assert not (output_dir / "task-2").exists()
    task_1_weights = output_dir / "task-1" / "unet" / "diffusion_pytorch_model.safetensors"
    task_1_mtime = task_1_weights.stat().st_mtime_ns

    # Without --resume_from_checkpoint the folder is refused rather than overwritten.
    with pytest.raises(ValueError, match="resume_from_checkpoint latest"):
        ContinualTrainer(tiny_config(output_dir, **settings))

    with caplog.at_level(logging.INFO, logger="jdcl"):
        resumed = train_jdcl(tiny_config(output_dir, resume_from_checkpoint="latest", **settings))
    assert "Task 1 was finished by an earlier run" in caplog.text
    assert "Resuming task 2 global stage" in caplog.text
    assert task_1_weights.stat().st_mtime_ns == task_1_mtime

    check_metric_ranges(resumed, 2)
    assert len(resumed["accuracy_seen"]) == 2
    assert resumed["accuracy_matrix"] == reference["accuracy_matrix"]
    assert resumed["rehearsal"] == reference["rehearsal"]
    # Batches, noise and dropout are seeded by step, optimizer and EMA come from the checkpoint: bit-identical weights.
    for k in (1, 2):
        weights_file = Path("unet") / "diffusion_pytorch_model.safetensors"
        expected = load_file(tmp_path / "reference" / f"task-{k}" / weights_file)
        actual = load_file(output_dir / f"task-{k}" / weights_file)
        assert expected.keys() == actual.keys()
        for name in expected:
            assert torch.equal(expected[name], actual[name]), (k, name)


# ------------------------------------------------------------------------------------------ 6. errors before training


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started although the configuration is invalid")

    monkeypatch.setattr(StageRunner, "run", fail)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_column": "nope"}, "nope"),
        ({"label_column": "nope"}, "nope"),
        ({"class_order": [0, 1, 12]}, "12"),
        ({"class_order": [0, 1, 1, 2]}, "1"),
        ({"class_order": [0, 1], "num_tasks": 3}, "num_tasks|tasks"),
        ({"class_order": None, "num_tasks": 11}, "num_tasks|tasks"),
    ],
    ids=["image_column", "label_column", "unknown_class", "repeated_class", "tasks_over_classes", "tasks_over_all"],
)
def test_invalid_data_settings_raise_before_training(tmp_path, no_training, overrides, message):
    with pytest.raises(ValueError, match=message):
        ContinualTrainer(tiny_config(tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


def test_pretrained_model_of_another_resolution_is_refused(tmp_path, no_training):
    torch.manual_seed(0)
    unet = JointUNet2DModel(sample_size=8, in_channels=1, out_channels=1, num_classes=10, **TINY_UNET)
    JDCLPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "pretrained")
    config = tiny_config(tmp_path / "run", resolution=16, pretrained_model_name_or_path=str(tmp_path / "pretrained"))
    with pytest.raises(ValueError, match="sample_size=8") as error:
        ContinualTrainer(config)
    assert "--resolution 8" in str(error.value)
    # The same model is accepted at its own resolution.
    trainer = ContinualTrainer(
        tiny_config(tmp_path / "run", pretrained_model_name_or_path=str(tmp_path / "pretrained"))
    )
    assert trainer.pretrained_model.config.sample_size == 8


def test_output_dir_of_another_run_is_refused(tmp_path, no_training):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    other = ContinualTrainer(tiny_config(tmp_path / "other", seed=1))
    (output_dir / "run_config.json").write_text(json.dumps({"identity": other.identity}))
    (output_dir / "task-1").mkdir()  # a result of that run: the folder is no longer free to claim
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['seed'\]\)"):
        ContinualTrainer(tiny_config(output_dir))
    with pytest.raises(ValueError, match="another configuration"):
        ContinualTrainer(tiny_config(output_dir, seed=1, class_order=[0, 1, 2, 4]))
    # Settings that do not define the experiment may change on a resume.
    ContinualTrainer(tiny_config(output_dir, seed=1, resume_from_checkpoint="latest", eval_batch_size=7))


def test_output_dir_of_the_same_run_needs_resume(tmp_path, no_training):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    first = ContinualTrainer(tiny_config(output_dir))
    first.run_folder.write_run_config(first.identity, first.config.to_dict())
    (output_dir / "checkpoints" / "task-1-local" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ValueError, match="already holds this run.*--resume_from_checkpoint latest"):
        ContinualTrainer(tiny_config(output_dir))
    ContinualTrainer(tiny_config(output_dir, resume_from_checkpoint="latest"))


def test_output_dir_with_task_folders_but_no_run_config_is_refused(tmp_path, no_training):
    (tmp_path / "run" / "task-1").mkdir(parents=True)
    with pytest.raises(ValueError, match="run_config.json"):
        ContinualTrainer(tiny_config(tmp_path / "run"))


# ---------------------------------------------------------------------------------------------------- 7. the Hub


def test_push_to_hub_uploads_every_task_and_never_writes_the_token(tmp_path, monkeypatch, caplog):
    token = "hf_secret_token"
    api = MagicMock(spec=HfApi)
    api.create_repo.return_value = RepoUrl("https://huggingface.co/me/jdcl-test")
    built_with = {}

    def fake_hf_api(*args, **kwargs):
        built_with.update(kwargs)
        return api

    # The trainer builds the client from `hub_token`; the fake stands in for huggingface_hub.HfApi.
    monkeypatch.setattr("jdcl.hub.HfApi", fake_hf_api)
    output_dir = tmp_path / "run"
    config = tiny_config(
        output_dir, push_to_hub=True, hub_model_id="me/jdcl-test", hub_token=token, logger="tensorboard"
    )
    assert token not in repr(config)
    with caplog.at_level(logging.DEBUG):
        metrics = train_jdcl(config)

    assert built_with.get("token") == token
    api.create_repo.assert_called_once()
    assert api.create_repo.call_args.args[0] == "me/jdcl-test"
    branches = [c.kwargs.get("branch") for c in api.create_branch.call_args_list]
    assert branches == ["task-1", "task-2"]
    uploads = api.upload_folder.call_args_list
    assert [c.kwargs["revision"] for c in uploads] == ["task-1", "main", "task-2", "main"]
    for upload, k in zip(uploads, (1, 1, 2, 2)):
        assert upload.kwargs["repo_id"] == "me/jdcl-test"
        assert Path(upload.kwargs["folder_path"]) == output_dir / f"task-{k}"
        accuracy = metrics["accuracy_seen"][k - 1]
        assert upload.kwargs["commit_message"] == f"Task {k}/2: accuracy on seen classes {accuracy:.4f}"
    # The model card tells how to load each task's revision.
    for k in (1, 2):
        card = (output_dir / f"task-{k}" / "README.md").read_text()
        assert f'"me/jdcl-test", revision="task-{k}"' in card
        assert "| after task 1 |" in card

    assert token not in caplog.text
    files = [path for path in output_dir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".json" for path in files)
    for path in files:
        assert token.encode() not in path.read_bytes(), path


def test_push_to_hub_with_a_ready_client(tmp_path):
    api = MagicMock(spec=HfApi)
    api.create_repo.return_value = RepoUrl("https://huggingface.co/me/jdcl-test")
    config = tiny_config(
        tmp_path / "run",
        num_tasks=1,
        class_order=[0, 1],
        grid_samples_per_class=0,
        push_to_hub=True,
        hub_model_id="me/jdcl-test",
    )
    train_jdcl(config, hub_api=api)
    api.create_repo.assert_called_once()
    assert [c.kwargs["revision"] for c in api.upload_folder.call_args_list] == ["task-1", "main"]

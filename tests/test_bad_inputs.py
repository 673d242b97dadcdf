"""Bad input, table-driven: every kind gets a `ValueError` that names the argument, before anything is written."""

import io
import math
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from jdcl import JDCLPipeline
from jdcl.config import JDCLTrainingConfig
from jdcl.trainer import train_jdcl

from . import utils
from .utils import TINY_RUN, tiny_pipeline


# One step per stage and no sample grids: these runs only have to reach the check under test.
ONE_STEP = {
    "train_batch_size": 8,
    "local_train_steps": 1,
    "global_train_steps": 1,
    "replay_samples_per_class": 2,
    "replay_inference_steps": 1,
    "grid_samples_per_class": 0,
}


def tiny_config(output_dir, **overrides) -> JDCLTrainingConfig:
    return utils.tiny_config(output_dir, **{**ONE_STEP, **overrides})


# (kind, configuration overrides, what the message must name). `{tmp}` is the test's temporary folder.
TRAINING_CASES = [
    ("resolution_zero", {"resolution": 0}, "--resolution"),
    ("resolution_not_halvable", {"resolution": 7}, "--resolution 7"),
    ("num_tasks_zero", {"num_tasks": 0}, "--num_tasks"),
    ("batch_size_zero", {"train_batch_size": 0}, "--train_batch_size"),
    ("batch_size_bool", {"train_batch_size": True}, "--train_batch_size"),
    ("learning_rate_nan", {"learning_rate": math.nan}, "--learning_rate"),
    ("learning_rate_infinite", {"learning_rate": math.inf}, "--learning_rate"),
    ("learning_rate_negative", {"learning_rate": -1e-3}, "--learning_rate"),
    ("betas_reversed", {"beta_start": 0.02, "beta_end": 0.001}, "--beta_start"),
    ("ema_decay_above_one", {"ema_decay": 1.5}, "--ema_decay"),
    ("replay_eta_above_one", {"replay_eta": 2.0}, "--replay_eta"),
    ("unknown_replay_scheduler", {"replay_scheduler": "dpm"}, "--replay_scheduler"),
    ("replay_scheduler_of_another_schedule", {"replay_scheduler": "EDMEulerScheduler"}, "--replay_scheduler"),
    ("sampling_factor_below_one", {"replay_max_sampling_factor": 0.5}, "--replay_max_sampling_factor"),
    ("guidance_nan", {"replay_guidance_scale": math.nan}, "--replay_guidance_scale"),
    ("negative_loss_weight", {"classification_loss_weight": -1.0}, "--classification_loss_weight"),
    ("negative_steps", {"local_train_steps": -1}, "--local_train_steps"),
    ("fractional_steps", {"global_train_steps": 2.5}, "--global_train_steps"),
    ("negative_seed", {"seed": -3}, "--seed"),
    ("zero_replay_batch", {"replay_batch_size": 0}, "--replay_batch_size"),
    ("unknown_strategy", {"strategy": "replay"}, "--strategy"),
    ("unknown_sampler", {"replay_sampler": "magic"}, "--replay_sampler"),
    ("unknown_precision", {"mixed_precision": "fp8"}, "--mixed_precision"),
    ("fp16_without_cuda", {"mixed_precision": "fp16"}, "--mixed_precision fp16"),
    ("unet_levels_mismatch", {"unet_config": {"block_out_channels": [64, 128, 128, 128]}}, "--unet_config"),
    ("unet_groups_not_dividing", {"unet_config": {"norm_num_groups": 7}}, "--unet_config"),
    ("unet_head_dim_not_dividing", {"unet_config": {"attention_head_dim": 5}}, "--unet_config"),
    ("unet_unknown_key", {"unet_config": {"channels": 3}}, "--unet_config"),
    ("skip_bad_images_without_a_folder", {"skip_bad_images": True}, "--skip_bad_images"),
    ("ablation_of_another_method", {"strategy": "finetune", "no_distillation": True}, "--no_distillation"),
    ("buffer_without_its_method", {"buffer_size": 100}, "--buffer_size"),
    ("replay_buffer_without_size", {"strategy": "replay_buffer"}, "--buffer_size"),
    ("buffer_smaller_than_classes", {"strategy": "replay_buffer", "buffer_size": 3}, "--buffer_size 3"),
    (
        "unknown_buffer_policy",
        {"strategy": "replay_buffer", "buffer_size": 8, "buffer_policy": "fifo"},
        "--buffer_policy",
    ),
    ("unknown_image_column", {"image_column": "nope"}, "--image_column"),
    ("unknown_label_column", {"label_column": "nope"}, "--label_column"),
    ("unknown_class", {"class_order": [0, 1, 12]}, "class_order"),
    ("repeated_class", {"class_order": [0, 1, 1, 2]}, "class_order"),
    ("more_tasks_than_classes", {"class_order": [0, 1], "num_tasks": 3}, "--num_tasks"),
    ("both_data_sources", {"dataset_name": "digits", "train_data_dir": "{tmp}"}, "--train_data_dir"),
    ("missing_image_folder", {"train_data_dir": "{tmp}/nowhere"}, "--train_data_dir"),
    ("resume_from_a_non_checkpoint", {"resume_from_checkpoint": "{tmp}"}, "--resume_from_checkpoint"),
    ("pretrained_model_missing", {"pretrained_model_name_or_path": "{tmp}/nowhere"}, "nowhere"),
    ("unknown_quality_metric", {"quality_metrics": ["fid"]}, "--quality_metrics"),
    ("quality_metrics_as_a_string", {"quality_metrics": "referee"}, "quality_metrics"),
    ("quality_samples_one", {"quality_samples_per_class": 1}, "--quality_samples_per_class"),
    ("dinov2_missing", {"quality_metrics": ["dinov2"], "quality_dinov2_model": "{tmp}/nowhere"}, "nowhere"),
    # Semi-supervised settings.
    ("labeled_fraction_zero", {"labeled_fraction": 0.0}, "--labeled_fraction"),
    ("labeled_fraction_above_one", {"labeled_fraction": 1.5}, "--labeled_fraction"),
    ("labeled_fraction_and_per_class", {"labeled_fraction": 0.1, "labeled_per_class": 2}, "--labeled_per_class"),
    ("labeled_per_class_above_a_class", {"labeled_per_class": 10_000}, "--labeled_per_class 10000"),
    ("unlabeled_batch_ratio_zero", {"labeled_per_class": 2, "unlabeled_batch_ratio": 0}, "--unlabeled_batch_ratio"),
    ("pseudo_label_threshold_above_one", {"labeled_per_class": 2, "pseudo_label_threshold": 1.5}, "--pseudo_label"),
    ("semi_supervised_without_its_stage", {"labeled_per_class": 2, "strategy": "separate"}, "--strategy separate"),
]


# Outputs, sampling steps, rehearsal quotas, the UNet's description, the replay buffer, semi-supervised settings and
# image folders. `{tmp}` holds the files `make_input_files` writes.
MORE_TRAINING_CASES = [
    ("output_dir_empty", {"output_dir": ""}, "--output_dir"),
    ("output_dir_unset", {"output_dir": None}, "--output_dir"),
    ("output_dir_a_file", {"output_dir": "{tmp}/a_file"}, "--output_dir {tmp}/a_file` is a file"),
    ("output_dir_under_a_file", {"output_dir": "{tmp}/a_file/run"}, "lies under {tmp}/a_file"),
    ("cache_dir_a_file", {"cache_dir": "{tmp}/a_file"}, "--cache_dir {tmp}/a_file` is a file"),
    ("cache_dir_under_a_file", {"cache_dir": "{tmp}/a_file/cache"}, "--cache_dir"),
    ("hub_private_without_push", {"hub_private_repo": True}, "--push_to_hub"),
    (
        "replay_steps_beyond_schedule",
        {"num_train_timesteps": 10, "replay_inference_steps": 20},
        "--num_train_timesteps",
    ),
    (
        "grid_steps_beyond_schedule",
        {"num_train_timesteps": 10, "grid_samples_per_class": 1, "grid_inference_steps": 20},
        "--grid_inference_steps 20",
    ),
    ("no_rehearsal_quota", {"replay_samples_per_class": 0}, "--replay_samples_per_class 0"),
    (
        "no_rehearsal_quota_single_stage",
        {"strategy": "single_stage", "replay_samples_per_class": 0},
        "--replay_samples_per_class 0",
    ),
    ("no_rehearsal_quota_separate", {"strategy": "separate", "replay_samples_per_class": 0}, "--replay_samples"),
    ("unet_config_a_list", {"unet_config": [16, 32]}, "--unet_config"),
    ("unet_config_text_for_a_number", {"unet_config": {"layers_per_block": "2"}}, "layers_per_block"),
    ("unet_config_number_for_a_list", {"unet_config": {"block_out_channels": 64}}, "block_out_channels"),
    ("unet_config_texts_in_a_list", {"unet_config": {"block_out_channels": ["16", "32"]}}, "block_out_channels"),
    ("unet_config_bool_for_a_number", {"unet_config": {"dropout": True}}, "dropout"),
    ("first_task_steps_negative", {"first_task_train_steps": -1}, "--first_task_train_steps"),
    ("eval_batch_size_zero", {"eval_batch_size": 0}, "--eval_batch_size"),
    ("checkpointing_steps_zero", {"checkpointing_steps": 0}, "--checkpointing_steps"),
    ("class_order_repeated_name", {"class_order": ["0", "1", "1", "2"]}, "class_order"),
    ("unknown_test_split", {"test_split": "validation"}, "--test_split"),
    ("image_column_not_images", {"image_column": "label"}, "--image_column 'label'"),
    ("label_column_not_labels", {"label_column": "image"}, "--label_column"),
    ("empty_image_file", {"train_data_dir": "{tmp}/empty_image"}, "empty.png"),
    ("truncated_image_file", {"train_data_dir": "{tmp}/truncated_image"}, "cut.png (image file is truncated"),
    ("one_image_per_class", {"train_data_dir": "{tmp}/one_each"}, "--test_split"),
    # The replay buffer.
    ("replay_buffer_size_zero", {"strategy": "replay_buffer", "buffer_size": 0}, "--buffer_size"),
    ("replay_buffer_size_fractional", {"strategy": "replay_buffer", "buffer_size": 8.5}, "--buffer_size"),
    (
        "replay_buffer_without_distillation",
        {"strategy": "replay_buffer", "buffer_size": 8, "no_distillation": True},
        "--no_distillation",
    ),
    (
        "replay_buffer_below_the_classes",
        {"strategy": "replay_buffer", "buffer_size": 5, "class_order": [0, 1, 2, 3, 4, 5]},
        "--buffer_size 5",
    ),
    # Semi-supervised settings.
    ("labeled_per_class_zero", {"labeled_per_class": 0}, "--labeled_per_class"),
    ("labeled_fraction_nan", {"labeled_fraction": math.nan}, "--labeled_fraction"),
    (
        "pseudo_label_threshold_zero",
        {"labeled_per_class": 2, "pseudo_label_threshold": 0.0},
        "--pseudo_label_threshold",
    ),
    ("semi_supervised_single_stage", {"labeled_per_class": 2, "strategy": "single_stage"}, "--strategy single_stage"),
    (
        "semi_supervised_replay_buffer_ratio_zero",
        {"strategy": "replay_buffer", "buffer_size": 8, "labeled_per_class": 2, "unlabeled_batch_ratio": 0},
        "--unlabeled_batch_ratio",
    ),
]
ALL_TRAINING_CASES = TRAINING_CASES + MORE_TRAINING_CASES


def write_image(path: Path, side: int = 8) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 256, (side, side), dtype=np.uint8)).save(
        buffer, format="PNG"
    )
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def make_input_files(root: Path) -> None:
    """A plain file, and image folders of four classes: one with an empty image, one with a cut one, one image each."""
    (root / "a_file").write_text("not a folder")
    for folder in ("empty_image", "truncated_image"):
        for label in range(4):
            for index in range(3):
                write_image(root / folder / f"class_{label}" / f"{index}.png")
    (root / "empty_image" / "class_2" / "empty.png").write_bytes(b"")
    whole = write_image(root / "truncated_image" / "class_1" / "cut.png", side=32)
    (root / "truncated_image" / "class_1" / "cut.png").write_bytes(whole[: len(whole) // 2])
    for label in range(4):
        write_image(root / "one_each" / f"class_{label}" / "0.png")


@pytest.mark.parametrize(
    ("overrides", "named"), [case[1:] for case in ALL_TRAINING_CASES], ids=[c[0] for c in ALL_TRAINING_CASES]
)
def test_bad_training_input_is_refused_before_anything_is_written(tmp_path, overrides, named):
    # (A folder holding files of its own is refused as such: tests/test_reliability.py.)
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    make_input_files(tmp_path)
    overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(ValueError) as error:
        train_jdcl(JDCLTrainingConfig(**{**TINY_RUN, **ONE_STEP, "output_dir": str(output_dir), **overrides}))
    assert named.format(tmp=tmp_path) in str(error.value), str(error.value)
    assert list(output_dir.iterdir()) == []


@pytest.fixture(scope="module")
def pipe() -> JDCLPipeline:
    tiny = tiny_pipeline()
    return JDCLPipeline(
        unet=tiny.unet, scheduler=tiny.scheduler, class_names=["a", "b", "c", "d"], seen_classes=[0, 1], task_index=1
    )


IMAGES = torch.rand(2, 1, 16, 16)

# (kind, call, what the message must name)
PIPELINE_CASES = [
    ("batch_size_zero", lambda p: p(batch_size=0), "batch_size"),
    ("batch_size_fractional", lambda p: p(batch_size=1.5), "batch_size"),
    ("steps_zero", lambda p: p(num_inference_steps=0), "num_inference_steps"),
    ("guidance_nan", lambda p: p(class_labels=0, guidance_scale=math.nan), "guidance_scale"),
    ("guidance_negative", lambda p: p(class_labels=0, guidance_scale=-1.0), "guidance_scale"),
    ("eta_above_one", lambda p: p(eta=2.0), "eta"),
    ("output_type", lambda p: p(output_type="jpg"), "output_type"),
    ("fractional_label", lambda p: p(class_labels=[1.5]), "class_labels"),
    ("unknown_label_name", lambda p: p(class_labels="z"), "class_labels"),
    ("unseen_label", lambda p: p(class_labels="c"), "class_labels"),
    ("label_out_of_range", lambda p: p(class_labels=[9]), "classes"),
    ("labels_and_batch_size_disagree", lambda p: p(batch_size=3, class_labels=[0, 1]), "batch_size"),
    ("classify_nan_images", lambda p: p.classify(torch.full((1, 1, 16, 16), math.nan)), "images"),
    ("classify_uint8_images", lambda p: p.classify(torch.zeros(1, 1, 16, 16, dtype=torch.uint8)), "uint8"),
    ("classify_out_of_range", lambda p: p.classify(IMAGES * 2 - 1), "[0, 1]"),
    ("classify_no_images", lambda p: p.classify([]), "images"),
    ("classify_batch_size_zero", lambda p: p.classify(IMAGES, batch_size=0), "batch_size"),
    ("classify_empty_classes", lambda p: p.classify(IMAGES, classes=[]), "classes"),
    ("classify_unknown_class", lambda p: p.classify(IMAGES, classes=[99]), "classes"),
]


# Images in the wrong layout or mixed, labels, guidance targets and generators, and pipelines built incomplete.
MORE_PIPELINE_CASES = [
    ("classify_channels_first_numpy", lambda p: p.classify(np.random.rand(2, 1, 16, 16)), "channels-first"),
    ("classify_channels_last_tensor", lambda p: p.classify(torch.rand(2, 16, 16, 1)), "permute(0, 3, 1, 2)"),
    ("classify_wrong_channels", lambda p: p.classify(torch.rand(2, 3, 16, 16)), "3 channels"),
    (
        "classify_arrays_of_two_sizes",
        lambda p: p.classify([np.random.rand(16, 16, 1), np.random.rand(8, 8, 1)]),
        "different shapes",
    ),
    (
        "classify_pil_and_numpy_mixed",
        lambda p: p.classify([PIL.Image.new("L", (16, 16)), np.random.rand(16, 16, 1)]),
        "mixes",
    ),
    ("classify_empty_numpy_batch", lambda p: p.classify(np.zeros((0, 16, 16, 1), np.float32)), "empty batch"),
    ("classify_empty_tensor_batch", lambda p: p.classify(torch.zeros(0, 1, 16, 16)), "empty batch"),
    ("label_none", lambda p: p(class_labels=[None]), "class_labels"),
    ("label_none_among_others", lambda p: p(class_labels=[0, None]), "got None"),
    ("guidance_target_outside_classes", lambda p: p(class_labels=[0], classes=[1]), "outside the `classes`"),
    ("generator_list_too_short", lambda p: p(batch_size=2, generator=[torch.Generator()]), "one generator per image"),
    ("generator_a_seed", lambda p: p(generator=0), "`generator`"),
    ("generator_list_of_seeds", lambda p: p(generator=[0]), "`generator`"),
    ("built_without_scheduler", lambda p: JDCLPipeline(unet=p.unet, scheduler=None), "scheduler"),
    ("built_with_no_seen_class", lambda p: JDCLPipeline(unet=p.unet, scheduler=p.scheduler, seen_classes=[]), "seen"),
    (
        "built_with_a_repeated_class_name",
        lambda p: JDCLPipeline(unet=p.unet, scheduler=p.scheduler, class_names=["a", "a", "b", "c"]),
        "repeats ['a']",
    ),
]
ALL_PIPELINE_CASES = PIPELINE_CASES + MORE_PIPELINE_CASES


@pytest.mark.parametrize(
    "call, named", [case[1:] for case in ALL_PIPELINE_CASES], ids=[c[0] for c in ALL_PIPELINE_CASES]
)
def test_bad_pipeline_input_is_refused_with_the_argument_named(pipe, call, named):
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError) as error:
        call(pipe)
    assert named in str(error.value), str(error.value)


# (kind, the preset's text, what the message must name)
PRESET_CASES = [
    ("repeated_key", "resolution: 8\nnum_tasks: 2\nresolution: 16\n", "duplicate key 'resolution'"),
    ("repeated_nested_key", "unet_config:\n  dropout: 0.0\n  dropout: 0.1\n", "duplicate key 'dropout'"),
    ("output_dir_null", "output_dir: null\n", "--output_dir"),
    ("unet_config_a_list", "unet_config: [16, 32]\n", "--unet_config"),
    ("not_a_mapping", "- resolution\n- 8\n", "mapping"),
    ("hub_private_without_push", "hub_private_repo: true\n", "--push_to_hub"),
]


@pytest.mark.parametrize(("text", "named"), [case[1:] for case in PRESET_CASES], ids=[c[0] for c in PRESET_CASES])
def test_bad_preset_is_refused_with_the_file_or_key_named(tmp_path, text, named):
    preset = tmp_path / "preset.yaml"
    preset.write_text(text)
    with pytest.raises(ValueError) as error:
        JDCLTrainingConfig.from_file(preset)
    assert named in str(error.value), str(error.value)
    if "duplicate" in named:
        assert str(preset) in str(error.value)

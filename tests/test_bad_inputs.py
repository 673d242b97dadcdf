"""Bad input, table-driven: every kind gets a `ValueError` that names the argument, before anything is written."""

import math

import pytest
import torch

from jdcl import JDCLPipeline
from jdcl.config import JDCLTrainingConfig
from jdcl.trainer import train_jdcl

from .utils import TINY_UNET, tiny_pipeline


TINY = {
    "resolution": 8,
    "num_tasks": 2,
    "class_order": [0, 1, 2, 3],
    "unet_config": TINY_UNET,
    "train_batch_size": 8,
    "local_train_steps": 1,
    "global_train_steps": 1,
    "replay_samples_per_class": 2,
    "replay_inference_steps": 1,
    "grid_samples_per_class": 0,
    "logger": "none",
    "show_progress": False,
}

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


@pytest.mark.parametrize(
    ("overrides", "named"), [case[1:] for case in TRAINING_CASES], ids=[c[0] for c in TRAINING_CASES]
)
def test_bad_training_input_is_refused_before_anything_is_written(tmp_path, overrides, named):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("the user's")
    overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(ValueError) as error:
        train_jdcl(JDCLTrainingConfig(**{**TINY, "output_dir": str(output_dir), **overrides}))
    assert named in str(error.value), str(error.value)
    assert sorted(p.name for p in output_dir.iterdir()) == ["keep.txt"]
    assert (output_dir / "keep.txt").read_text() == "the user's"


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


@pytest.mark.parametrize("call, named", [case[1:] for case in PIPELINE_CASES], ids=[c[0] for c in PIPELINE_CASES])
def test_bad_pipeline_input_is_refused_with_the_argument_named(pipe, call, named):
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError) as error:
        call(pipe)
    assert named in str(error.value), str(error.value)

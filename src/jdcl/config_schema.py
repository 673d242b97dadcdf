"""The rules of the configuration's fields: the valid choices and ranges, which fields define a run, and how records
of earlier runs (run folders' identities, benchmark results) read today."""

from collections.abc import Mapping
from typing import Any


# The valid values of every field with a fixed set of them (`--strategy`'s are the registered methods).
CHOICES = {
    "local_init": ("global", "scratch"),
    "replay_sampler": ("label", "guided"),
    "replay_selection": ("first", "confident"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "logger": ("tensorboard", "wandb", "all", "none"),
}

# The valid range of every number of the configuration, inclusive (`None`: unbounded).
INTEGER_RANGES = {
    "resolution": (1, None),
    "num_tasks": (1, None),
    "num_train_timesteps": (1, None),
    "train_batch_size": (1, None),
    "first_task_train_steps": (0, None),
    "local_train_steps": (0, None),
    "global_train_steps": (0, None),
    "classification_warmup_steps": (0, None),
    "replay_samples_per_class": (0, None),
    "replay_inference_steps": (1, None),
    "replay_batch_size": (1, None),
    "eval_batch_size": (1, None),
    "grid_samples_per_class": (0, None),
    "grid_inference_steps": (1, None),
    "quality_samples_per_class": (2, None),
    "quality_referee_steps": (1, None),
    "seed": (0, 2**32 - 1),
    "checkpointing_steps": (1, None),
    "checkpoints_total_limit": (1, None),
    "labeled_per_class": (1, None),
    "unlabeled_batch_ratio": (1, None),
}
# (low, high, whether low itself is allowed); every float must also be finite.
FLOAT_RANGES = {
    "beta_start": (0.0, 1.0, False),
    "beta_end": (0.0, 1.0, False),
    "learning_rate": (0.0, None, False),
    "adam_beta1": (0.0, 1.0, True),
    "adam_beta2": (0.0, 1.0, True),
    "adam_weight_decay": (0.0, None, True),
    "adam_epsilon": (0.0, None, False),
    "max_grad_norm": (0.0, None, True),
    "diffusion_loss_weight": (0.0, None, True),
    "classification_loss_weight": (0.0, None, True),
    "global_diffusion_loss_weight": (0.0, None, True),
    "global_classification_loss_weight": (0.0, None, True),
    "distillation_diffusion_weight": (0.0, None, True),
    "distillation_classification_weight": (0.0, None, True),
    "ema_decay": (0.0, 1.0, True),
    "ema_power": (0.0, None, False),
    "replay_guidance_scale": (0.0, None, True),
    "replay_max_sampling_factor": (1.0, None, True),
    "replay_eta": (0.0, 1.0, True),
    "labeled_fraction": (0.0, 1.0, False),
    "pseudo_label_threshold": (0.0, 1.0, False),
}

# Fields whose change makes an output folder hold "another run": resuming into it would mix two experiments.
RUN_IDENTITY_EXCLUDED = {
    "output_dir",
    "resume_from_checkpoint",
    "push_to_hub",
    "hub_model_id",
    "hub_token",
    "hub_private_repo",
    "logger",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "show_progress",
    "cache_dir",
    # Which images decode does not depend on it: a run with unreadable images runs only with it.
    "skip_bad_images",
    "replay_batch_size",
    "eval_batch_size",
    # How fast a run goes, not what it trains: a killed run may resume with or without them.
    "adam_fused",
    "channels_last",
    "compile",
    # Measuring quality leaves the training run as it is.
    "quality_metrics",
    "quality_samples_per_class",
    "quality_dinov2_model",
    "quality_referee_steps",
}


def normalize_legacy_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    r"""
    Configuration values in today's keys: before methods were strategies, two ablations of "jdcl" were flags
    (`single_stage: true` is now `strategy: single_stage`, `joint_modelling: false` is `strategy: separate`).

    Args:
        values (`Mapping[str, Any]`): Configuration values (a preset, a recorded `run_config.json` identity).
    """
    values = dict(values)
    single_stage = values.pop("single_stage", False)
    joint_modelling = values.pop("joint_modelling", True)
    if single_stage and not joint_modelling:
        raise ValueError("`single_stage` and `joint_modelling: false` cannot be combined; use one `strategy`.")
    if (single_stage or not joint_modelling) and values.get("strategy", "jdcl") != "jdcl":
        raise ValueError(
            f"`single_stage` and `joint_modelling` were ablations of `strategy: jdcl`, not of {values['strategy']!r}."
        )
    if single_stage:
        values["strategy"] = "single_stage"
    elif not joint_modelling:
        values["strategy"] = "separate"
    return values


# Numbers that may also be `None` (unset).
OPTIONAL_NUMBERS = ("first_task_train_steps", "labeled_fraction", "labeled_per_class")
# Fields added after runs were recorded without them; a record that lacks one ran with its default, but for
# `horizontal_flip`: before it was a field, `augment` always flipped (see `add_missing_defaults`). (A method's options
# need no entry: a record that lacks one of its method's options ran with the option's default.)
ADDED_FIELDS = (
    "labeled_fraction",
    "labeled_per_class",
    "unlabeled_batch_ratio",
    "pseudo_label_threshold",
    "replay_scheduler",
    "pretrained_revision",
    "class_names_map",
    "pretrained_unet",
    "pretrained_unet_subfolder",
    "horizontal_flip",
)


def ran_earlier_semi_supervised_stage(recorded: Mapping[str, Any]) -> bool:
    r"""
    Whether a recorded run identity is a few-label run of jdcl's earlier semi-supervised stage (its diffusion loss saw
    the labelled batch too, with other views), which this version cannot continue. `horizontal_flip` came with the
    authors' stage, so a few-label record without it ran the earlier one.

    Args:
        recorded (`Mapping[str, Any]`): A run folder's recorded identity.
    """
    few_labels = recorded.get("labeled_fraction") is not None or recorded.get("labeled_per_class") is not None
    return few_labels and "horizontal_flip" not in recorded


def add_missing_defaults(recorded: Mapping[str, Any]) -> dict[str, Any]:
    r"""
    Recorded configuration values (a run folder's identity, a benchmark row) in today's keys, with the fields added
    since at their defaults, so that a record of a run compares equal to the same run configured today.

    Args:
        recorded (`Mapping[str, Any]`): The recorded values.
    """
    from .config import JDCLTrainingConfig
    from .strategies import STRATEGIES
    from .strategies.base import registered_options

    defaults = JDCLTrainingConfig().to_dict()
    added = {name: defaults[name] for name in ADDED_FIELDS}
    added["horizontal_flip"] = recorded.get("augment", False)
    values = {**added, **normalize_legacy_keys(recorded)}
    strategy = STRATEGIES.get(values.get("strategy", defaults["strategy"]))
    if strategy is None:
        return values
    # Records hold the options of every method of their time: another method's option at its default meant nothing.
    own, known = strategy.all_options(), registered_options()
    values = {k: v for k, v in values.items() if k in own or k not in known or v != known[k].default}
    return {**{name: option.default for name, option in own.items()}, **values}

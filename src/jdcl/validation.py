"""Checks of a run's configuration that span several settings or read presets, each raising a `ValueError` that
names the flag (or the file and key) to change."""

import inspect
from collections.abc import Mapping
from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML safe loader that refuses a mapping with a repeated key (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key!r}: give each key once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    r"""
    Parses a YAML (or JSON) preset, refusing repeated keys.

    Args:
        text (`str`): The preset's text.
    """
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def check_unet_config_types(unet_config: Any) -> None:
    r"""
    Refuses an `--unet_config` that is not a mapping, or a value of the wrong type (a string for a number, a number
    for a list), before it reaches diffusers.

    Args:
        unet_config (`Any`): The `--unet_config` as given (before the defaults are merged in); `None` is the default.
    """
    if unet_config is None:
        return
    if not isinstance(unet_config, Mapping):
        raise ValueError(
            f"`--unet_config` must be a JSON object of UNet settings, e.g. '{{\"block_out_channels\": [32, 64, 64]}}', "
            f"got {type(unet_config).__name__} {unet_config!r}."
        )
    from .models.joint_unet_2d import JointUNet2DModel

    parameters = inspect.signature(JointUNet2DModel.__init__).parameters
    for key, value in unet_config.items():
        default = parameters[key].default if key in parameters else None
        if default is None or default is inspect.Parameter.empty:
            continue
        if not _same_kind(value, default):
            raise ValueError(
                f"`--unet_config` {key}={value!r} is of type {type(value).__name__}, but {key} takes a "
                f"{_kind_name(default)} (its default: {default!r}); pass e.g. {key}={default!r}."
            )


def _kind_name(default: Any) -> str:
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, str):
        return "string"
    if isinstance(default, (int, float)):
        return "number" if isinstance(default, float) else "whole number"
    if isinstance(default, (list, tuple)):
        return f"list of {_kind_name(default[0])}s" if default else "list"
    return type(default).__name__


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)) and all(not default or _same_kind(item, default[0]) for item in value)
    return isinstance(value, type(default))


def check_run_settings(config) -> None:
    r"""
    Refuses settings that are each valid but do not go together, or that a run would only trip on after training
    (steps a sampler cannot take, a rehearsal method with nothing to rehearse, a Hub option without the Hub).

    Args:
        config ([`JDCLTrainingConfig`]): The configuration.
    """
    from .strategies import STRATEGIES

    if not isinstance(config.output_dir, str) or not config.output_dir.strip():
        raise ValueError(
            f"`--output_dir` must name a folder, got {config.output_dir!r}; pass e.g. `--output_dir jdcl-run` (a "
            "preset's `output_dir: null` leaves it unset)."
        )
    if config.hub_private_repo is not None and not config.push_to_hub:
        raise ValueError(
            "`--hub_private_repo` says how to create the Hub repo, but nothing is pushed without `--push_to_hub`; "
            "pass `--push_to_hub` too, or drop `--hub_private_repo`."
        )
    steps = {"replay_inference_steps": config.replay_inference_steps}
    if config.grid_samples_per_class > 0:
        steps["grid_inference_steps"] = config.grid_inference_steps
    for name, value in steps.items():
        if value > config.num_train_timesteps:
            raise ValueError(
                f"`--{name} {value}` is more steps than the noise schedule has (`--num_train_timesteps "
                f"{config.num_train_timesteps}`); pass at most {config.num_train_timesteps}."
            )
    strategy = STRATEGIES[config.strategy]
    if strategy.rehearses and config.replay_samples_per_class == 0:
        raise ValueError(
            f"`--replay_samples_per_class 0` leaves `--strategy {config.strategy}` nothing to rehearse old classes "
            "with; pass a quota of at least 1 (the presets: 100 to 400), or choose a method that does not rehearse."
        )


def check_unet_config(unet_config: Mapping[str, Any], resolution: int) -> None:
    r"""
    Refuses a UNet description that diffusers would fail on deep inside, or that the resolution cannot go through.

    Args:
        unet_config (`Mapping[str, Any]`): The merged `--unet_config`.
        resolution (`int`): The image side (`--resolution`).
    """
    from .config import DEFAULT_UNET_CONFIG

    default_levels = DEFAULT_UNET_CONFIG["down_block_types"]
    allowed = _allowed_unet_config_keys()
    unknown = sorted(set(unet_config) - allowed)
    if unknown:
        raise ValueError(f"Unknown `--unet_config` keys {unknown}; allowed: {sorted(allowed)}.")
    channels = list(unet_config["block_out_channels"])
    down, up = list(unet_config["down_block_types"]), list(unet_config["up_block_types"])
    if not (len(channels) == len(down) == len(up)) or not channels:
        raise ValueError(
            f"`--unet_config` describes {len(channels)} levels in block_out_channels, {len(down)} down_block_types and "
            f"{len(up)} up_block_types; give one entry per level in each (the default has {len(default_levels)})."
        )
    for key in ("norm_num_groups", "attn_norm_num_groups"):
        groups = unet_config.get(key)
        if groups is not None and any(c % groups for c in channels):
            raise ValueError(
                f"`--unet_config` {key}={groups} does not divide every block_out_channels {channels}; choose a "
                "number of groups that divides each."
            )
    head_dim = unet_config.get("attention_head_dim")
    attention_channels = [c for c, block in zip(channels, down) if "Attn" in block] + [channels[-1]]
    if head_dim is not None and any(c % head_dim for c in attention_channels):
        raise ValueError(
            f"`--unet_config` attention_head_dim={head_dim} does not divide the channels of every attention block "
            f"{attention_channels}; choose one that does."
        )
    downsamplings = len(channels) - 1
    if resolution % 2**downsamplings:
        raise ValueError(
            f"`--resolution {resolution}` cannot be halved {downsamplings} times by the {len(channels)}-level UNet; "
            f"pass a multiple of {2**downsamplings} (or fewer levels in `--unet_config`)."
        )


def _allowed_unet_config_keys() -> set[str]:
    from .models.joint_unet_2d import JointUNet2DModel

    parameters = set(inspect.signature(JointUNet2DModel.__init__).parameters) - {"self"}
    return parameters - {"sample_size", "in_channels", "out_channels", "num_classes"}


def check_starting_point(config) -> None:
    r"""
    Refuses pretrained-model settings that contradict each other or lack what they qualify.

    Args:
        config ([`JDCLTrainingConfig`]): The configuration.
    """
    if config.pretrained_model_name_or_path is not None and config.pretrained_unet is not None:
        raise ValueError(
            "Pass either `--pretrained_model_name_or_path` (a JDCL pipeline, continued or started from) or "
            "`--pretrained_unet` (a diffusers UNet given a new classifier head), not both."
        )
    qualifiers = {
        "pretrained_revision": "pretrained_model_name_or_path",
        "class_names_map": "pretrained_model_name_or_path",
        "pretrained_unet_subfolder": "pretrained_unet",
    }
    for name, needs in qualifiers.items():
        if getattr(config, name) is not None and getattr(config, needs) is None:
            raise ValueError(f"`--{name}` qualifies `--{needs}`, which is not given; pass it or drop `--{name}`.")
    names_map = config.class_names_map
    if names_map is not None and (
        not isinstance(names_map, dict) or not all(isinstance(v, str) for v in [*names_map, *names_map.values()])
    ):
        raise ValueError(
            f'`--class_names_map` must map class names to class names, e.g. \'{{"airplane": "plane"}}\', got {names_map!r}.'
        )

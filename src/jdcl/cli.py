"""The `jdcl-train` command: class-incremental training with JDCL from flags and presets.

    jdcl-train                                          # the bundled digits demo, on this machine's first device
    jdcl-train --config cifar10 --push_to_hub           # a shipped preset (or the path of a YAML/JSON file)
    accelerate launch -m jdcl.cli --config cifar10      # the same, on the processes `accelerate config` set up

Flags win over `--config`, which wins over the defaults. Log in to the Hub with `huggingface-cli login` or HF_TOKEN:
a token is never taken on the command line.
"""

import argparse
import dataclasses
import inspect
import json
import logging
import re
import sys
import types
import typing

import torch

from .config import PRESETS_DIR, JDCLTrainingConfig
from .strategies import STRATEGIES
from .strategies.base import registered_options


# The sections of `--help`, each with its fields; a method's options join "method".
FLAG_GROUPS = {
    "data": (
        "dataset_name", "dataset_config_name", "train_data_dir", "image_column", "label_column", "test_split",
        "cache_dir", "skip_bad_images", "resolution", "num_tasks", "class_order",
    ),
    "model": (
        "unet_config", "pretrained_model_name_or_path", "pretrained_revision", "class_names_map", "pretrained_unet",
        "pretrained_unet_subfolder", "num_train_timesteps", "beta_start", "beta_end",
    ),
    "training": (
        "train_batch_size", "learning_rate", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
        "max_grad_norm", "first_task_train_steps", "local_train_steps", "global_train_steps", "diffusion_loss_weight",
        "classification_loss_weight", "global_diffusion_loss_weight", "global_classification_loss_weight",
        "distillation_diffusion_weight", "distillation_classification_weight", "classification_warmup_steps",
        "use_ema", "ema_decay", "ema_warmup", "ema_power", "augment", "horizontal_flip", "seed",
    ),
    "method": ("strategy", "local_init"),
    "rehearsal": (
        "replay_samples_per_class", "replay_inference_steps", "replay_sampler", "replay_guidance_scale",
        "replay_max_sampling_factor", "replay_selection", "replay_eta", "replay_scheduler",
    ),
    "semi-supervised": ("labeled_fraction", "labeled_per_class", "unlabeled_batch_ratio", "pseudo_label_threshold"),
    "quality": ("quality_metrics", "quality_samples_per_class", "quality_dinov2_model", "quality_referee_steps"),
    "speed": (
        "mixed_precision", "gradient_checkpointing", "adam_fused", "channels_last", "compile", "replay_batch_size",
        "eval_batch_size",
    ),
    "outputs": (
        "output_dir", "grid_samples_per_class", "grid_inference_steps", "checkpointing_steps",
        "checkpoints_total_limit", "resume_from_checkpoint", "logger", "show_progress",
    ),
    "Hub": ("push_to_hub", "hub_model_id", "hub_token", "hub_private_repo"),
}  # fmt: skip
# List fields given as comma-separated words.
COMMA_SEPARATED_FLAGS = ("class_order", "quality_metrics")
# Other names of flags: diffusers' training scripts call the tracker `--report_to`.
FLAG_ALIASES = {"logger": ("--report_to",)}
TOKEN_REFUSAL = (
    "--hub_token is refused: a token on the command line ends up in launcher output and shell history. Log in once "
    "with `huggingface-cli login`, or set HF_TOKEN in the environment; --push_to_hub then uses it. If this ran under "
    "`accelerate launch` with one process, the launcher prints the failed command line, token included, below: treat "
    "the token as exposed and replace it at https://huggingface.co/settings/tokens (`jdcl-train`, or `accelerate "
    "launch --quiet`, refuses it without printing it)."
)


def field_descriptions(config_class: type = JDCLTrainingConfig) -> dict[str, str]:
    r"""
    Each field's description, read from the `Args:` section of the configuration's docstring: the one source of
    `--help`.

    Args:
        config_class (`type`, *optional*, defaults to [`JDCLTrainingConfig`]): The documented dataclass.
    """
    arguments = inspect.getdoc(config_class).split("Args:\n", 1)[1]
    descriptions = {}
    # One entry per line indented by exactly one level; continuation lines are indented further.
    for entry in re.split(r"\n(?=    \w)", "\n" + arguments):
        match = re.match(r"\s*(\w+) \(.*?\):\s*(.*)", entry, re.DOTALL)
        if match is not None:
            descriptions[match.group(1)] = " ".join(match.group(2).split())
    return descriptions


def refuse_token_argument(argv: list[str]) -> None:
    r"""
    Exits before anything can echo the command line when it holds `--hub_token`.

    Args:
        argv (`list[str]`): The command-line arguments.
    """
    if any(argument == "--hub_token" or argument.startswith("--hub_token=") for argument in argv):
        raise SystemExit(TOKEN_REFUSAL)


def _flag_type(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(arguments[0])
    if annotation in (int, float, str, bool):
        return annotation
    if annotation in (list, dict) or origin in (list, dict):
        return json.loads
    return str


def _comma_separated(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_flag(group, name: str, flag_type, default, description: str) -> None:
    shown = json.dumps(default) if isinstance(default, (dict, list)) else default
    help_text = f"{description} (default: {shown})".replace("%", "%%")
    flags = [f"--{name}", *FLAG_ALIASES.get(name, ())]
    if flag_type is bool:
        # `--x` and `--no-x`: a preset may switch on what a flag switches off.
        group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        return
    if name in COMMA_SEPARATED_FLAGS:
        flag_type, help_text = _comma_separated, f"Comma-separated. {help_text}"
    elif flag_type is json.loads:
        help_text = f"JSON. {help_text}"
    group.add_argument(*flags, dest=name, type=flag_type, default=None, metavar=name.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `jdcl-train`: one flag per configuration field and per method option, grouped, plus `--config`."""
    parser = argparse.ArgumentParser(
        prog="jdcl-train",
        usage="jdcl-train [--config PRESET] [--FLAG VALUE ...]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # A misspelt flag must fail, not silently set the field it abbreviates.
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config",
        type=str,
        default=None,
        help="A YAML/JSON preset: a path, or the name of a shipped preset: "
        f"{', '.join(sorted(path.stem for path in PRESETS_DIR.glob('*.yaml')))}.",
    )
    descriptions = field_descriptions()
    descriptions["strategy"] += f" Registered: {', '.join(sorted(STRATEGIES))}."
    descriptions["hub_token"] = TOKEN_REFUSAL.split(". If this ran")[0] + "."
    hints = typing.get_type_hints(JDCLTrainingConfig)
    fields = {config_field.name: config_field for config_field in dataclasses.fields(JDCLTrainingConfig)}
    defaults = JDCLTrainingConfig().to_dict(include_secrets=True)
    grouped = {name for names in FLAG_GROUPS.values() for name in names}
    sections = {**FLAG_GROUPS, "other": tuple(name for name in fields if name not in grouped)}
    for section, names in sections.items():
        group = parser.add_argument_group(section)
        for name in names:
            if name in fields:
                _add_flag(group, name, _flag_type(hints[name]), defaults[name], descriptions.get(name, ""))
        if section == "method":
            for option in registered_options().values():
                owners = sorted(
                    strategy for strategy, method in STRATEGIES.items() if option.name in method.all_options()
                )
                help_text = f"{option.help} Of --strategy {', '.join(owners)}."
                _add_flag(group, option.name, option.type, option.default, help_text)
    return parser


def parse_config(argv: list[str] | None = None) -> JDCLTrainingConfig:
    r"""
    The configuration the command line describes.

    Args:
        argv (`list[str]`, *optional*): The arguments; `sys.argv[1:]` when `None`.
    """
    argv = sys.argv[1:] if argv is None else argv
    refuse_token_argument(argv)
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config")
    overrides = {name: value for name, value in args.items() if value is not None}
    if config_path is not None:
        return JDCLTrainingConfig.from_file(config_path, **overrides)
    return JDCLTrainingConfig.from_dict(overrides, source="the command line")


def main(argv: list[str] | None = None) -> None:
    r"""
    Trains the run the command line describes and prints its final accuracy (the `jdcl-train` command).

    Args:
        argv (`list[str]`, *optional*): The arguments; `sys.argv[1:]` when `None`.
    """
    argv = sys.argv[1:] if argv is None else argv
    # First of all: nothing may print the command line while it holds a token.
    refuse_token_argument(argv)
    from .trainer import train_jdcl

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy_logger in ("httpx", "huggingface_hub", "datasets"):
        logging.getLogger(noisy_logger).setLevel(logging.WARNING)
    config = parse_config(argv)
    metrics = train_jdcl(config)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print(
        f"Final average accuracy {metrics['average_accuracy']:.4f}, forgetting {metrics['forgetting']:.4f}; "
        f"results in {config.output_dir}"
    )


if __name__ == "__main__":
    main()

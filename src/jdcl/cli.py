"""The `jdcl-train` command: class-incremental training with JDCL from flags and presets.

    jdcl-train                                                  # the bundled digits demo
    jdcl-train --config cifar10 --push_to_hub                   # a shipped preset (or a path to a YAML/JSON file)
    accelerate launch -m jdcl.cli --config cifar10              # the same, on the processes `accelerate config` set

Every flag is a field of `jdcl.config.JDCLTrainingConfig` (or an option of the chosen method); flags win over
`--config`, which wins over the defaults.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing


# Before torch loads OpenMP (when this module is the first to import it): its default busy-waiting threads slow a step
# up to 50x whenever another process shares the cores (measured on 2 cores beside one busy process: 6.1 s against
# 0.13 s per demo training step).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from .config import JDCLTrainingConfig  # noqa: E402
from .strategies import STRATEGIES  # noqa: E402
from .strategies.base import registered_options  # noqa: E402


# Flags that are booleans in the config but read as switches (`--use_ema`, `--no_distillation`, ...).
NEGATABLE_FLAGS = {"use_ema", "augment", "ema_warmup", "show_progress"}
# List fields given as comma-separated words, with their help.
COMMA_SEPARATED_FLAGS = {
    "class_order": "Comma-separated class indices or names, e.g. 0,1,2,3 or cat,dog.",
    "quality_metrics": "Comma-separated feature extractors of the quality metrics: referee (offline), dinov2, inception.",
}
TOKEN_REFUSAL = (
    "--hub_token is refused: a token on the command line ends up in launcher output and shell history. Log in "
    "once with `huggingface-cli login`, or set HF_TOKEN in the environment; --push_to_hub then uses it."
)


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


def build_parser() -> argparse.ArgumentParser:
    """The parser of `jdcl-train` (and `examples/train_jdcl.py`): one flag per configuration field, plus `--config`."""
    parser = argparse.ArgumentParser(
        prog="jdcl-train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # A misspelt flag must fail, not silently set the field it abbreviates.
        allow_abbrev=False,
    )
    parser.add_argument("--config", type=str, default=None, help="A YAML/JSON preset (see examples/configs/).")
    hints = typing.get_type_hints(JDCLTrainingConfig)
    for field in dataclasses.fields(JDCLTrainingConfig):
        flag_type = _flag_type(hints[field.name])
        if flag_type is bool:
            if field.name in NEGATABLE_FLAGS:
                parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=None)
            else:
                parser.add_argument(f"--{field.name}", action="store_true", default=None)
        elif field.name in COMMA_SEPARATED_FLAGS:
            parser.add_argument(
                f"--{field.name}",
                type=lambda text: [item.strip() for item in text.split(",") if item.strip()],
                default=None,
                help=COMMA_SEPARATED_FLAGS[field.name],
            )
        elif field.name == "hub_token":
            parser.add_argument(
                "--hub_token", type=str, default=None, help="Refused: log in with `huggingface-cli login` or HF_TOKEN."
            )
        elif field.name == "strategy":
            parser.add_argument(
                "--strategy", type=str, default=None, help=f"The method: one of {', '.join(sorted(STRATEGIES))}."
            )
        else:
            help_text = (
                "A JSON object of the keys to change, e.g. '{\"block_out_channels\": [64, 128, 128]}'."
                if flag_type is json.loads
                else None
            )
            parser.add_argument(f"--{field.name}", type=flag_type, default=None, help=help_text)
    for option in registered_options().values():
        if option.type is bool:
            parser.add_argument(f"--{option.name}", action="store_true", default=None, help=option.help)
        else:
            parser.add_argument(f"--{option.name}", type=option.type, default=None, help=option.help)
    return parser


def parse_config(argv: list[str] | None = None) -> JDCLTrainingConfig:
    r"""
    The configuration the command line describes.

    Args:
        argv (`list[str]`, *optional*): The arguments; `sys.argv[1:]` when `None`.
    """
    args = vars(build_parser().parse_args(argv))
    if args["hub_token"] is not None:
        raise SystemExit(TOKEN_REFUSAL)
    config_path = args.pop("config")
    overrides = {name: value for name, value in args.items() if value is not None}
    if config_path is not None:
        return JDCLTrainingConfig.from_file(config_path, **overrides)
    return JDCLTrainingConfig.from_dict(overrides, source="the command line")


def main(argv: list[str] | None = None) -> None:
    r"""
    Trains the run the command line describes and prints its final accuracy.

    Args:
        argv (`list[str]`, *optional*): The arguments; `sys.argv[1:]` when `None`.
    """
    from .trainer import train_jdcl

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy_logger in ("httpx", "huggingface_hub", "datasets"):
        logging.getLogger(noisy_logger).setLevel(logging.WARNING)
    config = parse_config(sys.argv[1:] if argv is None else argv)
    metrics = train_jdcl(config)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print(
        f"Final average accuracy {metrics['average_accuracy']:.4f}, forgetting {metrics['forgetting']:.4f}; "
        f"results in {config.output_dir}"
    )


if __name__ == "__main__":
    main()

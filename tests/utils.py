"""Tiny configurations and helpers shared by the tests."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from diffusers import DDIMScheduler

from jdcl import JDCLPipeline, JointUNet2DModel


TINY_UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 16,
    "norm_num_groups": 8,
    "num_classes": 4,
    "classifier_hidden_dim": 32,
}


def tiny_unet(seed: int = 0, **overrides) -> JointUNet2DModel:
    torch.manual_seed(seed)
    return JointUNet2DModel(**{**TINY_UNET_CONFIG, **overrides}).eval()


def tiny_pipeline(seed: int = 0, **overrides) -> JDCLPipeline:
    pipe = JDCLPipeline(unet=tiny_unet(seed, **overrides), scheduler=DDIMScheduler(beta_start=1e-3, beta_end=0.02))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The trainer tests' UNet (`unet_config` of `JDCLTrainingConfig`): two resolutions, a few thousand parameters.
TINY_UNET = {
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 16,
    "norm_num_groups": 8,
    "classifier_hidden_dim": 32,
}


BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """`benchmarks/NAME.py` as a module, as `python benchmarks/NAME.py` would run it (benchmarks/ is not a package)."""
    # The scripts import their shared helpers (benchmarks/machine.py) by name, as they do when run as scripts.
    if str(BENCHMARKS_DIR) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS_DIR))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

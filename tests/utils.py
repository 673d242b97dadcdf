"""Tiny configurations and helpers shared by the tests."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from jdcl import JDCLPipeline, JointUNet2DModel
from jdcl.config import JDCLTrainingConfig


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

# The trainer tests' run: two tasks of two digits at 8x8, a few steps per stage (seconds per run).
TINY_RUN = {
    "resolution": 8,
    "num_tasks": 2,
    "class_order": [0, 1, 2, 3],
    "unet_config": TINY_UNET,
    "train_batch_size": 16,
    "local_train_steps": 3,
    "global_train_steps": 3,
    "replay_samples_per_class": 4,
    "replay_inference_steps": 2,
    "grid_inference_steps": 2,
    "grid_samples_per_class": 2,
    "logger": "none",
    "show_progress": False,
}


def tiny_config(output_dir, **overrides) -> JDCLTrainingConfig:
    """The tiny run (`TINY_RUN`) writing into `output_dir`, with `overrides` (configuration fields) on top."""
    return JDCLTrainingConfig(**{**TINY_RUN, "output_dir": str(output_dir), **overrides})


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


class SimulatedKill(Exception):
    """Raised inside a run to stand for a kill at a chosen moment."""


def run_killed_when_logged(config, tag: str, step: int, **kwargs) -> None:
    r"""
    Runs `train_jdcl(config, **kwargs)` and kills it (raises [`SimulatedKill`]) when the stage logs `tag` at its step
    `step` (counted from the stage's start): logging comes after the step's update and before its checkpoint, so the run
    dies with what it had saved until then.
    """
    import pytest
    from accelerate import Accelerator

    from jdcl.stage import StageRunner
    from jdcl.trainer import train_jdcl

    log, run = Accelerator.log, StageRunner.run
    # Stages log at the run's global step; the stage's own step is counted from where the stage began.
    stage_start = {"step": 0}

    def run_noting_its_start(self, *args, **kwargs):
        stage_start["step"] = self.global_step
        return run(self, *args, **kwargs)

    def log_then_die(self, values, step=None, **kwargs):
        if tag in values and step - stage_start["step"] == kill_step:
            raise SimulatedKill
        return log(self, values, step=step, **kwargs)

    kill_step = step
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Accelerator, "log", log_then_die)
        patch.setattr(StageRunner, "run", run_noting_its_start)
        with pytest.raises(SimulatedKill):
            train_jdcl(config, **kwargs)


def task_unet_weights(run_dir, task: int) -> dict:
    """The UNet weights a run saved after task `task` (from 1)."""
    return load_file(Path(run_dir) / f"task-{task}" / "unet" / "diffusion_pytorch_model.safetensors")

# ruff: noqa: E402
"""How fast are JDCL's own steps? The local step, the global step (a student and two teachers) and rehearsal sampling
of a preset, through the library's own `StageRunner` and `JDCLPipeline`, on any device.

For each it reports images/s, the FLOPs of one step (matmuls and convolutions, forward and backward, counted by torch),
the FLOP/s achieved and, on a GPU of `PEAK_BF16_TFLOPS`, the fraction of the device's dense bf16 peak; the peak memory;
and a breakdown of one training step into the ranges the stage runner names (`jdcl.batch`, `jdcl.views`,
`jdcl.forward` with `jdcl.teachers` inside it, `jdcl.backward`, `jdcl.optimizer`, `jdcl.ema`), from torch's
profiler. A step's time is `(time of warmup + N steps - time of warmup steps) / N`, so the stage's set-up (accelerate,
EMA copies) is left out.

    python benchmarks/stage_speed.py                                   # the demo's model and batch, on the CPU
    python benchmarks/stage_speed.py --preset examples/configs/cifar10.yaml --train_batch_size 8 --steps 2
    python benchmarks/stage_speed.py --preset examples/configs/cifar10.yaml --device cuda --mixed_precision bf16
"""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before torch loads OpenMP: busy-waiting threads slow shared-core CPU steps up to 50x (see src/jdcl/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import datetime
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator


sys.path.insert(0, str(Path(__file__).resolve().parent))
from jdcl import JDCLPipeline, JointUNet2DModel
from jdcl.augment import TwoViewAugmentation
from jdcl.compilation import dynamo_plugin, maybe_compile, memory_format
from jdcl.config import JDCLTrainingConfig
from jdcl.objectives import DistillationObjective, JointObjective
from jdcl.rehearsal import RehearsalSet
from jdcl.schedulers import sampling_scheduler_from_config
from jdcl.stage import Stage, StageRunner
from jdcl.stage_data import StageData
from jdcl.tensor_data import TensorData
from machine import machine_description
from speed import MIXED_PRECISION_DTYPES, count_flops, synchronize


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets, by a substring of the device name.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}
STEP_RANGES = (
    "jdcl.batch",
    "jdcl.views",
    "jdcl.forward",
    "jdcl.teachers",
    "jdcl.backward",
    "jdcl.optimizer",
    "jdcl.ema",
)


def schedule_hours(config: JDCLTrainingConfig, num_classes: int, local: dict, global_: dict, sampling: dict) -> dict:
    r"""
    Device-hours of the preset's whole schedule at the measured speeds: the first task and every later task's local
    and global stages, and every task's rehearsal (each class seen so far, `replay_samples_per_class` kept, from
    `replay_inference_steps` steps; between one and `replay_max_sampling_factor` draws per kept sample).

    Args:
        config ([`JDCLTrainingConfig`]): The preset.
        num_classes (`int`): Classes of its data set.
        local (`dict`), global_ (`dict`): The measured steps (`seconds_per_step`).
        sampling (`dict`): The measured sampling (`images_per_second` at `num_inference_steps`).
    """
    later_tasks = config.num_tasks - 1
    training = config.total_first_task_steps * local["seconds_per_step"] + later_tasks * (
        config.local_train_steps * local["seconds_per_step"] + config.global_train_steps * global_["seconds_per_step"]
    )
    classes_per_task = num_classes / config.num_tasks
    kept = sum(config.replay_samples_per_class * classes_per_task * (task + 1) for task in range(1, config.num_tasks))
    seconds_per_image = config.replay_inference_steps / (
        sampling["images_per_second"] * sampling["num_inference_steps"]
    )
    rehearsal = kept * seconds_per_image
    return {
        "training_hours": training / 3600,
        "rehearsal_hours": [rehearsal / 3600, rehearsal * config.replay_max_sampling_factor / 3600],
        "total_hours": [
            (training + rehearsal) / 3600,
            (training + rehearsal * config.replay_max_sampling_factor) / 3600,
        ],
    }


def peak_tflops(device_name: str | None) -> float | None:
    """The dense bf16 peak of a GPU by its name, where `PEAK_BF16_TFLOPS` knows it; `None` for a CPU (no name)."""
    if device_name is None:
        return None
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in device_name), None)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """The device's peak allocated memory since the last reset; on a CPU the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_config(args) -> JDCLTrainingConfig:
    overrides = {
        "output_dir": "unused",
        "logger": "none",
        "show_progress": False,
        "mixed_precision": args.mixed_precision,
        "adam_fused": args.adam_fused,
        "channels_last": args.channels_last,
        "compile": args.compile,
    }
    if args.train_batch_size is not None:
        overrides["train_batch_size"] = args.train_batch_size
    if args.preset is None:
        return JDCLTrainingConfig(**overrides)
    return JDCLTrainingConfig.from_file(args.preset, **overrides)


def random_images(count: int, channels: int, resolution: int, num_classes: int, seed: int) -> TensorData:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, channels, resolution, resolution), dtype=torch.uint8, generator=generator)
    return TensorData(images, torch.arange(count) % num_classes)


class StepTimer:
    r"""
    Runs stages of the library's `StageRunner` and times their steps.

    Args:
        config ([`JDCLTrainingConfig`]): The preset (batch size, augmentation, EMA, precision).
        accelerator (`Accelerator`): Where the stages run.
        channels (`int`): Image channels.
    """

    def __init__(self, config: JDCLTrainingConfig, accelerator: Accelerator, channels: int):
        self.config, self.accelerator = config, accelerator
        self.runner = StageRunner(
            accelerator,
            config,
            TwoViewAugmentation(config.resolution, channels, enabled=config.augment),
            show_progress=False,
        )

    def run(self, stage: Stage, model: JointUNet2DModel, data: StageData, objective, steps: int) -> float:
        """Seconds of a stage of `steps` steps (the device's queue included)."""
        synchronize()
        start = time.perf_counter()
        self.runner.run(stage, 0, copy.deepcopy(model), data, steps, objective)
        synchronize()
        return time.perf_counter() - start

    def measure(self, stage: Stage, model, data, objective, warmup: int, steps: int, images_per_step: int) -> dict:
        r"""
        Seconds per step, images/s, FLOPs and FLOP/s of one step, peak memory and the breakdown of one step.

        Args:
            stage ([`Stage`]): The stage (its name goes into the ranges' seeds).
            model ([`JointUNet2DModel`]): The model to train (a copy is trained each time).
            data ([`StageData`]): What batches are drawn from.
            objective: The stage's loss.
            warmup (`int`), steps (`int`): Untimed steps, then timed ones.
            images_per_step (`int`): Images one step trains on.
        """
        device = self.accelerator.device
        reset_peak_memory(device)
        warm = self.run(stage, model, data, objective, warmup)
        total = self.run(stage, model, data, objective, warmup + steps)
        seconds_per_step = (total - warm) / steps
        if seconds_per_step <= 0:  # a few steps of a small model, lost in the set-up's noise: the whole stage's mean
            seconds_per_step = total / (warmup + steps)
        flops = count_flops(lambda: self.run(stage, model, data, objective, 1))
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        # Two steps, averaged: the first step of a stage pays for allocations the others reuse.
        with torch.profiler.profile(activities=activities) as profile:
            self.run(stage, model, data, objective, 2)
        breakdown = {}
        for event in profile.key_averages():
            if event.key in STEP_RANGES:
                breakdown[event.key] = {
                    "cpu_ms": event.cpu_time_total / event.count / 1e3,
                    "device_ms": event.device_time_total / event.count / 1e3 if device.type == "cuda" else None,
                }
        return {
            "seconds_per_step": seconds_per_step,
            "images_per_second": images_per_step / seconds_per_step,
            "gflops_per_step": flops / 1e9,
            "tflops_per_second": flops / seconds_per_step / 1e12,
            "peak_memory_gib": peak_memory_gib(device),
            "breakdown_of_one_step": breakdown,
        }


def measure_sampling(
    config: JDCLTrainingConfig, model: JointUNet2DModel, batch_size: int, steps: int, accelerator: Accelerator
) -> dict:
    r"""
    Unguided rehearsal sampling with the preset's scheduler: images/s, FLOPs per image and peak memory.

    Args:
        config ([`JDCLTrainingConfig`]): The preset (its `replay_scheduler`, `channels_last`).
        model ([`JointUNet2DModel`]): The generating model.
        batch_size (`int`): Images per sampling call.
        steps (`int`): Denoising steps.
        accelerator (`Accelerator`): Where to sample, and whether to compile the UNet (as rehearsal does).
    """
    device = accelerator.device
    model = copy.deepcopy(model).to(device, memory_format=memory_format(config.channels_last)).eval()
    pipeline = JDCLPipeline(unet=model, scheduler=sampling_scheduler_from_config(config))
    pipeline.unet = maybe_compile(model, accelerator)
    dtype = MIXED_PRECISION_DTYPES[config.mixed_precision]
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def sample():
        with autocast:
            pipeline.sample_images(batch_size, num_inference_steps=steps, show_progress=False)

    sample()  # warm-up (and compilation)
    reset_peak_memory(device)
    synchronize()
    start = time.perf_counter()
    sample()
    synchronize()
    seconds = time.perf_counter() - start
    flops = count_flops(sample)
    return {
        "batch_size": batch_size,
        "num_inference_steps": steps,
        "scheduler": config.replay_scheduler,
        "images_per_second": batch_size / seconds,
        "gflops_per_image": flops / batch_size / 1e9,
        "tflops_per_second": flops / seconds / 1e12,
        "peak_memory_gib": peak_memory_gib(device),
    }


def measure_augmentation(config: JDCLTrainingConfig, channels: int, batch_size: int, device, repeats: int = 5) -> dict:
    r"""
    The paper's two augmented views (kornia: flips, crops, RandAugment, Cutout) of a batch of uint8 images on the
    device, as a stage makes them: milliseconds per batch (median of `repeats`) and images/s.

    Args:
        config ([`JDCLTrainingConfig`]): The preset (its resolution; whether its runs augment).
        channels (`int`): Image channels.
        batch_size (`int`): Images per batch.
        device (`torch.device`): Where to augment.
        repeats (`int`, *optional*, defaults to 5): Timed batches after one untimed.
    """
    augmentation = TwoViewAugmentation(config.resolution, channels).to(device)
    images = random_images(batch_size, channels, config.resolution, 1, seed=2).to_float().to(device)
    augmentation(images)  # warm-up
    seconds = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        augmentation(images)
        synchronize()
        seconds.append(time.perf_counter() - start)
    milliseconds = sorted(seconds)[len(seconds) // 2] * 1e3
    return {
        "batch_size": batch_size,
        "ms_per_batch": milliseconds,
        "images_per_second": batch_size / milliseconds * 1e3,
        "preset_augments": config.augment,
    }


def report_header(benchmark: str, preset: Path | None, device: torch.device) -> dict[str, Any]:
    """What every report of this script starts with: what ran, when, where, on which preset."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_description(), "device": str(device), "load_average": os.getloadavg()},
        "preset": str(preset or "the demo (JDCLTrainingConfig defaults)"),
    }


def write_report(report: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset", type=Path, default=None, help="A YAML preset (examples/configs/); the demo if none."
    )
    parser.add_argument("--num_classes", type=int, default=10, help="Classes of the preset's data set.")
    parser.add_argument(
        "--num_channels",
        type=int,
        default=None,
        help="Image channels of its data set (default: 1 for the demo, else 3).",
    )
    parser.add_argument("--train_batch_size", type=int, default=None, help="Overrides the preset's batch.")
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--device", default="cpu", help="`cpu` or `cuda`.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before the timed ones.")
    parser.add_argument("--steps", type=int, default=5, help="Timed steps of each stage.")
    parser.add_argument("--sampling_batch_size", type=int, default=None, help="Default: the preset's replay batch.")
    parser.add_argument("--sampling_steps", type=int, default=10, help="Denoising steps of the timed sampling call.")
    parser.add_argument("--adam_fused", action="store_true", help="AdamW as fused kernels (the run's flag).")
    parser.add_argument("--channels_last", action="store_true", help="Channels-last models and batches.")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile (inductor) the steps, teachers and sampling UNet."
    )
    parser.add_argument(
        "--augmentation_only", action="store_true", help="Time the two augmented views of a batch, nothing else."
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--output", type=Path, default=None, help="Also write the figures here (JSON).")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; use --device cpu.")
    config = build_config(args)
    channels = args.num_channels or (1 if args.preset is None else 3)
    augmentation = measure_augmentation(config, channels, config.train_batch_size, device)
    print(
        f"jdcl stage speed: {args.preset or 'the demo'}: the two augmented views of a batch of "
        f"{augmentation['batch_size']} on {device}: {augmentation['ms_per_batch']:.1f} ms, "
        f"{augmentation['images_per_second']:.0f} img/s"
    )
    if args.augmentation_only:
        report = {
            **report_header("jdcl stage speed, augmentation only", args.preset, device),
            "augmentation": augmentation,
        }
        write_report(report, args.output)
        return report
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        cpu=device.type == "cpu",
        dynamo_plugin=dynamo_plugin(config.compile),
    )
    torch.manual_seed(0)
    model = JointUNet2DModel(
        **config.unet_config,
        sample_size=config.resolution,
        in_channels=channels,
        out_channels=channels,
        num_classes=args.num_classes,
    )
    timer = StepTimer(config, accelerator, channels)
    batch = config.train_batch_size
    local_data = StageData(real=random_images(4 * batch, channels, config.resolution, args.num_classes, seed=0))
    local = timer.measure(
        Stage("local", 1),
        model,
        local_data,
        JointObjective(diffusion=config.diffusion_loss_weight, classification=config.classification_loss_weight),
        args.warmup,
        args.steps,
        batch,
    )
    generated = random_images(4 * batch, channels, config.resolution, args.num_classes, seed=1)
    rehearsal = RehearsalSet(
        images=generated.to_float(),
        labels=generated.labels,
        is_old=torch.arange(4 * batch) % 2 == 0,
        num_generated=4 * batch,
        num_filled=0,
    )
    # The teachers: the same architecture, as in a run (the previous global model and the local model).
    objective = DistillationObjective.from_config(
        config, old_teacher=copy.deepcopy(model), new_teacher=copy.deepcopy(model)
    )
    global_ = timer.measure(
        Stage("global", 2), model, StageData(rehearsal=rehearsal), objective, args.warmup, args.steps, batch
    )
    sampling = measure_sampling(
        config,
        model,
        args.sampling_batch_size or min(config.replay_batch_size, 4 * batch),
        args.sampling_steps,
        accelerator,
    )
    peak = peak_tflops(torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    for figures in (local, global_, sampling):
        figures["fraction_of_peak"] = figures["tflops_per_second"] / peak if peak else None
    report = {
        **report_header("jdcl stage speed", args.preset, device),
        "train_batch_size": batch,
        "mixed_precision": config.mixed_precision,
        "speed_settings": {name: getattr(config, name) for name in ("adam_fused", "channels_last", "compile")},
        "peak_bf16_tflops": peak,
        "local_step": local,
        "global_step": global_,
        "global_over_local_step_time": global_["seconds_per_step"] / local["seconds_per_step"],
        "rehearsal_sampling": sampling,
        "augmentation": {
            **augmentation,
            "share_of_local_step": augmentation["ms_per_batch"] / 1e3 / local["seconds_per_step"]
            if config.augment
            else None,
        },
        "schedule": schedule_hours(config, args.num_classes, local, global_, sampling),
    }
    settings = ", ".join(name for name, value in report["speed_settings"].items() if value) or "plain"
    print(
        f"jdcl stage speed: {report['preset']}, batch {batch}, {device}, mixed precision {config.mixed_precision}, "
        f"{settings}"
    )
    for name in ("local_step", "global_step"):
        step = report[name]
        share = "" if step["fraction_of_peak"] is None else f", {step['fraction_of_peak']:.1%} of peak"
        print(
            f"  {name}: {step['seconds_per_step'] * 1e3:.1f} ms, {step['images_per_second']:.1f} img/s, "
            f"{step['gflops_per_step']:.1f} GFLOP, {step['tflops_per_second']:.3f} TFLOP/s{share}, "
            f"peak memory {step['peak_memory_gib']:.2f} GiB"
        )
        parts = ", ".join(f"{key[5:]} {value['cpu_ms']:.1f}" for key, value in step["breakdown_of_one_step"].items())
        print(f"    one step, ms on the host: {parts}")
    print(f"  global step / local step: {report['global_over_local_step_time']:.2f}")
    print(
        f"  rehearsal sampling ({sampling['scheduler']}, {sampling['num_inference_steps']} steps, batch "
        f"{sampling['batch_size']}): {sampling['images_per_second']:.1f} img/s, {sampling['gflops_per_image']:.2f} "
        f"GFLOP per image"
    )
    schedule = report["schedule"]
    print(
        f"  the preset's whole schedule at these speeds: {schedule['training_hours']:.1f} h of training, "
        f"{schedule['rehearsal_hours'][0]:.1f}-{schedule['rehearsal_hours'][1]:.1f} h of rehearsal"
    )
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()

# ruff: noqa: E402
"""Speed benchmark of jdcl against plain diffusers on the same weights, batch and scheduler.

Measures, in one process:

(a) sampling: `JDCLPipeline` unguided against diffusers' `DDIMPipeline` on a `UNet2DModel` holding the same UNet
    weights (images/s ratio, target >= 0.98), and guided `JDCLPipeline` (`class_labels`, `guidance_scale=3.0`)
    against unguided (time ratio, target <= 2.2);
(b) training: one joint step (`joint_forward(x_t, t, x0)`, noise MSE + cross-entropy, forward and backward) against
    one plain `UNet2DModel` diffusion step (forward on `x_t`, MSE, backward) (time ratio, target <= 1.5).

Each comparison runs warm-up iterations, then alternates the two contenders (ABAB...) and compares medians, so that
drifts of a shared machine hit both alike. `--breakdown` adds component timings that explain the ratios.

On a GPU (`--device cuda`) every timed call ends with `torch.cuda.synchronize()`, the presets take their larger CUDA
batches, and `--mixed_precision bf16` runs both contenders under the same `torch.autocast`.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/speed.py --config demo
    HF_HUB_OFFLINE=1 python benchmarks/speed.py --config cifar --breakdown
    HF_HUB_OFFLINE=1 python benchmarks/speed.py --config cifar --device cuda --mixed_precision bf16
"""

import os


# Offline before anything imports huggingface_hub: online it retries the unreachable Hub for ~25 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before torch loads OpenMP: its default busy-waiting threads slow a step up to 50x whenever another process shares
# the cores (measured on 2 cores beside one busy process: 6.1 s against 0.13 s per demo training step).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import datetime
import inspect
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from jdcl import JDCLPipeline
from jdcl.config import DEFAULT_UNET_CONFIG
from jdcl.models.joint_unet_2d import JointUNet2DModel
from machine import machine_description  # benchmarks/ is on the path when run as a script


TARGETS = {"sampling_jdcl_over_ddim": 0.98, "guided_over_unguided": 2.2, "joint_over_plain_step": 1.5}

# The paper's CIFAR-10 UNet, exactly as tests/test_joint_unet_2d.py checks it against the authors' parameter count.
CIFAR_UNET_CONFIG = {
    "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 3,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 64,
    "resnet_time_scale_shift": "scale_shift",
    "dropout": 0.1,
    "attn_norm_num_groups": 32,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "demo": {
        "unet": {**DEFAULT_UNET_CONFIG, "sample_size": 16, "in_channels": 1, "out_channels": 1, "num_classes": 10},
        "batch_size": 16,
        "num_inference_steps": 10,
        "repeats": 11,
        "train_steps_per_repeat": 2,
        # A GPU idles on batches this small: the demo's rehearsal batch (256) for both, timed over more steps.
        "cuda": {"batch_size": 256, "num_inference_steps": 20, "repeats": 11, "train_steps_per_repeat": 10},
    },
    # ~52.5M parameters: a few seconds per step on 2 cores, hence the small batch and few sampler steps.
    "cifar": {
        "unet": {**CIFAR_UNET_CONFIG, "sample_size": 32, "in_channels": 3, "out_channels": 3, "num_classes": 10},
        "batch_size": 4,
        "num_inference_steps": 3,
        "repeats": 5,
        "train_steps_per_repeat": 1,
        # The paper's training batch (256) for both sampling and training.
        "cuda": {"batch_size": 256, "num_inference_steps": 10, "repeats": 7, "train_steps_per_repeat": 5},
    },
}
MIXED_PRECISION_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_models(unet_config: dict[str, Any], seed: int) -> tuple[JointUNet2DModel, UNet2DModel]:
    """A `JointUNet2DModel` and a plain `UNet2DModel` holding the very same UNet weights."""
    torch.manual_seed(seed)
    joint = JointUNet2DModel(**unet_config)
    # Only the arguments UNet2DModel knows: the classifier settings are jdcl's additions.
    plain_arguments = set(inspect.signature(UNet2DModel.__init__).parameters) - {"self"}
    plain_config = {key: value for key, value in joint.config.items() if key in plain_arguments}
    plain = UNet2DModel(**plain_config)
    state_dict = {key: value for key, value in joint.state_dict().items() if not key.startswith("classifier.")}
    plain.load_state_dict(state_dict, strict=True)
    return joint, plain


# On a GPU the two models may get different convolution algorithms for the same shapes; beyond this they differ.
CUDA_OUTPUT_TOLERANCE = 1e-4


def check_same_outputs(joint: JointUNet2DModel, plain: UNet2DModel, batch: torch.Tensor) -> float:
    """
    Guards the comparison itself: both models must compute the same function, else the ratios mean nothing.

    Returns the largest absolute difference of their outputs: 0 on a CPU, where they must be bit-identical; within
    `CUDA_OUTPUT_TOLERANCE` on a GPU.
    """
    joint.eval()
    plain.eval()
    with torch.no_grad():
        expected = plain(batch, 500).sample
        actual = joint(batch, 500).sample
    difference = (expected - actual).abs().max().item()
    tolerance = CUDA_OUTPUT_TOLERANCE if batch.device.type == "cuda" else 0.0
    if difference > tolerance:
        raise RuntimeError(f"UNet outputs differ (max |diff| {difference:.3g}, allowed {tolerance:g}).")
    return difference


def synchronize() -> None:
    """Waits for queued GPU work, so that a timed call ends when its kernels do; nothing to wait for on a CPU."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_call(function: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call (on a GPU, up to the end of its kernels)."""
    synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


class _FlopCounter(TorchDispatchMode):
    """Sums the FLOPs of matmuls and convolutions, forward and backward, with torch's formulas.

    torch has no formula for CPU flash attention (`_scaled_dot_product_flash_attention_for_cpu`), so attention score
    products go uncounted: about 3% of a UNet forward on both presets here, too little to move the ratios much. On
    CUDA the flash-attention formula exists, so GPU FLOPs include them.

    torch's `FlopCounterMode` also tracks modules with backward hooks, which `torch.autograd.grad` (the guidance
    term) rejects; counting at the dispatch level alone avoids them.
    """

    def __init__(self) -> None:
        super().__init__()
        # FlopCounterMode's registry holds the formulas already wrapped to take tensors.
        self.registry = FlopCounterMode(display=False).flop_registry
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(function: Callable[[], Any]) -> int:
    """FLOPs of one call (matmuls and convolutions; forward and backward), immune to machine load."""
    with _FlopCounter() as counter:
        function()
    return counter.total


def interleaved_medians(
    functions: dict[str, Callable[[], Any]], warmup: int, repeats: int
) -> dict[str, dict[str, float | list[float]]]:
    """Times every function once per round, rotating who goes first, and returns per-function medians.

    Interleaving puts every contender under the same load drift of a shared machine; rotating the order keeps any of
    them from always running on caches (or a scheduler slot) the previous one just left.
    """
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = time_call(functions[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    return {
        name: {
            "seconds": walls[name],
            "median_s": statistics.median(walls[name]),
            "cpu_seconds": cpus[name],
            "cpu_median_s": statistics.median(cpus[name]),
        }
        for name in names
    }


def compare(
    name_a: str,
    function_a: Callable[[], Any],
    name_b: str,
    function_b: Callable[[], Any],
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    """Warm both up, time them alternately (ABAB...) and return both medians and the ratio `a / b` of medians."""
    timings = interleaved_medians({name_a: function_a, name_b: function_b}, warmup, repeats)
    result: dict[str, Any] = {}
    for name, timing in timings.items():
        for key, value in timing.items():
            result[f"{name}_{key}"] = value
    result["time_ratio"] = result[f"{name_a}_median_s"] / result[f"{name_b}_median_s"]
    # Two more views, less sensitive to a shared machine: the median of per-round ratios (slow drifts cancel within a
    # round), and the ratio of median process CPU times (time spent descheduled does not count).
    result["paired_time_ratio_median"] = statistics.median(
        a / b for a, b in zip(result[f"{name_a}_seconds"], result[f"{name_b}_seconds"])
    )
    result["cpu_time_ratio"] = result[f"{name_a}_cpu_median_s"] / result[f"{name_b}_cpu_median_s"]
    result["flops_ratio"] = count_flops(function_a) / count_flops(function_b)
    return result


def make_schedulers() -> tuple[DDIMScheduler, DDIMScheduler]:
    """Two identical DDIM schedulers (each pipeline mutates its own timesteps), the paper's linear betas."""
    scheduler = DDIMScheduler(beta_start=1e-3, beta_end=0.02)
    return scheduler, DDIMScheduler.from_config(scheduler.config)


def benchmark_sampling(
    joint: JointUNet2DModel, plain: UNet2DModel, batch_size: int, num_inference_steps: int, warmup: int, repeats: int
) -> tuple[dict[str, Any], dict[str, Any], JDCLPipeline]:
    """(a): JDCL unguided vs DDIMPipeline, and JDCL guided vs unguided."""
    joint.eval()
    plain.eval()
    jdcl_scheduler, ddim_scheduler = make_schedulers()
    jdcl_pipe = JDCLPipeline(unet=joint, scheduler=jdcl_scheduler)
    ddim_pipe = DDIMPipeline(unet=plain, scheduler=ddim_scheduler)
    for pipe in (jdcl_pipe, ddim_pipe):
        pipe.set_progress_bar_config(disable=True)
    labels = [index % joint.config.num_classes for index in range(batch_size)]

    def run_jdcl() -> None:
        jdcl_pipe(
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )

    def run_ddim() -> None:
        ddim_pipe(
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            eta=0.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )

    def run_guided() -> None:
        jdcl_pipe(
            class_labels=labels,
            guidance_scale=3.0,
            num_inference_steps=num_inference_steps,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )

    unguided = compare("jdcl_unguided", run_jdcl, "ddim_pipeline", run_ddim, warmup, repeats)
    images = batch_size
    unguided["jdcl_unguided_images_per_s"] = images / unguided["jdcl_unguided_median_s"]
    unguided["ddim_pipeline_images_per_s"] = images / unguided["ddim_pipeline_median_s"]
    # Throughput ratio = inverse time ratio; the target is on throughput.
    unguided["ratio"] = unguided["jdcl_unguided_images_per_s"] / unguided["ddim_pipeline_images_per_s"]
    unguided["target"] = f">= {TARGETS['sampling_jdcl_over_ddim']}"
    unguided["met"] = unguided["ratio"] >= TARGETS["sampling_jdcl_over_ddim"]

    guided = compare("jdcl_guided", run_guided, "jdcl_unguided", run_jdcl, warmup, repeats)
    guided["jdcl_guided_images_per_s"] = images / guided["jdcl_guided_median_s"]
    guided["jdcl_unguided_images_per_s"] = images / guided["jdcl_unguided_median_s"]
    guided["ratio"] = guided["time_ratio"]
    guided["target"] = f"<= {TARGETS['guided_over_unguided']}"
    guided["met"] = guided["ratio"] <= TARGETS["guided_over_unguided"]
    return unguided, guided, jdcl_pipe


def make_training_batch(
    joint: JointUNet2DModel, batch_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean images, noise, timesteps, noisy images and labels on the model's device, the same for both contenders.

    Drawn on the CPU, so that a seed gives the same batch on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    channels, size = joint.config.in_channels, joint.config.sample_size
    clean = torch.rand(batch_size, channels, size, size, generator=generator) * 2 - 1
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (batch_size,), generator=generator)
    noisy = DDIMScheduler(beta_start=1e-3, beta_end=0.02).add_noise(clean, noise, timesteps)
    labels = torch.randint(0, joint.config.num_classes, (batch_size,), generator=generator)
    return tuple(tensor.to(joint.device) for tensor in (clean, noise, timesteps, noisy, labels))


def benchmark_training(
    joint: JointUNet2DModel,
    plain: UNet2DModel,
    batch_size: int,
    steps_per_repeat: int,
    warmup: int,
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """(b): one joint step (eps MSE + CE, forward and backward) vs one plain diffusion step, on the same batch."""
    joint.train()
    plain.train()
    clean, noise, timesteps, noisy, labels = make_training_batch(joint, batch_size, seed)

    # zero_grad(set_to_none) in both: the optimizer update itself is left out of both (it would also move the
    # weights apart), so the ratio is forward + backward only.
    def joint_step() -> None:
        for _ in range(steps_per_repeat):
            joint.zero_grad(set_to_none=True)
            output = joint.joint_forward(noisy, timesteps, clean)
            loss = F.mse_loss(output.sample, noise) + 1e-3 * F.cross_entropy(output.logits, labels)
            loss.backward()

    def plain_step() -> None:
        for _ in range(steps_per_repeat):
            plain.zero_grad(set_to_none=True)
            loss = F.mse_loss(plain(noisy, timesteps).sample, noise)
            loss.backward()

    result = compare("joint_step", joint_step, "plain_step", plain_step, warmup, repeats)
    for name in ("joint_step", "plain_step"):
        result[f"{name}_median_s"] /= steps_per_repeat
        result[f"{name}_cpu_median_s"] /= steps_per_repeat
        for key in (f"{name}_seconds", f"{name}_cpu_seconds"):
            result[key] = [seconds / steps_per_repeat for seconds in result[key]]
        result[f"{name}_images_per_s"] = batch_size / result[f"{name}_median_s"]
    result["ratio"] = result["time_ratio"]
    result["target"] = f"<= {TARGETS['joint_over_plain_step']}"
    result["met"] = result["ratio"] <= TARGETS["joint_over_plain_step"]
    return result


def breakdown(
    joint: JointUNet2DModel, pipe: JDCLPipeline, batch_size: int, warmup: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Median seconds and FLOPs of the pieces the ratios are made of, to tell where extra time goes."""
    clean, noise, timesteps, noisy, labels = make_training_batch(joint, batch_size, seed)
    step_t = torch.tensor(500, device=joint.device)
    joint.eval()
    with torch.no_grad():
        noise_pred = joint(noisy, step_t).sample

    # Sampling pieces (eval mode, as in the pipelines): one UNet forward, and the guidance term added on top of it.
    def unet_forward() -> None:
        with torch.no_grad():
            joint(noisy, step_t)

    def encoder_forward() -> None:
        with torch.no_grad():
            joint.encode(noisy, step_t)

    def guidance_term() -> None:
        pipe._guided_noise_pred(noisy, step_t, noise_pred, labels, 3.0, None)

    def guidance_term_frozen() -> None:
        # The same term with the weights frozen: autograd then records and saves only what the input gradient needs.
        # This tries a possible fix from outside the library, without changing its code.
        joint.requires_grad_(False)
        try:
            guidance_term()
        finally:
            joint.requires_grad_(True)

    # Training pieces (train mode, as in the step benchmark).
    both = torch.cat([noisy, clean])
    both_t = torch.cat([timesteps, torch.zeros_like(timesteps)])

    def encoder_step(sample: torch.Tensor, steps: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            joint.zero_grad(set_to_none=True)
            joint.pool_features(joint.encode(sample, steps)).square().mean().backward()

        return step

    def plain_step() -> None:
        joint.zero_grad(set_to_none=True)
        F.mse_loss(joint(noisy, timesteps).sample, noise).backward()

    def joint_step() -> None:
        joint.zero_grad(set_to_none=True)
        output = joint.joint_forward(noisy, timesteps, clean)
        (F.mse_loss(output.sample, noise) + 1e-3 * F.cross_entropy(output.logits, labels)).backward()

    sampling = {
        "unet_forward": unet_forward,
        "encoder_forward": encoder_forward,
        "guidance_term": guidance_term,
        "guidance_term_frozen_weights": guidance_term_frozen,
    }
    training = {
        "plain_step": plain_step,
        "joint_step": joint_step,
        "encoder_step_batch": encoder_step(noisy, timesteps),
        "encoder_step_2x_batch": encoder_step(both, both_t),
    }
    results: dict[str, Any] = {}
    for mode, functions in (("eval", sampling), ("train", training)):
        joint.train(mode == "train")
        timings = interleaved_medians(functions, warmup, repeats)
        for name, function in functions.items():
            results[name] = {
                "median_s": timings[name]["median_s"],
                "cpu_median_s": timings[name]["cpu_median_s"],
                "gflops": count_flops(function) / 1e9,
            }
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="demo", help="UNet preset to benchmark.")
    parser.add_argument("--batch_size", type=int, default=None, help="Images per batch (sampling and training).")
    parser.add_argument("--num_inference_steps", type=int, default=None, help="DDIM steps per sampling call.")
    parser.add_argument("--repeats", type=int, default=None, help="Timed rounds per contender.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed rounds per contender before timing.")
    parser.add_argument(
        "--train_steps_per_repeat", type=int, default=None, help="Training steps in one timed round (short steps)."
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument(
        "--device", type=str, default="cpu", help="`cpu` or `cuda` (`cuda:1`...); on CUDA the presets' `cuda` sizes."
    )
    parser.add_argument(
        "--mixed_precision",
        choices=sorted(MIXED_PRECISION_DTYPES),
        default="no",
        help="Run both contenders under `torch.autocast` in this dtype.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown", action="store_true", help="Also time the components behind the ratios.")
    parser.add_argument(
        "--output",
        type=str,
        default=None,
        help="JSON path; benchmarks/results/speed_<config>_<device type>[_<mixed precision>].json",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {args.device}: torch {torch.__version__} sees no CUDA device here; use --device cpu."
        )
    torch.set_num_threads(args.threads)
    preset = {**CONFIGS[args.config], **CONFIGS[args.config].get(device.type, {})}
    batch_size = args.batch_size or preset["batch_size"]
    num_inference_steps = args.num_inference_steps or preset["num_inference_steps"]
    repeats = args.repeats or preset["repeats"]
    steps_per_repeat = args.train_steps_per_repeat or preset["train_steps_per_repeat"]
    precision_suffix = "" if args.mixed_precision == "no" else f"_{args.mixed_precision}"
    default_output = Path(__file__).parent / "results" / f"speed_{args.config}_{device.type}{precision_suffix}.json"
    output = Path(args.output or default_output)

    joint, plain = build_models(preset["unet"], args.seed)
    joint.to(device)
    plain.to(device)
    # In full precision: the check is on the weights, not on how autocast rounds.
    output_difference = check_same_outputs(joint, plain, make_training_batch(joint, batch_size, args.seed)[3])
    autocast_dtype = MIXED_PRECISION_DTYPES[args.mixed_precision]
    precision = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    unet_parameters = sum(p.numel() for n, p in joint.named_parameters() if not n.startswith("classifier."))
    head_parameters = sum(p.numel() for p in joint.classifier.parameters())

    # A shared machine's load skews wall times; record it so the figures can be judged.
    load_before = os.getloadavg()
    started = time.perf_counter()
    with precision:
        unguided, guided, pipe = benchmark_sampling(
            joint, plain, batch_size, num_inference_steps, args.warmup, repeats
        )
        training = benchmark_training(joint, plain, batch_size, steps_per_repeat, args.warmup, repeats, args.seed)
    report: dict[str, Any] = {
        "benchmark": "jdcl speed",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_description(), "device": str(device)},
        "config": {
            "name": args.config,
            "unet": {key: list(value) if isinstance(value, tuple) else value for key, value in preset["unet"].items()},
            "unet_parameters": unet_parameters,
            "classifier_parameters": head_parameters,
            "batch_size": batch_size,
            "num_inference_steps": num_inference_steps,
            "scheduler": "DDIMScheduler(beta_start=1e-3, beta_end=0.02), eta=0",
            "guidance_scale": 3.0,
            "repeats": repeats,
            "warmup": args.warmup,
            "train_steps_per_repeat": steps_per_repeat,
            "training_step": "zero_grad(set_to_none) + forward + loss + backward; no optimizer update",
            "seed": args.seed,
            "mixed_precision": args.mixed_precision,
        },
        "unet_outputs_max_abs_difference": output_difference,
        "sampling_jdcl_over_ddim": unguided,
        "guided_over_unguided": guided,
        "joint_over_plain_step": training,
    }
    if args.breakdown:
        with precision:
            report["breakdown"] = breakdown(joint, pipe, batch_size, args.warmup, repeats, args.seed)
    report["elapsed_s"] = time.perf_counter() - started
    report["machine"]["load_average_1_5_15_min"] = {"before": load_before, "after": os.getloadavg()}

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")

    where = (
        report["machine"]["gpu"]
        if device.type == "cuda"
        else f"{report['machine']['cpu_model']}, {args.threads} threads"
    )
    print(f"jdcl speed, config {args.config}, {device}, {where}, mixed precision {args.mixed_precision}")
    print(f"  sampling (batch {batch_size}, {num_inference_steps} DDIM steps):")
    print(
        f"    JDCL unguided {unguided['jdcl_unguided_images_per_s']:.2f} img/s, DDIMPipeline "
        f"{unguided['ddim_pipeline_images_per_s']:.2f} img/s -> ratio {unguided['ratio']:.3f} "
        f"(target {unguided['target']}: {'met' if unguided['met'] else 'NOT met'})"
    )
    print(
        f"    JDCL guided {guided['jdcl_guided_images_per_s']:.2f} img/s -> time over unguided {guided['ratio']:.3f} "
        f"(target {guided['target']}: {'met' if guided['met'] else 'NOT met'})"
    )
    print(
        f"  training (batch {batch_size}): joint step {training['joint_step_median_s'] * 1e3:.1f} ms, plain step "
        f"{training['plain_step_median_s'] * 1e3:.1f} ms -> ratio {training['ratio']:.3f} "
        f"(target {training['target']}: {'met' if training['met'] else 'NOT met'})"
    )
    for key in ("sampling_jdcl_over_ddim", "guided_over_unguided", "joint_over_plain_step"):
        result = report[key]
        print(
            f"    {key}: other views of the time ratio: paired {result['paired_time_ratio_median']:.3f}, "
            f"CPU time {result['cpu_time_ratio']:.3f}, FLOPs {result['flops_ratio']:.3f}"
        )
    print(f"  load average before/after: {load_before} / {report['machine']['load_average_1_5_15_min']['after']}")
    if args.breakdown:
        print(f"  breakdown (batch {batch_size}, one call each):")
        for key, piece in report["breakdown"].items():
            print(
                f"    {key}: {piece['median_s'] * 1e3:.1f} ms wall, {piece['cpu_median_s'] * 1e3:.1f} ms CPU, "
                f"{piece['gflops']:.2f} GFLOP"
            )
    print(f"  saved {output}")
    return report


if __name__ == "__main__":
    main()

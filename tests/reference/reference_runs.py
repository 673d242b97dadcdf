#!/usr/bin/env python
"""Short runs of every strategy and ablation, reduced to what must never change by accident: accuracies and weights.

    python tests/reference/reference_runs.py --output runs.json        # run every case, write what they give
    python tests/reference/reference_runs.py --output runs.json --cases jdcl separate --seeds 0

The numbers depend on the kernels torch picks for this CPU and on the thread count, so the script pins both before
torch loads: one thread, and AVX2 code paths in ATen, oneDNN and MKL. That makes a run bit-identical on one kind of
CPU, not across vendors: the same pinned runs give other bits on an Intel Xeon than on the AMD EPYC they were recorded
on. So each task's weights are kept twice: a SHA-256 (bit-identity, on a CPU like the recording one) and a signed
count sketch of the flattened weights, whose distances estimate the weights' relative L2 distance.
`tests/test_reference_runs.py` runs it and compares with `reference_runs.json`, recorded before the trainer was
split into strategies: any change of behaviour, intended or not, shows there.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path


PINNED_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}

# Every key of the UNet is given, so that the models do not follow changes of the library's defaults.
UNET = {
    "block_out_channels": [16, 32],
    "layers_per_block": 2,
    "dropout": 0.0,
    "classifier_dropout": 0.1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 16,
    "norm_num_groups": 8,
    "classifier_hidden_dim": 32,
}

# Three tasks, so that the last one rehearses classes of two earlier tasks.
BASE = {
    "resolution": 8,
    "num_tasks": 3,
    "class_order": [0, 1, 2, 3, 4, 5],
    "unet_config": UNET,
    "train_batch_size": 16,
    "local_train_steps": 3,
    "global_train_steps": 3,
    "replay_samples_per_class": 4,
    "replay_inference_steps": 2,
    "grid_inference_steps": 2,
    "grid_samples_per_class": 1,
    "logger": "none",
    "show_progress": False,
}

# Every strategy and ablation, and the options that change what a stage computes.
CASES = {
    "finetune": {"strategy": "finetune"},
    "cumulative": {"strategy": "cumulative"},
    "jdcl": {},
    "no_distillation": {"no_distillation": True},
    "single_stage": {"strategy": "single_stage"},
    "single_stage_no_distillation": {"strategy": "single_stage", "no_distillation": True},
    "separate": {"strategy": "separate"},
    "separate_scratch": {"strategy": "separate", "local_init": "scratch"},
    "jdcl_options": {
        "local_init": "scratch",
        "augment": True,
        "horizontal_flip": True,
        "replay_sampler": "guided",
        "replay_selection": "confident",
        "replay_eta": 0.5,
        "classification_warmup_steps": 2,
        "first_task_train_steps": 4,
    },
    "jdcl_no_ema": {"use_ema": False, "max_grad_norm": 0.0},
}


def weights_checksum(path: Path) -> str:
    """SHA-256 over every tensor of a safetensors file, by name: independent of the file's metadata and layout."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


SKETCH_SIZE = 256


def weights_sketch(path: Path) -> list[float]:
    """A signed count sketch (fixed seed, `SKETCH_SIZE` buckets, float64) of every tensor of a safetensors file.

    Each weight is added, with a random sign, to a random bucket, so the distance of two sketches over the norm of one
    estimates the relative L2 distance of the two weight vectors (the estimate is unbiased and, for the few hundred
    thousand weights here, within about 10%).
    """
    import torch
    from safetensors.torch import load_file

    tensors = load_file(path)
    weights = torch.cat([tensors[name].double().flatten() for name in sorted(tensors)])
    generator = torch.Generator().manual_seed(0)
    buckets = torch.randint(0, SKETCH_SIZE, weights.shape, generator=generator)
    signs = torch.randint(0, 2, weights.shape, generator=generator).double() * 2 - 1
    sketch = torch.zeros(SKETCH_SIZE, dtype=torch.float64).index_add_(0, buckets, signs * weights)
    return sketch.tolist()


def run_case(name: str, seed: int, work_dir: Path) -> dict:
    import torch

    from jdcl.config import JDCLTrainingConfig
    from jdcl.trainer import train_jdcl

    torch.set_num_threads(1)
    output_dir = work_dir / f"{name}-seed{seed}"
    config = JDCLTrainingConfig(**{**BASE, **CASES[name], "seed": seed, "output_dir": str(output_dir)})
    metrics = train_jdcl(config)
    weight_files = [
        output_dir / f"task-{k}" / "unet" / "diffusion_pytorch_model.safetensors"
        for k in range(1, config.num_tasks + 1)
    ]
    return {
        "accuracy_matrix": metrics["accuracy_matrix"],
        "accuracy_seen": metrics["accuracy_seen"],
        "rehearsal": metrics["rehearsal"],
        "weights_sha256": [weights_checksum(path) for path in weight_files],
        "weights_sketch": [weights_sketch(path) for path in weight_files],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="Where to write the results (JSON).")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args(argv)
    if any(os.environ.get(key) != value for key, value in PINNED_ENVIRONMENT.items()):
        # The kernels are chosen when torch loads: pin them in a fresh interpreter.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PINNED_ENVIRONMENT})
    results = {}
    with tempfile.TemporaryDirectory() as work_dir:
        for name in args.cases:
            for seed in args.seeds:
                results[f"{name}/seed{seed}"] = run_case(name, seed, Path(work_dir))
                print(f"{name} seed {seed}: {results[f'{name}/seed{seed}']['accuracy_matrix'][-1]}", flush=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

# ruff: noqa: E402
"""JDCL on mnist-10k started from a diffusers UNet pretrained without labels, against JDCL from scratch.

1. Pretraining: a plain diffusers `UNet2DModel` of the benchmark's architecture learns to denoise every training image
   of mnist-10k (all ten classes, no labels: what a published unconditional DDPM is), `--pretrain_steps` steps of the
   budget's batch size and learning rate, with an EMA of its weights (diffusers' `EMAModel`). Saved once, reused.
2. JDCL runs with `--pretrained_unet <that folder>` (a new classifier head on the pretrained UNet), at the continual
   benchmark's budget (`benchmarks/continual.py`), seeds 0 and 1; the from-scratch `jdcl` row of the same budget is
   read from `results/continual_mnist10k.json`, or run here when that file holds another budget.

Each finished run is saved at once; a rerun skips what is recorded and a killed run resumes from its checkpoints.

Usage::

    python benchmarks/pretrained_unet.py --seeds 0        # one process per seed, one per core
    python benchmarks/pretrained_unet.py --seeds 1
    python benchmarks/pretrained_unet.py --print
    python benchmarks/pretrained_unet.py --quick          # a few steps of everything, temporary results
"""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm


sys.path.insert(0, str(Path(__file__).resolve().parent))

import continual
from jdcl.atomic import atomic_directory
from jdcl.tensor_data import infer_num_channels, prepare_tensors
from jdcl.trainer import train_jdcl
from machine import machine_summary


logger = logging.getLogger("benchmarks.pretrained_unet")

DEFAULT_RESULTS = continual.REPO_ROOT / "benchmarks" / "results" / "pretrained_unet_mnist10k.json"
ROWS = ("jdcl_pretrained_unet", "jdcl")
# The joint model's own settings, which a plain UNet2DModel does not take.
HEAD_KEYS = ("classifier_hidden_dim", "classifier_dropout")


def pretrain_unet(data, budget: dict[str, Any], steps: int, folder: Path, show_progress: bool) -> Path:
    r"""
    Trains a plain `UNet2DModel` unconditionally on every training image (labels unused) and saves its EMA weights
    to `folder` (skipped when it already holds them).

    Args:
        data ([`ClassificationData`]): mnist-10k as the benchmark loads it.
        budget (`dict`): The continual benchmark's budget (architecture, resolution, batch, learning rate, schedule).
        steps (`int`): Training steps.
        folder (`Path`): Where the UNet is saved.
        show_progress (`bool`): Show a progress bar.
    """
    if (folder / "config.json").is_file():
        return folder
    num_channels = infer_num_channels(data.train, data.image_column)
    images = prepare_tensors(
        data.train, data.image_column, data.label_column, budget["resolution"], num_channels
    ).to_float()
    unet_config = {key: value for key, value in budget["unet_config"].items() if key not in HEAD_KEYS}
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=budget["resolution"], in_channels=num_channels, out_channels=num_channels, **unet_config
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=budget["num_train_timesteps"],
        beta_start=budget["beta_start"],
        beta_end=budget["beta_end"],
        beta_schedule="linear",
    )
    optimizer = torch.optim.AdamW(unet.parameters(), lr=budget["learning_rate"])
    ema = EMAModel(unet.parameters(), decay=budget["ema_decay"], use_ema_warmup=True, power=budget["ema_power"])
    batch_size = budget["train_batch_size"]
    generator = torch.Generator().manual_seed(0)
    unet.train()
    for _ in tqdm(range(steps), desc="Pretraining the UNet (no labels)", disable=not show_progress):
        clean = images[torch.randint(len(images), (batch_size,), generator=generator)]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        loss = F.mse_loss(unet(scheduler.add_noise(clean, noise, timesteps), timesteps).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), budget["max_grad_norm"])
        optimizer.step()
        ema.step(unet.parameters())
    ema.copy_to(unet.parameters())
    with atomic_directory(folder) as temporary:
        unet.save_pretrained(temporary)
    logger.info(f"Pretrained UNet ({steps} steps, final loss {loss.item():.4f}) saved to {folder}.")
    return folder


def scratch_results(budget: dict[str, Any]) -> dict[str, Any] | None:
    """The continual benchmark's recorded `jdcl` row, when it was recorded with this budget."""
    path = continual.DEFAULT_RESULTS
    if not path.exists():
        return None
    recorded = json.loads(path.read_text())
    if continual.budget_differences(recorded.get("budget") or {}, budget):
        return None
    return recorded["rows"].get("jdcl")


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"JDCL on mnist-10k from a UNet pretrained without labels ({results['pretrain_steps']} steps) and from scratch",
        "",
        "| start | seeds | average accuracy | forgetting | per seed |",
        "|---|---|---|---|---|",
    ]
    pretrained_seeds = set(results["rows"].get("jdcl_pretrained_unet", {}).get("seeds", []))
    for row, label in (("jdcl_pretrained_unet", "pretrained UNet"), ("jdcl", "from scratch")):
        entry = results["rows"].get(row)
        if not entry:
            continue
        # The comparison is seed against seed: the recorded scratch row may hold more seeds.
        keep = [i for i, seed in enumerate(entry["seeds"]) if not pretrained_seeds or seed in pretrained_seeds]
        entry = {key: [entry[key][i] for i in keep] for key in ("seeds", "average_accuracy", "forgetting")} | {
            "source": entry.get("source")
        }
        accuracy = entry["average_accuracy"]
        spread = f" ± {statistics.stdev(accuracy):.3f}" if len(accuracy) > 1 else ""
        lines.append(
            f"| {label} ({entry['source'] or 'this benchmark'}) | {entry['seeds']} | "
            f"{statistics.fmean(accuracy):.3f}{spread} | {statistics.fmean(entry['forgetting']):.3f} | "
            f"{', '.join(f'{value:.3f}' for value in accuracy)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=str, default="0,1", help="Comma-separated seeds.")
    parser.add_argument("--pretrain_steps", type=int, default=1200, help="Steps of the unconditional pretraining.")
    parser.add_argument("--results", type=Path, default=None, help=f"Results file (default {DEFAULT_RESULTS}).")
    parser.add_argument(
        "--work_dir", type=Path, default=None, help=f"Run folders (default {continual.DEFAULT_WORK_DIR})."
    )
    parser.add_argument("--dataset", type=Path, default=None, help="mnist-10k folder (default $JDCL_MNIST10K).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one process per core).")
    parser.add_argument("--quick", action="store_true", help="A few steps of everything into a temporary folder.")
    parser.add_argument("--print", dest="print_only", action="store_true", help="Print the recorded table only.")
    parser.add_argument("--progress", action="store_true", help="Show progress bars.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    pretrain_steps = 2 if args.quick else args.pretrain_steps
    budget = continual.make_budget({}, quick=args.quick)
    scratch = Path(tempfile.mkdtemp(prefix="jdcl-pretrained-unet-quick-")) if args.quick else None
    results_path = args.results or (scratch / "results.json" if args.quick else DEFAULT_RESULTS)
    work_dir = (args.work_dir or (scratch if args.quick else continual.DEFAULT_WORK_DIR)) / (
        f"budget-{continual.budget_key(budget)}"
    )
    if args.print_only:
        results = json.loads(results_path.read_text())
        print(format_table(results))
        return results

    fresh = {
        "dataset": continual.DATASET_NAME,
        "machine": machine_summary(),
        "date": datetime.date.today().isoformat(),
        "quick": args.quick,
        "budget": budget,
        "pretrain_steps": pretrain_steps,
        "rows": {},
    }
    dataset_path = args.dataset or continual.default_dataset_path()
    data = continual.load_data(dataset_path, budget)
    with continual.results_lock(results_path):
        pretrained = pretrain_unet(
            data, budget, pretrain_steps, work_dir / f"pretrained-unet-{pretrain_steps}", args.progress
        )
    recorded_scratch = None if args.quick else scratch_results(budget)
    rows = {"jdcl_pretrained_unet": {"pretrained_unet": str(pretrained)}}
    if recorded_scratch is None:
        rows["jdcl"] = {}
    for row, fields in rows.items():
        for seed in seeds:
            with continual.results_lock(results_path):
                results = continual.load_budget_results(results_path, budget, fresh)
            if seed in results["rows"].get(row, {}).get("seeds", []):
                continue
            output_dir = work_dir / f"{row}-seed{seed}"
            config = continual.run_config(
                budget, {**continual.all_rows()["jdcl"], **fields}, seed, dataset_path, output_dir, source=row
            )
            config.show_progress = args.progress
            start = time.perf_counter()
            metrics = train_jdcl(config, data=data)
            wall = time.perf_counter() - start
            with continual.results_lock(results_path):
                results = continual.load_budget_results(results_path, budget, fresh)
                entry = results["rows"].setdefault(
                    row,
                    {"average_accuracy": [], "forgetting": [], "accuracy_matrix": [], "wall_seconds": [], "seeds": []},
                )
                entry["average_accuracy"].append(metrics["average_accuracy"])
                entry["forgetting"].append(metrics["forgetting"])
                entry["accuracy_matrix"].append(metrics["accuracy_matrix"])
                entry["wall_seconds"].append(wall)
                entry["seeds"].append(seed)
                continual.save_results(results, results_path)
            logger.info(f"{row} seed {seed}: average accuracy {metrics['average_accuracy']:.4f} in {wall:.0f} s.")
    results = continual.load_budget_results(results_path, budget, fresh)
    if recorded_scratch is not None:
        results["rows"]["jdcl"] = {**recorded_scratch, "source": "results/continual_mnist10k.json"}
        with continual.results_lock(results_path):
            continual.save_results(results, results_path)
    print(format_table(results))
    return results


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    main()

# ruff: noqa: E402
"""Semi-supervised continual learning on mnist-10k: JDCL, which stores no image, against experience replay.

The paper's claim (CIFAR-10, 5 tasks): with 0.8% or 5% of the labels, JDCL beats a buffer-based method that keeps
5,120 real images. Here, on mnist-10k (5 tasks of 2 digits) under one budget for every row:

- `jdcl` (no stored image), `replay_buffer_200` and `replay_buffer_500` (at most 200 / 500 real labelled images,
  class-balanced), and `finetune` (the lower bound);
- each at 5% and at 0.8% of the labels (`--labeled_fraction`), seeds 0 and 1.

Every (row, setting, seed) is a `JDCLTrainingConfig` handed to `train_jdcl`, like `examples/train_jdcl.py` does. The
results file is rewritten after each finished one, and a rerun skips what is recorded; a killed run continues from its
checkpoints (its folder under `--work_dir` is reused).

    python benchmarks/semi_supervised.py --workers 2     # everything (hours on 2 cores), resumable
    python benchmarks/semi_supervised.py --print         # the table of what is recorded
    python benchmarks/semi_supervised.py --quick         # a few steps of every row and setting, temporary results
"""

import os


# Before torch loads OpenMP: busy-waiting threads slow shared-core CPU steps up to 50x (see examples/train_jdcl.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import datetime
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from continual import (
    budget_key,
    default_dataset_path,
    load_budget_results,
    load_data,
    make_budget,
    results_lock,
    run_config,
    save_results,
)
from jdcl import JDCLPipeline, JointUNet2DModel
from jdcl.config import JDCLTrainingConfig
from jdcl.data import infer_num_channels, prepare_tensors
from jdcl.hub import task_revision
from jdcl.tasks import ClassIncrementalSplit, resolve_class_order
from jdcl.trainer import train_jdcl
from machine import machine_summary
from workers import run_in_workers


REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results" / "semi_supervised_mnist10k.json"
DEFAULT_WORK_DIR = REPO_ROOT / "benchmarks" / "runs" / "semi_supervised"

ROWS: dict[str, dict[str, Any]] = {
    "jdcl": {"strategy": "jdcl"},
    "replay_buffer_200": {"strategy": "replay_buffer", "buffer_size": 200},
    "replay_buffer_500": {"strategy": "replay_buffer", "buffer_size": 500},
    "finetune": {"strategy": "finetune"},
}
# A labelled batch of 16 and an unlabelled one three times larger: 64 images a local step, what fits the whole
# benchmark in about 4 hours on 2 cores (the authors' CIFAR runs: 16 and 7x).
SETTINGS: dict[str, dict[str, Any]] = {
    "5%": {"labeled_fraction": 0.05, "unlabeled_batch_ratio": 3},
    "0.8%": {"labeled_fraction": 0.008, "unlabeled_batch_ratio": 3},
}
BUDGET = {"resolution": 16, "train_batch_size": 16}
QUICK_BUDGET = {
    "resolution": 8,
    "train_batch_size": 4,
    "local_train_steps": 1,
    "global_train_steps": 1,
    "replay_samples_per_class": 2,
    "replay_inference_steps": 1,
    "grid_samples_per_class": 0,
}
SEEDS = (0, 1)


def pair_key(row: str, setting: str) -> str:
    return f"{row}@{setting}"


def pair_config(
    budget: dict, row: str, setting: str, seed: int, dataset: Path, output_dir: Path
) -> JDCLTrainingConfig:
    r"""The configuration of one (row, setting, seed): the budget, the row's method, the setting's labels, the seed."""
    fields = {**ROWS[row], **SETTINGS[setting]}
    return run_config(budget, fields, seed, dataset, output_dir, source=f"{row} at {setting}")


def load_results(path: Path, budget: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The recorded results, or a fresh file; refuses a file recorded with another budget."""
    return load_budget_results(
        path, budget, {"dataset": "mnist-10k", "quick": quick, "budget": budget, "settings": SETTINGS, "rows": {}}
    )


@torch.no_grad()
def pseudo_label_quality(run_dir: Path, config: JDCLTrainingConfig, data) -> dict[str, list[float]]:
    r"""
    How good the pseudo-labels of each task were, measured with the true labels the learner never saw: of the task's
    unlabelled training images, the fraction whose top probability reaches the threshold (coverage) and, of those,
    the fraction labelled right (precision). Read from the model that pseudo-labelled them at the end of its stage:
    the local model of a jdcl task (the first task's saved pipeline), or the task's model for the other rows.

    Args:
        run_dir (`Path`): A finished run's folder.
        config ([`JDCLTrainingConfig`]): Its configuration.
        data ([`ClassificationData`]): The data it ran on.
    """
    split = ClassIncrementalSplit.from_order(
        resolve_class_order(config.class_order, data.class_names), config.num_tasks
    )
    labeled = np.zeros(len(data.train), dtype=bool)
    labeled[json.loads((run_dir / "labeled_examples.json").read_text())["labeled_indices"]] = True
    num_channels = infer_num_channels(data.train, data.image_column)
    train = prepare_tensors(
        data.train, data.image_column, data.label_column, config.resolution, num_channels, show_progress=False
    ).select(torch.from_numpy(~labeled))
    coverage, precision = [], []
    for task_index in range(split.num_tasks):
        local = run_dir / "state" / task_revision(task_index + 1) / "local"
        if task_index > 0 and (local / "config.json").is_file():
            model = JointUNet2DModel.from_pretrained(local).eval()
        else:
            model = JDCLPipeline.from_pretrained(run_dir / task_revision(task_index + 1)).unet.eval()
        unlabeled = train.subset(split.new_classes(task_index))
        probabilities = torch.cat(
            [
                model.classify(chunk.float().div(127.5).sub(1.0)).float().softmax(-1)
                for chunk in unlabeled.images.split(512)
            ]
        )
        confidence, predicted = probabilities.max(dim=-1)
        kept = confidence >= config.pseudo_label_threshold
        coverage.append(float(kept.float().mean()))
        precision.append(float((predicted[kept] == unlabeled.labels[kept]).float().mean()) if kept.any() else math.nan)
    return {"pseudo_label_coverage": coverage, "pseudo_label_precision": precision}


def pair_dir(args, budget: dict, row: str, setting: str, seed: int) -> Path:
    return args.work_dir / f"budget-{budget_key(budget)}" / f"{row}-{setting.replace('%', 'pc')}-seed{seed}"


def measure_missing_pseudo_labels(args, budget: dict) -> None:
    """Adds the pseudo-label figures to recorded seeds that lack them, from their run folders where they are kept."""
    with results_lock(args.results):
        results = load_results(args.results, budget, args.quick)
        data = None
        for key, entry in results["rows"].items():
            row, setting = key.split("@")
            coverage = entry.setdefault("pseudo_label_coverage", [])
            precision = entry.setdefault("pseudo_label_precision", [])
            if row == "finetune" or len(coverage) == len(entry["seeds"]):
                continue
            run_dirs = [pair_dir(args, budget, row, setting, seed) for seed in entry["seeds"]]
            if coverage or not all((run_dir / "labeled_examples.json").is_file() for run_dir in run_dirs):
                continue
            data = data or load_data(args.dataset, budget)
            for seed, run_dir in zip(entry["seeds"], run_dirs):
                quality = pseudo_label_quality(
                    run_dir, pair_config(budget, row, setting, seed, args.dataset, run_dir), data
                )
                coverage.append(quality["pseudo_label_coverage"])
                precision.append(quality["pseudo_label_precision"])
        save_results(results, args.results)


def run_pair(args, budget: dict, row: str, setting: str, seed: int) -> None:
    data = load_data(args.dataset, budget)
    output_dir = pair_dir(args, budget, row, setting, seed)
    config = pair_config(budget, row, setting, seed, args.dataset, output_dir)
    start = time.time()
    metrics = train_jdcl(config, data=data)
    wall = time.time() - start
    quality = pseudo_label_quality(output_dir, config, data) if row != "finetune" else None
    with results_lock(args.results):
        results = load_results(args.results, budget, args.quick)
        entry = results["rows"].setdefault(
            pair_key(row, setting),
            {"fields": {**ROWS[row], **SETTINGS[setting]}, "seeds": [], "average_accuracy": [], "forgetting": [],
             "accuracy_matrix": [], "wall_seconds": [], "pseudo_label_coverage": [], "pseudo_label_precision": []},
        )  # fmt: skip
        if seed in entry["seeds"]:
            return
        entry["seeds"].append(seed)
        entry["average_accuracy"].append(metrics["average_accuracy"])
        entry["forgetting"].append(metrics["forgetting"])
        entry["accuracy_matrix"].append(metrics["accuracy_matrix"])
        entry["wall_seconds"].append(wall)
        if quality is not None:
            for key, values in quality.items():
                entry.setdefault(key, []).append(values)
        results.update(machine=machine_summary(), date=datetime.date.today().isoformat())
        save_results(results, args.results)
    print(f"{pair_key(row, setting)} seed {seed}: average accuracy {metrics['average_accuracy']:.4f} ({wall:.0f} s)")


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one line per row, the mean (and spread) of average accuracy at each setting."""
    lines = ["| row | " + " | ".join(SETTINGS) + " |", "|---|" + "---:|" * len(SETTINGS)]
    for row in ROWS:
        cells = []
        for setting in SETTINGS:
            values = results["rows"].get(pair_key(row, setting), {}).get("average_accuracy", [])
            if not values:
                cells.append("—")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f} (1 seed)")
            else:
                cells.append(f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"Comma-separated, from {', '.join(ROWS)}.")
    parser.add_argument(
        "--settings",
        default=",".join(SETTINGS),
        help=f"Comma-separated, from {', '.join(SETTINGS).replace('%', '%%')}.",
    )
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="Comma-separated seeds.")
    parser.add_argument("--dataset", type=Path, default=default_dataset_path(), help="The mnist-10k folder.")
    parser.add_argument("--results", type=Path, default=None, help="The results file (a temporary one with --quick).")
    parser.add_argument("--work_dir", type=Path, default=DEFAULT_WORK_DIR, help="Where the runs' folders go.")
    parser.add_argument("--workers", type=int, default=1, help="Pairs run at once, each in a one-thread process.")
    parser.add_argument("--quick", action="store_true", help="A few steps of everything: checks that it runs.")
    parser.add_argument("--print", action="store_true", help="Print the table of what --results holds and stop.")
    parser.add_argument("--pairs", type=json.loads, default=None, help=argparse.SUPPRESS)  # a worker's share
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = Path(tempfile.mkdtemp()) / "semi_supervised.json" if args.quick else DEFAULT_RESULTS
    if args.print:
        print(format_table(json.loads(args.results.read_text())))
        return json.loads(args.results.read_text())
    rows, settings = args.rows.split(","), args.settings.split(",")
    unknown = sorted((set(rows) - set(ROWS)) | (set(settings) - set(SETTINGS)))
    if unknown:
        raise SystemExit(f"Unknown rows or settings {unknown}; rows: {list(ROWS)}, settings: {list(SETTINGS)}.")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    budget = make_budget(QUICK_BUDGET if args.quick else BUDGET, args.quick)
    recorded = load_results(args.results, budget, args.quick)["rows"]
    pairs = args.pairs or [
        (row, setting, seed)
        for seed in seeds  # seed-major: a stopped benchmark leaves whole tables for its first seeds
        for row in rows
        for setting in settings
        if seed not in recorded.get(pair_key(row, setting), {}).get("seeds", [])
    ]
    if args.workers > 1 and len(pairs) > 1:
        # Each worker takes every `workers`-th pair, in a process of its own with one thread.
        common = ["--dataset", str(args.dataset), "--results", str(args.results), "--work_dir", str(args.work_dir)]
        common += ["--quick"] if args.quick else []
        run_in_workers(__file__, common, pairs, args.workers)
    else:
        torch.set_num_threads(1)
        for row, setting, seed in pairs:
            run_pair(args, budget, row, setting, seed)
    if not args.pairs:
        measure_missing_pseudo_labels(args, budget)
    results = json.loads(args.results.read_text())
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()

# ruff: noqa: E402
"""Generation quality on mnist-10k: does the joint model keep better samples and rehearsal than a separate diffusion
model trained incrementally, and does rehearsal quality tell which classes are forgotten?

The runs are the claims benchmark's (`continual.py`'s budget and rows `jdcl`, `separate` and `finetune`, seeds 0 and
1) with the run's own quality measurement switched on (`quality_metrics=["referee"]`, the library's defaults of 100
fresh samples per seen class and a referee trained for 1,000 steps). Measuring leaves a run as it is, so each run's
accuracies are compared with the claims benchmark's record of the same (row, seed): a full-scale check of that promise.

Per (row, seed) it records, after every task, the Fréchet distance and KID of fresh samples and of the task's rehearsal
to the real test images of the seen classes (overall and per class), each class's test accuracy after every task, and
the paper's Fig. 4 statistic (`continual.in_distribution`) for the rows with rehearsal. From these:

- `quality_claim`: the final task's sample FD of `jdcl` against `separate` (the paper: the joint model's is lower);
- `rank_correlation`: over every (task, old class), Spearman's rho between the class's rehearsal FD in that task and
  how much of the class's accuracy the task lost; a positive rho means worse rehearsal, more forgetting.

    python benchmarks/quality.py --workers 2     # every (row, seed), about an hour and a half on 2 cores, resumable
    python benchmarks/quality.py --print         # the tables of what is recorded
    python benchmarks/quality.py --quick         # a few steps of everything, temporary results
"""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Before torch loads OpenMP: busy-waiting threads slow shared-core CPU steps up to 50x (see src/jdcl/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
import continual
from continual import (
    budget_key,
    default_dataset_path,
    in_distribution,
    load_budget_results,
    load_data,
    make_budget,
    results_lock,
    run_config,
    save_results,
)
from jdcl import JDCLPipeline
from jdcl.hub import task_revision
from jdcl.models import mask_logits
from jdcl.tasks import ClassIncrementalSplit, resolve_class_order
from jdcl.tensor_data import infer_num_channels, prepare_tensors
from jdcl.trainer import train_jdcl
from machine import machine_summary
from workers import run_in_workers


REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results" / "quality_mnist10k.json"
DEFAULT_WORK_DIR = REPO_ROOT / "benchmarks" / "runs" / "quality"
ROWS = ("jdcl", "separate", "finetune")
REHEARSAL_ROWS = ("jdcl", "separate")
SEEDS = (0, 1)
QUALITY = {"quality_metrics": ["referee"]}
QUICK_QUALITY = {"quality_metrics": ["referee"], "quality_samples_per_class": 4, "quality_referee_steps": 5}


def pair_config(args, budget: dict, row: str, seed: int):
    output_dir = args.work_dir / f"budget-{budget_key(budget)}" / f"{row}-seed{seed}"
    fields = {**continual.ROWS[row], **(QUICK_QUALITY if args.quick else QUALITY)}
    return run_config(budget, fields, seed, args.dataset, output_dir, source=f"row {row} with quality metrics")


@torch.no_grad()
def per_class_accuracy(run_dir: Path, config, data) -> list[dict[str, float]]:
    r"""
    Each class's test accuracy after every task, among the classes seen so far (as the trainer evaluates): one
    `{class: accuracy}` per task, for the seen classes.

    Args:
        run_dir (`Path`): A finished run's folder.
        config ([`JDCLTrainingConfig`]): Its configuration.
        data ([`ClassificationData`]): The data it ran on.
    """
    split = ClassIncrementalSplit.from_order(
        resolve_class_order(config.class_order, data.class_names), config.num_tasks
    )
    num_channels = infer_num_channels(data.train, data.image_column)
    test = prepare_tensors(
        data.test, data.image_column, data.label_column, config.resolution, num_channels, show_progress=False
    )
    accuracies = []
    for task_index in range(split.num_tasks):
        unet = JDCLPipeline.from_pretrained(run_dir / task_revision(task_index + 1)).unet.eval()
        seen = split.classes_seen(task_index)
        of_task = {}
        for class_index in seen:
            images = test.subset([class_index]).to_float()
            logits = torch.cat([unet.classify(chunk).float() for chunk in images.split(512)])
            of_task[str(class_index)] = float((mask_logits(logits, seen).argmax(-1) == class_index).float().mean())
        accuracies.append(of_task)
    return accuracies


def forgetting_pairs(quality_tasks: dict, class_accuracy: list[dict[str, float]]) -> list[tuple[float, float]]:
    r"""
    `(rehearsal FD of class c in task t, accuracy of c after task t-1 minus after task t)` for every task t with a
    rehearsal set and every class c it rehearses.

    Args:
        quality_tasks (`dict`): `metrics["quality"]["tasks"]`, keyed by task number from 1.
        class_accuracy (`list[dict]`): From [`per_class_accuracy`].
    """
    pairs = []
    for task_number, measured in quality_tasks.items():
        rehearsal = measured["referee"].get("rehearsal")
        if rehearsal is None:
            continue
        before, after = class_accuracy[int(task_number) - 2], class_accuracy[int(task_number) - 1]
        for class_index, distance in rehearsal["per_class"].items():
            if distance is not None and class_index in before:
                pairs.append((distance, before[class_index] - after[class_index]))
    return pairs


def spearman(pairs: list[tuple[float, float]]) -> dict[str, float | int | None]:
    """Spearman's rank correlation of the pairs (with scipy's p-value), `None` with fewer than three."""
    if len(pairs) < 3:
        return {"rho": None, "pvalue": None, "num_pairs": len(pairs)}
    from scipy.stats import spearmanr

    result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    rho = None if math.isnan(result.statistic) else float(result.statistic)
    return {"rho": rho, "pvalue": float(result.pvalue), "num_pairs": len(pairs)}


def claims_accuracy(budget: dict, row: str, seed: int) -> list | None:
    """The claims benchmark's accuracy matrix of the same (row, seed) and budget, where it is recorded."""
    if not continual.DEFAULT_RESULTS.is_file():
        return None
    claims = json.loads(continual.DEFAULT_RESULTS.read_text())
    entry = claims["rows"].get(row) or {}
    if continual.budget_differences(claims.get("budget") or {}, budget) or seed not in entry.get("seeds", []):
        return None
    return entry["accuracy_matrix"][entry["seeds"].index(seed)]


def load_results(path: Path, budget: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The recorded results, or a fresh file; refuses a file recorded with another budget."""
    return load_budget_results(path, budget, {"dataset": "mnist-10k", "quick": quick, "budget": budget, "rows": {}})


def final_samples_fd(run: dict) -> float:
    return run["quality"][str(len(run["quality"]))]["referee"]["samples"]["fd"]


def summarize(results: dict[str, Any]) -> None:
    r"""
    The two answers, from what is recorded: the final sample FD per row with the claim's verdict seed by seed (jdcl's
    below separate's), and the rank correlation per row.

    Args:
        results (`dict`): The results, changed in place.
    """
    rows = results["rows"]
    final_fd = {row: statistics.fmean(final_samples_fd(run) for run in entry["runs"]) for row, entry in rows.items()}
    claim = None
    if "jdcl" in rows and "separate" in rows:
        separate = {run["seed"]: final_samples_fd(run) for run in rows["separate"]["runs"]}
        paired = [
            final_samples_fd(run) < separate[run["seed"]] for run in rows["jdcl"]["runs"] if run["seed"] in separate
        ]
        if paired and all(paired):
            claim = "supported on every seed"
        elif paired and not any(paired):
            claim = "not supported on any seed"
        elif paired:
            claim = f"mixed: supported on {sum(paired)} of {len(paired)} seeds"
    results["quality_claim"] = {"final_samples_fd": final_fd, "jdcl_below_separate": claim}
    results["rank_correlation"] = {
        row: spearman([tuple(pair) for seed in rows[row]["runs"] for pair in seed["forgetting_pairs"]])
        for row in REHEARSAL_ROWS
        if row in rows
    }


def run_pair(args, budget: dict, row: str, seed: int) -> None:
    data = load_data(args.dataset, budget)
    config = pair_config(args, budget, row, seed)
    run_dir = Path(config.output_dir)
    start = time.time()
    metrics = train_jdcl(config, data=data)
    wall = time.time() - start
    class_accuracy = per_class_accuracy(run_dir, config, data)
    claims = claims_accuracy(budget, row, seed)
    run = {
        "seed": seed,
        "average_accuracy": metrics["average_accuracy"],
        "accuracy_matrix": metrics["accuracy_matrix"],
        # `None` where the claims benchmark has no record of this (row, seed) under this budget.
        "same_accuracy_as_claims_run": None if claims is None else claims == metrics["accuracy_matrix"],
        "referee_test_accuracy": metrics["quality"]["extractors"]["referee"]["test_accuracy"],
        "quality": metrics["quality"]["tasks"],
        "class_accuracy": class_accuracy,
        "forgetting_pairs": forgetting_pairs(metrics["quality"]["tasks"], class_accuracy),
        "in_distribution": in_distribution(run_dir, config, data) if row in REHEARSAL_ROWS else None,
        "wall_seconds": wall,
    }
    with results_lock(args.results):
        results = load_results(args.results, budget, args.quick)
        entry = results["rows"].setdefault(row, {"fields": continual.ROWS[row], "runs": []})
        if seed in [recorded["seed"] for recorded in entry["runs"]]:
            return
        entry["runs"].append(run)
        summarize(results)
        results.update(machine=machine_summary(), date=datetime.date.today().isoformat())
        save_results(results, args.results)
    print(
        f"{row} seed {seed}: final samples FD {run['quality'][str(len(run['quality']))]['referee']['samples']['fd']:.3f}"
    )


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def format_table(results: dict[str, Any]) -> str:
    """Markdown: FD of samples and of rehearsal after every task per row (referee features), then the answers."""
    rows = results["rows"]
    num_tasks = max((len(run["quality"]) for entry in rows.values() for run in entry["runs"]), default=0)
    header = " | ".join(f"task {k}" for k in range(1, num_tasks + 1))
    lines = [f"| row | set | {header} | KS (Fig. 4) |", "|---|---|" + "---:|" * (num_tasks + 1)]
    for row in ROWS:
        if row not in rows:
            continue
        runs = rows[row]["runs"]
        for set_name in ("samples", "rehearsal"):
            cells = []
            for task in range(1, num_tasks + 1):
                values = [run["quality"][str(task)]["referee"].get(set_name, {}).get("fd") for run in runs]
                cells.append(_cell([value for value in values if value is not None]))
            ks = [run["in_distribution"]["ks_statistic"] for run in runs if run["in_distribution"]]
            ks_cell = _cell(ks) if set_name == "rehearsal" else ""
            lines.append(f"| {row} | {set_name} | " + " | ".join(cells) + f" | {ks_cell} |")
    claim = results.get("quality_claim") or {}
    lines += [
        "",
        f"The joint model's final samples closer to the real images than separate's: {claim.get('jdcl_below_separate')}",
    ]
    for row, correlation in (results.get("rank_correlation") or {}).items():
        rho = "—" if correlation["rho"] is None else f"{correlation['rho']:.2f} (p = {correlation['pvalue']:.3f})"
        lines.append(
            f"- {row}: rehearsal FD of a class against its forgetting, Spearman rho {rho}, {correlation['num_pairs']} pairs"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"Comma-separated, from {', '.join(ROWS)}.")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="Comma-separated seeds.")
    parser.add_argument("--dataset", type=Path, default=default_dataset_path(), help="The mnist-10k folder.")
    parser.add_argument("--results", type=Path, default=None, help="The results file (a temporary one with --quick).")
    parser.add_argument("--work_dir", type=Path, default=None, help="Where the runs' folders go.")
    parser.add_argument("--workers", type=int, default=1, help="Runs at once, each in a one-thread process.")
    parser.add_argument("--quick", action="store_true", help="A few steps of everything: checks that it runs.")
    parser.add_argument("--print", action="store_true", help="Print the tables of what --results holds and stop.")
    parser.add_argument("--pairs", type=json.loads, default=None, help=argparse.SUPPRESS)  # a worker's share
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="jdcl-quality-quick-")) if args.quick else None
    args.results = args.results or (scratch / "quality.json" if args.quick else DEFAULT_RESULTS)
    args.work_dir = args.work_dir or (scratch / "runs" if args.quick else DEFAULT_WORK_DIR)
    if args.print:
        print(format_table(json.loads(args.results.read_text())))
        return json.loads(args.results.read_text())
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"Unknown rows {unknown}; rows: {list(ROWS)}.")
    budget = make_budget({}, args.quick)
    recorded = load_results(args.results, budget, args.quick)["rows"]
    pairs = args.pairs or [
        (row, seed)
        for seed in (int(seed) for seed in args.seeds.split(","))
        for row in rows
        if seed not in [run["seed"] for run in recorded.get(row, {}).get("runs", [])]
    ]
    if args.workers > 1 and len(pairs) > 1:
        common = ["--dataset", str(args.dataset), "--results", str(args.results), "--work_dir", str(args.work_dir)]
        run_in_workers(__file__, common + (["--quick"] if args.quick else []), pairs, args.workers)
    else:
        torch.set_num_threads(1)
        for row, seed in pairs:
            run_pair(args, budget, row, seed)
    results = json.loads(args.results.read_text())
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()

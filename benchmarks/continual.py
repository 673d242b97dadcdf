# ruff: noqa: E402
"""Continual-learning benchmark of jdcl on mnist-10k: JDCL, its baselines and its ablations under one budget.

Every row is a `JDCLTrainingConfig` handed to `train_jdcl`, exactly as `examples/train_jdcl.py` does; the rows differ
only in their strategy/ablation fields, so that one per-stage step budget and one rehearsal budget apply to all:

- `finetune` (lower bound) and `cumulative` (upper bound);
- `jdcl` (the library defaults: the paper's label-and-keep rehearsal from deterministic DDIM), `jdcl_guided`
  (classifier-guided sampling) and `jdcl_confident` (stochastic DDIM, keeping each class's most confident samples);
- `no_distillation`, `single_stage` and `separate` (the paper's "without joint modelling");
- run when named (`--rows`): `replay_buffer` and `der` (DER++), each storing 500 real images, and `lwf` (Learning
  without Forgetting), beside JDCL, which stores none.

The data: mnist-10k, five tasks of two classes in label order. After each finished (row, seed) the results file is
rewritten atomically; a rerun skips the pairs already recorded for the same budget, and a run killed mid-way continues
from its checkpoints (its folder under `--work_dir` is reused with `resume_from_checkpoint="latest"`).

For the rows with rehearsal it also measures the paper's in-distribution claim (Fig. 4): the final classifier's
confidence (max softmax among seen classes) on the last task's rehearsal samples of old classes against its
confidence on real test images of those classes, compared by the two-sample Kolmogorov-Smirnov statistic.

Usage::

    python benchmarks/continual.py                                  # every row, seeds 0 and 1 (hours on a CPU)
    python benchmarks/continual.py --rows jdcl,finetune --seeds 0,1  # in pieces
    python benchmarks/continual.py --print                          # the table of what is recorded
    python benchmarks/continual.py --quick                          # a few steps of every row, temporary results
"""

import os


# Offline before anything imports huggingface_hub: online it retries the unreachable Hub for ~25 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Before torch loads OpenMP: busy-waiting threads slow shared-core CPU steps up to 50x (see src/jdcl/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file


# Run from a checkout without installing: the library lives in src/.
try:
    import jdcl  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
# The benchmarks' shared helpers, also when this file is loaded as a module (as the tests do).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jdcl import JDCLPipeline
from jdcl.atomic import atomic_file
from jdcl.config import JDCLTrainingConfig
from jdcl.config_schema import add_missing_defaults
from jdcl.data import ClassificationData, load_classification_dataset
from jdcl.hub import task_revision
from jdcl.models import mask_logits
from jdcl.strategies.base import registered_options
from jdcl.tasks import ClassIncrementalSplit, resolve_class_order
from jdcl.tensor_data import infer_num_channels, prepare_tensors
from jdcl.trainer import train_jdcl
from machine import machine_summary


logger = logging.getLogger("benchmarks.continual")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results" / "continual_mnist10k.json"
DEFAULT_WORK_DIR = REPO_ROOT / "benchmarks" / "runs"
DATASET_ENV_VAR = "JDCL_MNIST10K"
DATASET_NAME = "mnist-10k"

# The fields a row may set (the method, every method's options, the labels and the rehearsal); everything else is the
# shared budget. Each row names all of them, so that no row inherits another's ablation by accident.
ROW_FIELDS = (
    "strategy",
    *sorted(registered_options()),
    "labeled_fraction",
    "labeled_per_class",
    "unlabeled_batch_ratio",
    "pseudo_label_threshold",
    "replay_sampler",
    "replay_selection",
    "replay_eta",
    "replay_scheduler",
)
# `jdcl` is the library's defaults; every other row states how it differs.
_DEFAULTS = {
    **{name: option.default for name, option in registered_options().items()},
    **JDCLTrainingConfig().to_dict(),
}
_JDCL = {name: _DEFAULTS[name] for name in ROW_FIELDS}
ROWS: dict[str, dict[str, Any]] = {
    "finetune": {**_JDCL, "strategy": "finetune"},
    "cumulative": {**_JDCL, "strategy": "cumulative"},
    "jdcl": dict(_JDCL),
    "no_distillation": {**_JDCL, "no_distillation": True},
    "single_stage": {**_JDCL, "strategy": "single_stage"},
    "separate": {**_JDCL, "strategy": "separate"},
    "jdcl_guided": {**_JDCL, "replay_sampler": "guided"},
    # Stochastic DDIM, each class keeping its most confident half of twice the quota.
    "jdcl_confident": {**_JDCL, "replay_selection": "confident", "replay_eta": 1.0},
}
# Rows run only when named (`--rows`): single measurements, outside the benchmark's default rows and time target.
EXTRA_ROWS: dict[str, dict[str, Any]] = {
    # Rehearsal from DPM-Solver++ instead of DDIM, at the budget's steps.
    "jdcl_dpmsolver": {**_JDCL, "replay_scheduler": "dpmsolver++"},
    # Methods that store real images (500, DER++'s usual buffer), beside JDCL, which stores none; and LwF, which
    # stores and generates nothing.
    "replay_buffer": {**_JDCL, "strategy": "replay_buffer", "buffer_size": 500},
    "der": {**_JDCL, "strategy": "der", "buffer_size": 500},
    "lwf": {**_JDCL, "strategy": "lwf"},
}


def all_rows() -> dict[str, dict[str, Any]]:
    """Every row a run may name: the benchmark's and the extra ones, with their fields."""
    return {**ROWS, **EXTRA_ROWS}


# Rows that generate rehearsal, hence have a last-task rehearsal set to measure the in-distribution claim on.
REHEARSAL_ROWS = ("jdcl", "jdcl_guided", "jdcl_confident", "no_distillation", "single_stage", "separate")
ABLATION_ROWS = ("no_distillation", "single_stage", "separate")
GAP_CLOSURE_TARGET = 0.90
# The seeds of the full benchmark, each row's; --quick runs seed 0 only.
BENCHMARK_SEEDS = (0, 1)
# The whole benchmark (every row, every seed) on the 2-core machine, with one worker per core.
BENCHMARK_HOURS_TARGET = 3.0
BENCHMARK_WORKERS = 2

# Not part of the budget: where a run goes and how it reports, or what differs by design between rows and seeds.
NON_BUDGET_FIELDS = set(ROW_FIELDS) | {"seed", "dataset_name", "dataset_config_name", "train_data_dir", "cache_dir"}

# --quick: every code path of the full benchmark, with a budget that only checks that it runs.
# On a shared 2-core machine a 16x16 training step can take seconds, hence 8x8 images, small batches and one step.
QUICK_BUDGET = {
    "resolution": 8,
    "train_batch_size": 8,
    "local_train_steps": 1,
    "global_train_steps": 1,
    "replay_samples_per_class": 2,
    "replay_inference_steps": 2,
    "grid_samples_per_class": 0,
}
# The full benchmark keeps MNIST's 28x28 digits at 16x16 (the library's default, 8x8, is the bundled digits' own size).
FULL_BUDGET = {"resolution": 16}
QUICK_TRAIN_PER_CLASS = 50
QUICK_TEST_PER_CLASS = 20

# Budget flags: each is a `JDCLTrainingConfig` field; `None` keeps the library default.
BUDGET_FLAGS: dict[str, type] = {
    "local_train_steps": int,
    "global_train_steps": int,
    "first_task_train_steps": int,
    "train_batch_size": int,
    "replay_samples_per_class": int,
    "replay_inference_steps": int,
    "resolution": int,
    "learning_rate": float,
    "classification_warmup_steps": int,
}


# ----------------------------------------------------------------------------------------------------- budget and data


def default_dataset_path() -> Path:
    """The mnist-10k folder: `$JDCL_MNIST10K`, else `shared/data/mnist-10k` beside the repository checkout."""
    if os.environ.get(DATASET_ENV_VAR):
        return Path(os.environ[DATASET_ENV_VAR])
    return REPO_ROOT.parent / "shared" / "data" / "mnist-10k"


def make_budget(overrides: dict[str, Any], quick: bool) -> dict[str, Any]:
    r"""
    The shared budget: every `JDCLTrainingConfig` field that defines the experiment, except the row fields and seed.

    Args:
        overrides (`dict`): Config fields set by flags (or `--override`); the library defaults fill the rest.
        quick (`bool`): Start from the tiny `--quick` budget instead of the library defaults.
    """
    values = {**(QUICK_BUDGET if quick else FULL_BUDGET), **overrides}
    bad = sorted(set(values) & NON_BUDGET_FIELDS)
    if bad:
        raise SystemExit(f"{bad} are set per row or per seed by the benchmark, not by the budget; drop them.")
    # Five tasks of two classes in label order is the benchmark itself, not a budget choice.
    values.update(num_tasks=5, class_order=None)
    config = JDCLTrainingConfig.from_dict(values, source="the benchmark budget")
    budget = {k: v for k, v in config.run_identity().items() if k not in NON_BUDGET_FIELDS}
    # Subsampling is how --quick stays fast; it is recorded so that a quick file is never mistaken for a full one.
    budget["train_examples_per_class"] = QUICK_TRAIN_PER_CLASS if quick else None
    budget["test_examples_per_class"] = QUICK_TEST_PER_CLASS if quick else None
    return budget


def budget_key(budget: dict[str, Any]) -> str:
    """A short hash of the budget: run folders of different budgets never share a path."""
    return hashlib.sha256(json.dumps(budget, sort_keys=True).encode()).hexdigest()[:10]


def run_config(
    budget: dict[str, Any], fields: dict[str, Any], seed: int, dataset_path: Path, output_dir: Path, source: str
) -> JDCLTrainingConfig:
    r"""
    The configuration of one run of a benchmark: the budget, the fields that make its row, the seed and the data.

    Args:
        budget (`dict`): From [`make_budget`].
        fields (`dict`): The row's strategy/ablation (and setting) fields.
        seed (`int`): The run's seed.
        dataset_path (`Path`): The mnist-10k folder.
        output_dir (`Path`): The run's folder.
        source (`str`): What the fields are, for errors.
    """
    values = {k: v for k, v in budget.items() if k in JDCLTrainingConfig.field_names()}
    values.update(fields)
    values.update(
        seed=seed,
        dataset_name=str(dataset_path),
        output_dir=str(output_dir),
        # Reusing a folder that exists continues the killed run from its last checkpoint and finished tasks.
        resume_from_checkpoint="latest" if output_dir.exists() else None,
        logger="none",
    )
    return JDCLTrainingConfig.from_dict(values, source=source)


def _subsample(dataset, label_column: str, per_class: int | None, seed: int):
    if per_class is None:
        return dataset
    labels = np.asarray(dataset[label_column])
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return dataset.select(np.sort(np.concatenate(keep)))


def load_data(dataset_path: Path, budget: dict[str, Any]) -> ClassificationData:
    r"""
    Loads mnist-10k with the library's loader (as the trainer would from `dataset_name`), subsampled in quick mode.

    The same object goes to `train_jdcl(config, data=...)` in every mode, so quick and full runs share one code path.

    Args:
        dataset_path (`Path`): The mnist-10k folder.
        budget (`dict`): Holds the per-class subsample sizes (`None`: the whole split).
    """
    if not dataset_path.is_dir():
        raise SystemExit(
            f"mnist-10k not found at {dataset_path}. Pass --dataset or set ${DATASET_ENV_VAR} to the dataset folder."
        )
    data = load_classification_dataset(dataset_name=str(dataset_path), seed=0)
    data.train = _subsample(data.train, data.label_column, budget["train_examples_per_class"], seed=0)
    data.test = _subsample(data.test, data.label_column, budget["test_examples_per_class"], seed=1)
    return data


# ------------------------------------------------------------------------------------------------- in-distribution


def ks_statistic(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    r"""
    The two-sample Kolmogorov-Smirnov statistic (and p-value when scipy is there) of two samples.

    Args:
        a (`np.ndarray`), b (`np.ndarray`): The samples.
    """
    try:
        from scipy.stats import ks_2samp
    except ImportError:  # The statistic by hand: the largest gap between the two empirical CDFs.
        a, b = np.sort(a), np.sort(b)
        points = np.concatenate([a, b])
        cdf_a = np.searchsorted(a, points, side="right") / len(a)
        cdf_b = np.searchsorted(b, points, side="right") / len(b)
        return float(np.max(np.abs(cdf_a - cdf_b))), None
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


@torch.no_grad()
def max_confidence(unet, images: torch.Tensor, seen: list[int], batch_size: int = 512) -> np.ndarray:
    r"""
    The classifier's max softmax probability among the seen classes, per image.

    Args:
        unet ([`JointUNet2DModel`]): The final model, in eval mode.
        images (`torch.Tensor`): Float images in [-1, 1].
        seen (`list[int]`): The classes seen so far; the others are masked out, as in evaluation.
        batch_size (`int`, *optional*, defaults to 512): Images per forward.
    """
    confidences = []
    for chunk in images.split(batch_size):
        logits = mask_logits(unet.classify(chunk.to(unet.device, unet.dtype)).float().cpu(), seen)
        confidences.append(logits.softmax(dim=-1).max(dim=-1).values)
    return torch.cat(confidences).numpy()


def in_distribution(run_dir: Path, config: JDCLTrainingConfig, data: ClassificationData) -> dict[str, float]:
    r"""
    The final classifier's confidence on the last task's old-class rehearsal against real test images of those classes.

    Args:
        run_dir (`Path`): A finished run's folder (`task-T/` and `state/task-T/rehearsal.safetensors`).
        config ([`JDCLTrainingConfig`]): The run's configuration.
        data ([`ClassificationData`]): The data set the run used.
    """
    split = ClassIncrementalSplit.from_order(
        resolve_class_order(config.class_order, data.class_names), config.num_tasks
    )
    last = split.num_tasks - 1
    pipe = JDCLPipeline.from_pretrained(run_dir / task_revision(last + 1))
    unet = pipe.unet.eval()
    rehearsal = load_file(run_dir / "state" / task_revision(last + 1) / "rehearsal.safetensors")
    is_old = rehearsal["is_old"].bool()
    generated = rehearsal["images"][is_old].float()
    num_channels = infer_num_channels(data.train, data.image_column)
    test = prepare_tensors(
        data.test, data.image_column, data.label_column, config.resolution, num_channels, show_progress=False
    )
    real = test.subset(split.old_classes(last)).to_float()
    seen = split.classes_seen(last)
    on_rehearsal = max_confidence(unet, generated, seen)
    on_test = max_confidence(unet, real, seen)
    statistic, pvalue = ks_statistic(on_rehearsal, on_test)
    return {
        "ks_statistic": statistic,
        "ks_pvalue": pvalue,
        "mean_confidence_rehearsal": float(on_rehearsal.mean()),
        "mean_confidence_test": float(on_test.mean()),
        "num_rehearsal": int(len(on_rehearsal)),
        "num_test": int(len(on_test)),
    }


# ------------------------------------------------------------------------------------------------------ the results


def budget_differences(recorded: dict[str, Any], budget: dict[str, Any]) -> list[str]:
    r"""
    The fields in which a recorded budget differs from `budget`. A field the library gained after the recording counts
    at its default, as the recorded runs ran with it (`jdcl.config_schema.ADDED_FIELDS`).

    Args:
        recorded (`dict`): The budget a results file was recorded with.
        budget (`dict`): This invocation's budget.
    """
    added_since = {name: value for name, value in add_missing_defaults({}).items() if name in budget}
    recorded = {**added_since, **recorded}
    return sorted(k for k in set(recorded) | set(budget) if recorded.get(k) != budget.get(k))


def load_budget_results(path: Path, budget: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    r"""
    The results file at `path`, or `fresh` when there is none; refuses a file recorded with another budget.

    Args:
        path (`Path`): The results file.
        budget (`dict`): This invocation's budget.
        fresh (`dict`): A new results file (holding `budget`).
    """
    if not path.exists():
        return fresh
    results = json.loads(path.read_text())
    changed = budget_differences(results.get("budget") or {}, budget)
    if changed:
        raise SystemExit(
            f"{path} was recorded with another budget (differs in {changed}); one file holds one budget, so that "
            "every row is comparable. Pass the same budget flags, or --results another file."
        )
    return results


def load_results(path: Path, budget: dict[str, Any], quick: bool) -> dict[str, Any]:
    r"""
    The recorded results, or a fresh file; refuses a file recorded with another budget.

    Args:
        path (`Path`): The results file.
        budget (`dict`): This invocation's budget.
        quick (`bool`): Whether this is a `--quick` run.
    """
    fresh = {
        "dataset": DATASET_NAME,
        "machine": machine_summary(),
        "date": datetime.date.today().isoformat(),
        "quick": quick,
        "budget": budget,
        "rows": {},
        "gap_closure": None,
        "in_distribution": {},
    }
    results = load_budget_results(path, budget, fresh)
    if results is not fresh:
        for row, entry in results["rows"].items():
            # Rows recorded before the ablations became strategies name them by their old flags.
            recorded_fields = add_missing_defaults(entry.get("fields") or {})
            if row in all_rows() and recorded_fields != add_missing_defaults(all_rows()[row]):
                raise SystemExit(
                    f"{path} holds {row} runs with {recorded_fields}, but the row now means {all_rows()[row]} (the row or "
                    "a library default changed). Move the file aside, or --results another file."
                )
    return results


@contextlib.contextmanager
def results_lock(path: Path):
    r"""
    Holds an exclusive lock beside the results file, so that invocations running other rows at the same time (one
    per core, say) each add their finished pairs to the file instead of overwriting each other's.

    Args:
        path (`Path`): The results file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def save_results(results: dict[str, Any], path: Path) -> None:
    """Writes through a temporary file and `os.replace`: a kill never leaves a half-written results file."""
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(results, indent=2) + "\n")


def _mean(row: dict[str, Any] | None, key: str) -> float | None:
    values = (row or {}).get(key) or []
    return statistics.fmean(values) if values else None


def gap_closure(results: dict[str, Any]) -> float | None:
    """`(jdcl - finetune) / (cumulative - finetune)` on the seed means of average accuracy; `None` until all exist."""
    rows = results["rows"]
    means = {name: _mean(rows.get(name), "average_accuracy") for name in ("jdcl", "finetune", "cumulative")}
    if any(value is None for value in means.values()) or math.isclose(means["cumulative"], means["finetune"]):
        return None
    return (means["jdcl"] - means["finetune"]) / (means["cumulative"] - means["finetune"])


def record(results: dict[str, Any], row: str, seed: int, metrics: dict, wall: float, extra: dict | None) -> None:
    r"""
    Adds one finished (row, seed) to the results and updates the gap closure.

    Args:
        results (`dict`): The results, changed in place.
        row (`str`), seed (`int`): What finished.
        metrics (`dict`): `train_jdcl`'s metrics.
        wall (`float`): Seconds of the `train_jdcl` call (of this invocation only when it resumed a killed run).
        extra (`dict`, *optional*): The in-distribution figures of a rehearsal row.
    """
    # The row's own fields: the budget leaves them out, yet `jdcl`'s are library defaults that may change.
    entry = results["rows"].setdefault(
        row,
        {
            "fields": all_rows()[row],
            "average_accuracy": [],
            "forgetting": [],
            "accuracy_matrix": [],
            "wall_seconds": [],
            "seeds": [],
        },
    )
    entry["average_accuracy"].append(metrics["average_accuracy"])
    entry["forgetting"].append(metrics["forgetting"])
    entry["accuracy_matrix"].append(metrics["accuracy_matrix"])
    entry["wall_seconds"].append(wall)
    entry["seeds"].append(seed)
    # The trainer's own per-task seconds survive a kill and resume, unlike one invocation's wall clock.
    task_seconds = sum(task.get("task_total", 0.0) for task in metrics.get("stage_seconds", {}).values())
    entry.setdefault("task_seconds", []).append(task_seconds)
    if extra is not None:
        figures = results["in_distribution"].setdefault(row, {"seeds": []})
        figures["seeds"].append(seed)
        for key, value in extra.items():
            figures.setdefault(key, []).append(value)
    results["gap_closure"] = gap_closure(results)
    results["machine"] = machine_summary()
    results["date"] = datetime.date.today().isoformat()


# --------------------------------------------------------------------------------------------------------- the table


def _fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def run_seconds(entry: dict[str, Any]) -> list[float]:
    """Seconds of each seed's whole run: the trainer's task seconds, which survive a kill and resume, where recorded."""
    task_seconds = entry.get("task_seconds") or [0.0] * len(entry["wall_seconds"])
    return [max(wall, task) for wall, task in zip(entry["wall_seconds"], task_seconds)]


def targets(results: dict[str, Any]) -> list[tuple[str, str]]:
    """Each target with "met", "not met" or "pending (...)" on the seed means recorded so far."""
    rows = results["rows"]
    lines = []
    closure = results.get("gap_closure")
    if closure is not None:
        status = "met" if closure >= GAP_CLOSURE_TARGET else "not met"
    elif all(name in rows for name in ("jdcl", "finetune", "cumulative")):
        status = "undefined (cumulative and finetune have the same accuracy)"
    else:
        status = "pending (needs jdcl, finetune, cumulative)"
    shown = "—" if closure is None else f"{closure:.3f}"
    lines.append((f"gap closure {shown} >= {GAP_CLOSURE_TARGET:.2f}", status))
    jdcl_mean = _mean(rows.get("jdcl"), "average_accuracy")
    for ablation in ABLATION_ROWS:
        value = _mean(rows.get(ablation), "average_accuracy")
        if value is None or jdcl_mean is None:
            status = f"pending (needs jdcl, {ablation})"
        else:
            status = "met" if value < jdcl_mean else "not met"
        lines.append((f"{ablation} below jdcl", status))
    figures = results.get("in_distribution", {})
    ks = {name: _mean(figures.get(name), "ks_statistic") for name in ("jdcl", "separate")}
    if None in ks.values():
        status = "pending (needs jdcl, separate)"
    else:
        status = "supported" if ks["jdcl"] < ks["separate"] else "not supported"
    lines.append(("in-distribution claim: KS(jdcl) < KS(separate)", status))
    # Estimated, not timed end to end: the pairs ran in pieces, each on one thread beside other work on the machine.
    missing = missing_pairs(results, list(ROWS), list(BENCHMARK_SEEDS))
    # The target is on the benchmark's own seeds; runs of further seeds, recorded to narrow a comparison, add none.
    seconds = (
        run
        for row, entry in rows.items()
        if row in ROWS
        for seed, run in zip(entry["seeds"], run_seconds(entry))
        if seed in BENCHMARK_SEEDS
    )
    hours = sum(seconds) / 3600 / BENCHMARK_WORKERS
    name = f"whole benchmark {hours:.1f} h <= {BENCHMARK_HOURS_TARGET:.0f} h ({BENCHMARK_WORKERS} workers, recorded seconds)"
    if missing:
        status = f"pending ({len(missing)} pairs not recorded)"
    else:
        status = "met" if hours <= BENCHMARK_HOURS_TARGET else "not met"
    lines.append((name, status))
    return lines


def format_table(results: dict[str, Any]) -> str:
    """The Markdown tables of what is recorded: accuracy, forgetting, time, in-distribution figures, targets."""
    lines = [
        "| row | seeds | average accuracy | forgetting | seconds / run |",
        "|---|---|---|---|---|",
    ]
    for row in all_rows():
        entry = results["rows"].get(row)
        if entry is None and row in EXTRA_ROWS:
            continue
        if entry is None:
            lines.append(f"| {row} | — | not run | | |")
            continue
        seeds = ",".join(str(s) for s in entry["seeds"])
        lines.append(
            f"| {row} | {seeds} | {_fmt(entry['average_accuracy'])} | {_fmt(entry['forgetting'])} | "
            f"{_fmt(run_seconds(entry), digits=0)} |"
        )
    figures = results.get("in_distribution", {})
    if figures:
        lines += [
            "",
            "| row | KS(rehearsal, test) | confidence on rehearsal | confidence on test |",
            "|---|---|---|---|",
        ]
        for row, entry in figures.items():
            lines.append(
                f"| {row} | {_fmt(entry['ks_statistic'])} | {_fmt(entry['mean_confidence_rehearsal'])} | "
                f"{_fmt(entry['mean_confidence_test'])} |"
            )
    lines += ["", "| target | status |", "|---|---|"]
    lines += [f"| {name} | {status} |" for name, status in targets(results)]
    return "\n".join(lines)


def missing_pairs(results: dict[str, Any], rows: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The (row, seed) pairs of the request not yet recorded."""
    return [(row, seed) for row in rows for seed in seeds if seed not in results["rows"].get(row, {}).get("seeds", [])]


# ------------------------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", type=str, default=",".join(ROWS), help=f"Comma-separated, of {', '.join(all_rows())}."
    )
    parser.add_argument("--seeds", type=str, default=None, help="Comma-separated seeds (default 0,1; --quick: 0).")
    parser.add_argument("--results", type=Path, default=None, help=f"Results file (default {DEFAULT_RESULTS}).")
    parser.add_argument("--work_dir", type=Path, default=None, help=f"Run folders (default {DEFAULT_WORK_DIR}).")
    parser.add_argument("--dataset", type=Path, default=None, help=f"mnist-10k folder (default ${DATASET_ENV_VAR}).")
    parser.add_argument("--quick", action="store_true", help="A few steps of every row into a temporary file.")
    parser.add_argument("--print", dest="print_only", action="store_true", help="Print the recorded table only.")
    parser.add_argument("--progress", action="store_true", help="Show the trainer's progress bars.")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Run this many (row, seed) pairs at once, each in its own process with one torch thread; on the 2-core "
        "machine of benchmarks/RESULTS.md, 2 workers finish the benchmark in about half the time of one.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own; --quick: 1). On a CPU shared with other jobs, 1 thread avoids "
        "the oversubscription that made steps 6-30x slower on the 2-core machine of benchmarks/RESULTS.md.",
    )
    for name, flag_type in BUDGET_FLAGS.items():
        parser.add_argument(f"--{name}", type=flag_type, default=None, help="Budget (all rows); library default.")
    parser.add_argument(
        "--override", type=json.loads, default=None, help="Other budget fields as JSON, e.g. '{\"use_ema\": false}'."
    )
    return parser


WORKER_OWN_FLAGS = ("--rows", "--seeds", "--workers", "--threads")


def run_workers(argv: list[str], pairs: list[tuple[str, int]], workers: int) -> None:
    r"""
    Runs each (row, seed) pair as `continual.py ARGV --rows ROW --seeds SEED --threads 1` in its own process, at most
    `workers` at a time, in the order of `pairs` (that of `--rows`). Each process adds its pair to the results file
    under `results_lock`.

    Args:
        argv (`list[str]`): This invocation's arguments; the budget flags are passed on unchanged.
        pairs (`list[tuple[str, int]]`): The pairs to run.
        workers (`int`): Processes at once.
    """
    shared = []
    skip_value = False
    for argument in argv:
        if skip_value:
            skip_value = False
            continue
        if argument in WORKER_OWN_FLAGS:
            skip_value = True
            continue
        if argument.split("=", 1)[0] in WORKER_OWN_FLAGS:
            continue
        shared.append(argument)
    queue = list(pairs)
    running: list[tuple[subprocess.Popen, str, int]] = []
    failed = []
    while queue or running:
        while queue and len(running) < workers:
            row, seed = queue.pop(0)
            command = [sys.executable, str(Path(__file__).resolve()), *shared]
            command += ["--rows", row, "--seeds", str(seed), "--threads", "1"]
            logger.info(f"Worker: starting {row} seed {seed}.")
            running.append((subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}), row, seed))
        time.sleep(2)
        for entry in list(running):
            process, row, seed = entry
            if process.poll() is not None:
                running.remove(entry)
                if process.returncode != 0:
                    failed.append(f"{row}/{seed}")
                logger.info(f"Worker: {row} seed {seed} ended with exit code {process.returncode}.")
    if failed:
        raise SystemExit(f"These (row, seed) pairs failed: {', '.join(failed)}; rerun to continue them.")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    r"""
    Runs the requested (row, seed) pairs that are not recorded yet, saving after each, and prints the table.

    Args:
        argv (`list[str]`, *optional*): Command-line arguments; `sys.argv[1:]` when `None`.

    Returns:
        `dict`: the results as written.
    """
    args = build_parser().parse_args(argv)
    rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = sorted(set(rows) - set(all_rows()))
    if unknown:
        raise SystemExit(f"Unknown rows {unknown}; choose among {list(all_rows())}.")
    if args.seeds:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    else:
        seeds = [0] if args.quick else list(BENCHMARK_SEEDS)

    threads = args.threads or (1 if args.quick else None)
    if threads is not None:
        torch.set_num_threads(threads)

    overrides = {name: getattr(args, name) for name in BUDGET_FLAGS if getattr(args, name) is not None}
    overrides.update(args.override or {})
    budget = make_budget(overrides, quick=args.quick)

    # --quick never touches the recorded results or run folders unless told where to write.
    scratch = Path(tempfile.mkdtemp(prefix="jdcl-continual-quick-")) if args.quick else None
    results_path = args.results or (scratch / "continual_quick.json" if args.quick else DEFAULT_RESULTS)
    work_dir = args.work_dir or (scratch / "runs" if args.quick else DEFAULT_WORK_DIR)

    if args.print_only:
        if not results_path.exists():
            raise SystemExit(f"No results at {results_path}; run the benchmark first.")
        results = json.loads(results_path.read_text())
        print(format_table(results))
        return results

    results = load_results(results_path, budget, quick=args.quick)
    todo = missing_pairs(results, rows, seeds)
    if args.workers > 1 and len(todo) > 1:
        # --quick picks a temporary results file and run folder: hand the workers the same ones.
        worker_argv = list(sys.argv[1:] if argv is None else argv)
        worker_argv += ["--results", str(results_path), "--work_dir", str(work_dir)]
        run_workers(worker_argv, todo, args.workers)
        results = json.loads(results_path.read_text())
        todo = []
    skipped = len(rows) * len(seeds) - len(todo)
    if skipped:
        logger.info(f"{skipped} (row, seed) pairs already recorded in {results_path}; skipping them.")
    dataset_path = args.dataset or default_dataset_path()
    data = load_data(dataset_path, budget) if todo else None
    run_root = work_dir / f"budget-{budget_key(budget)}"
    for row, seed in todo:
        output_dir = run_root / f"{row}-seed{seed}"
        config = run_config(budget, all_rows()[row], seed, dataset_path, output_dir, source=f"row {row}")
        config.show_progress = args.progress
        logger.info(f"Running {row} seed {seed} in {output_dir} (resume: {config.resume_from_checkpoint}).")
        start = time.perf_counter()
        metrics = train_jdcl(config, data=data)
        wall = time.perf_counter() - start
        extra = in_distribution(output_dir, config, data) if row in REHEARSAL_ROWS else None
        with results_lock(results_path):
            # Re-read: another invocation may have recorded other pairs since this one started.
            results = load_results(results_path, budget, quick=args.quick)
            if seed in results["rows"].get(row, {}).get("seeds", []):
                logger.info(f"{row} seed {seed} was recorded by another invocation meanwhile; keeping that one.")
                continue
            record(results, row, seed, metrics, wall, extra)
            save_results(results, results_path)
        logger.info(
            f"{row} seed {seed}: average accuracy {metrics['average_accuracy']:.4f}, forgetting "
            f"{metrics['forgetting']:.4f}, {wall:.0f} s; saved to {results_path}."
        )
    if not results_path.exists():
        save_results(results, results_path)

    print(f"Results: {results_path} (budget {budget_key(budget)}, {DATASET_NAME})")
    print(format_table(results))
    missing = missing_pairs(results, list(ROWS), seeds)
    if missing:
        print(f"Missing (row, seed) pairs for seeds {seeds}: {', '.join(f'{r}/{s}' for r, s in missing)}")
    return results


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy_logger in ("httpx", "huggingface_hub", "datasets"):
        logging.getLogger(noisy_logger).setLevel(logging.WARNING)
    main()

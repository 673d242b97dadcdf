# ruff: noqa: E402
"""Which change to JDCL's global stage moves its accuracy? Replays one recorded global stage under variants.

A jdcl run keeps what its global stage of task K started from: the previous global model (`task-{K-1}/`), the local
model (`state/task-K/local/`) and the rehearsal set (`state/task-K/rehearsal.safetensors`). This script trains that
stage again through the trainer's own stage code, once per variant, and evaluates each result on every seen task:

- `recorded`: the stage as it ran. Stages are seeded by (seed, task, stage, step), so this must give the recorded
  accuracy row exactly; it checks that the replay is the run's own stage;
- `more_new_rehearsal`: `--extra_per_class` more samples of each new class from the local model;
- `more_rehearsal`: as many more of every class, each from its own generator;
- `longer`: twice the global steps;
- `student_from_local`: the student starts from the local model instead of the previous global model;
- `real_new_images`: the new classes' real training images join the generated set (the paper trains the global
  model on generated data only);
- `augment`: the paper's two augmented views (the benchmark's budget trains without them).

It also records where the recorded global model goes wrong on the new classes' real test images: accuracy among the
new classes only (telling the new classes apart) and among all seen classes (telling them from the old ones).

    python benchmarks/global_stage_probe.py --run benchmarks/runs/sweep/f600/budget-9a36dd8f35/jdcl-seed0

Each finished variant is written to `--results` at once, and a rerun skips the (run, task, variant) entries already
there.
"""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Before torch loads OpenMP: busy-waiting threads slow shared-core CPU steps up to 50x (see src/jdcl/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from continual import results_lock, save_results
from jdcl import JDCLPipeline, JointUNet2DModel
from jdcl.augment import TwoViewAugmentation
from jdcl.config import JDCLTrainingConfig
from jdcl.config_schema import normalize_legacy_keys
from jdcl.evaluation import evaluate_seen_tasks, predict
from jdcl.hub import task_revision
from jdcl.objectives import DistillationObjective
from jdcl.rehearsal import RehearsalSampler, RehearsalSet, RehearsalSource
from jdcl.stage import GLOBAL, StageRunner
from jdcl.stage_data import StageData
from jdcl.trainer import RUN_CONFIG_NAME, ContinualTrainer
from machine import machine_summary


VARIANTS = (
    "recorded",
    "more_new_rehearsal",
    "more_rehearsal",
    "longer",
    "student_from_local",
    "real_new_images",
    "augment",
)
# The default seed of the extra rehearsal, away from the run's own (seed + 1000 * task + 100 * source).
EXTRA_REHEARSAL_SEED = 777


class RecordedGlobalStage:
    r"""
    One recorded global stage of a jdcl run, ready to be trained again.

    Args:
        run_dir (`Path`): The run's `output_dir`.
        task (`int`): The task whose global stage to replay, 2 or later; the last one when `None`.
    """

    def __init__(self, run_dir: Path, task: int | None = None):
        identity = json.loads((run_dir / RUN_CONFIG_NAME).read_text())["identity"]
        values = normalize_legacy_keys(identity)
        values = {k: v for k, v in values.items() if k in JDCLTrainingConfig.field_names()}
        if values.get("strategy", "jdcl") != "jdcl" or values.get("no_distillation"):
            raise SystemExit(
                f"{run_dir} is not a jdcl run with its distilled global stage (strategy jdcl, no ablation): only "
                "that stage is replayed."
            )
        self.scratch_dir = tempfile.TemporaryDirectory(prefix="global-stage-probe-")
        values.update(output_dir=self.scratch_dir.name, logger="none", show_progress=False)
        self.config = JDCLTrainingConfig.from_dict(values, source=str(run_dir / RUN_CONFIG_NAME))
        self.trainer = ContinualTrainer(self.config)
        self.trainer.load_tensors()
        split = self.trainer.split
        self.task = task or split.num_tasks
        if not 2 <= self.task <= split.num_tasks:
            raise SystemExit(f"--task must be between 2 and {split.num_tasks}; task 1 has no global stage.")
        state_dir = run_dir / "state" / task_revision(self.task)
        needed = [run_dir / task_revision(self.task - 1), state_dir / "local", state_dir / "rehearsal.safetensors"]
        missing = [str(path) for path in needed if not path.exists()]
        if missing:
            raise SystemExit(f"{run_dir} lacks {missing}: replay a run whose task {self.task} has finished.")
        self.task_index = self.task - 1
        self.previous = JDCLPipeline.from_pretrained(needed[0]).unet.eval()
        self.local = JointUNet2DModel.from_pretrained(needed[1]).eval()
        self.rehearsal = RehearsalSet.load(needed[2])
        self.new_classes = split.new_classes(self.task_index)
        self.old_classes = split.old_classes(self.task_index)
        self.tasks = split.tasks[: self.task]
        self.recorded_dir = run_dir / task_revision(self.task)

    def accuracy_per_task(self, model: JointUNet2DModel) -> list[float]:
        return evaluate_seen_tasks(model, self.trainer.test_data, self.tasks).accuracy_per_task

    def new_class_errors(self, model: JointUNet2DModel) -> dict[str, float]:
        r"""
        The model on the new classes' real test images: accuracy among the new classes, among all seen classes, and
        the fraction it gives to an old class.
        """
        test = self.trainer.test_data.subset(self.new_classes)
        seen = [c for task in self.tasks for c in task]
        among_new = predict(model, test.images, self.new_classes)
        among_seen = predict(model, test.images, seen)
        is_old = torch.isin(among_seen, torch.tensor(self.old_classes))
        return {
            "accuracy_among_new_classes": float((among_new == test.labels).float().mean()),
            "accuracy_among_seen_classes": float((among_seen == test.labels).float().mean()),
            "called_an_old_class": float(is_old.float().mean()),
        }

    def train(self, variant: str, extra_per_class: int, extra_seed: int = EXTRA_REHEARSAL_SEED) -> JointUNet2DModel:
        r"""
        Trains the global stage again under `variant` (one of `VARIANTS`) and returns the EMA weights.

        Args:
            variant (`str`): What to change.
            extra_per_class (`int`): Extra samples per class of the `more_*` variants.
            extra_seed (`int`, *optional*): Seed of those samples (the new classes'; the old classes' is one more).
        """
        config = self.config
        trainer = self.trainer
        student = copy.deepcopy(self.previous)
        data = StageData(rehearsal=self.rehearsal)
        steps = config.global_train_steps
        augmentation = trainer.stages.augmentation
        old_source = RehearsalSource(self.previous, self.old_classes, is_old=True)
        new_source = RehearsalSource(self.local, self.new_classes, is_old=False)

        def generate(source: RehearsalSource, seed: int) -> RehearsalSet:
            return RehearsalSampler.from_config(config).generate(
                trainer.accelerator, trainer.sampling_scheduler, source, seed, extra_per_class, show_progress=False
            )

        if variant == "more_new_rehearsal":
            data = StageData(rehearsal=RehearsalSet.concatenate([self.rehearsal, generate(new_source, extra_seed)]))
        elif variant == "more_rehearsal":
            old, new = generate(old_source, extra_seed + 1), generate(new_source, extra_seed)
            data = StageData(rehearsal=RehearsalSet.concatenate([self.rehearsal, old, new]))
        elif variant == "longer":
            steps = 2 * config.global_train_steps
        elif variant == "student_from_local":
            student = copy.deepcopy(self.local)
        elif variant == "real_new_images":
            data = StageData(real=trainer.train_data.subset(self.new_classes), rehearsal=self.rehearsal)
        elif variant == "augment":
            augmentation = TwoViewAugmentation(config.resolution, trainer.num_channels, enabled=True)
        elif variant != "recorded":
            raise SystemExit(f"Unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")
        # The library's own stage: same seeding, EMA, optimizer and loss as the recorded run. No checkpoints: every
        # variant trains the same stage, and theirs would collide.
        stages = StageRunner(trainer.accelerator, config, augmentation, checkpoint_dir=None, show_progress=False)
        objective = DistillationObjective.from_config(config, old_teacher=self.previous, new_teacher=self.local)
        return stages.run(GLOBAL, self.task_index, student, data, steps, objective)


def probe(
    run_dir: Path,
    results_path: Path,
    variants: list[str],
    task: int | None = None,
    extra_per_class: int = 200,
    extra_seed: int = EXTRA_REHEARSAL_SEED,
) -> dict[str, Any]:
    r"""
    Replays the global stage of `task` in `run_dir` under each variant and records the results in `results_path`.

    Args:
        run_dir (`Path`): A finished (or far enough) jdcl run's output folder.
        results_path (`Path`): The JSON to add to; entries already there are skipped.
        variants (`list[str]`): Names from `VARIANTS`.
        task (`int`, *optional*): The task (1-based); the run's last when `None`.
        extra_per_class (`int`, *optional*, defaults to 200): Extra samples per class of the `more_*` variants.
        extra_seed (`int`, *optional*, defaults to 777): Their seed; another one measures the noise of the draw.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"Unknown variants {unknown}; choose from {', '.join(VARIANTS)}.")

    def load() -> dict[str, Any]:
        results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
        for name, value in (("extra_per_class", extra_per_class), ("extra_seed", extra_seed)):
            if results.setdefault(name, value) != value:
                raise SystemExit(
                    f"{results_path} was recorded with --{name} {results[name]}; pass that or another --results."
                )
        return results

    results = load()
    stage = RecordedGlobalStage(run_dir, task)
    key = f"{run_dir.resolve().parent.name}/{run_dir.name}/task-{stage.task}"
    recorded = results["runs"].get(key, {}).get("recorded")
    if recorded is None:
        recorded_model = JDCLPipeline.from_pretrained(stage.recorded_dir).unet.eval()
        recorded = {
            "accuracy_per_task": stage.accuracy_per_task(recorded_model),
            "new_classes": stage.new_class_errors(recorded_model),
            "local_model_new_classes": stage.new_class_errors(stage.local),
        }
    for variant in variants:
        if variant in results["runs"].get(key, {}).get("variants", {}):
            continue
        start = time.time()
        model = stage.train(variant, extra_per_class, extra_seed)
        seconds = time.time() - start
        accuracy = stage.accuracy_per_task(model)
        outcome = {"accuracy_per_task": accuracy, "average_accuracy": sum(accuracy) / len(accuracy)}
        if variant == "recorded":
            # The replay of the stage as it ran must be the recorded stage itself.
            outcome["matches_recorded_run"] = accuracy == recorded["accuracy_per_task"]
        outcome.update(new_classes=stage.new_class_errors(model), seconds=seconds)
        # Other invocations (one per run, say) may have added theirs meanwhile: add to the file as it is now.
        with results_lock(results_path):
            results = load()
            entry = results["runs"].setdefault(key, {"recorded": recorded, "variants": {}})
            entry["variants"][variant] = outcome
            results["machine"] = machine_summary()
            results["date"] = datetime.date.today().isoformat()
            save_results(results, results_path)
        print(
            f"{key} {variant}: " + " ".join(f"{a:.3f}" for a in accuracy) + f"  mean {outcome['average_accuracy']:.4f}"
        )
    return results


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one row per (run, variant), with the final row of accuracies and how new-class errors go."""
    lines = [
        "| run | variant | accuracy per task | mean | new classes among new / among seen |",
        "|---|---|---|---:|---|",
    ]
    for key, entry in results["runs"].items():
        for name, row in [("(the recorded run)", entry["recorded"]), *entry["variants"].items()]:
            accuracy = row["accuracy_per_task"]
            mean = sum(accuracy) / len(accuracy)
            new = row["new_classes"]
            lines.append(
                f"| {key} | {name} | {' '.join(f'{a:.3f}' for a in accuracy)} | {mean:.4f} | "
                f"{new['accuracy_among_new_classes']:.3f} / {new['accuracy_among_seen_classes']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", help="A jdcl run's output folder (repeatable).")
    parser.add_argument("--task", type=int, default=None, help="The task whose global stage to replay; the last one.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated, from {', '.join(VARIANTS)}.")
    parser.add_argument("--extra_per_class", type=int, default=200, help="Extra samples per class (more_* variants).")
    parser.add_argument("--extra_seed", type=int, default=EXTRA_REHEARSAL_SEED, help="Seed of the extra samples.")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "global_stage_probe.json",
        help="The JSON to add to.",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--print", action="store_true", help="Print the table of what --results holds and stop.")
    args = parser.parse_args(argv)
    if args.print:
        print(format_table(json.loads(args.results.read_text())))
        return
    if not args.run:
        parser.error("pass --run RUN_DIR (or --print)")
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    for run_dir in args.run:
        results = probe(run_dir, args.results, variants, args.task, args.extra_per_class, args.extra_seed)
    print(format_table(results))


if __name__ == "__main__":
    main()

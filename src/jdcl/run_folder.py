"""A run's output folder: who may write into it, and everything it holds, each written atomically.

<output_dir>/
  run_config.json          the run's identity and configuration (a folder holds one run)
  metrics.json             the accuracy matrix and its summaries, stage times, rehearsal counts
  accuracy_matrix.png      the heatmap, redrawn after every task
  samples/task-K.png       per-class sample grids
  task-K/                  the pipeline after task K (model_index.json, unet/, scheduler/, README.md)
  state/task-K/            what a resumed run reuses (a local model, the rehearsal set, a generator)
  checkpoints/task-K-S/    accelerate checkpoints of stage S, removed once task K is saved
  logs/                    tensorboard
"""

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import filelock
import PIL.Image

from .atomic import atomic_directory, write_json
from .config import add_missing_defaults
from .metrics import AccuracyMatrix
from .pipelines.pipeline_jdcl import JDCLPipeline
from .plotting import plot_accuracy_matrix, save_image_atomically


RUN_CONFIG_NAME = "run_config.json"
METRICS_NAME = "metrics.json"
LOCK_NAME = ".jdcl.lock"
LABELED_EXAMPLES_NAME = "labeled_examples.json"


class RunFolder:
    r"""
    The paths of a run's output folder, and the writes and checks that keep it consistent.

    Args:
        output_dir (`str` or `Path`): The run's `--output_dir`.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir)
        self.state_dir = self.path / "state"
        self.checkpoint_dir = self.path / "checkpoints"

    def task_dir(self, task_index: int) -> Path:
        """The pipeline folder of a task (from 0): `task-K`, K from 1."""
        return self.path / f"task-{task_index + 1}"

    def has_task(self, task_index: int) -> bool:
        return (self.task_dir(task_index) / "model_index.json").is_file()

    def holds_results(self) -> bool:
        """Whether the folder holds anything a run would lose: a task folder, a stage checkpoint or kept state."""
        if any(self.path.glob("task-*")) or any(self.checkpoint_dir.glob("*/checkpoint-*")):
            return True
        return self.state_dir.is_dir() and any(path.is_file() for path in self.state_dir.rglob("*"))

    def check(self, identity: dict, resume: bool) -> bool:
        r"""
        Refuses a folder that holds results of another run, or of this run without `--resume_from_checkpoint`.

        Args:
            identity (`dict`): What defines the experiment (see [`JDCLTrainingConfig.run_identity`]).
            resume (`bool`): Whether the run continues what the folder holds.

        Returns:
            `bool`: whether the folder is claimed afresh (its `run_config.json`, if any, is then replaced). A folder
            whose run failed before finishing a task or writing a checkpoint may be claimed by another configuration.
        """
        run_config_path = self.path / RUN_CONFIG_NAME
        if not self.holds_results():
            return True
        if not run_config_path.exists():
            raise ValueError(
                f"{self.path} holds task folders or checkpoints but no {RUN_CONFIG_NAME}; it is not a jdcl run of this "
                "configuration. Choose another --output_dir."
            )
        previous = add_missing_defaults(json.loads(run_config_path.read_text()).get("identity") or {})
        if previous != identity:
            changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            raise ValueError(
                f"{self.path} holds a run of another configuration (differs in {changed}). Choose another "
                "--output_dir, or remove that folder."
            )
        if not resume:
            raise ValueError(
                f"{self.path} already holds this run. Pass --resume_from_checkpoint latest to continue it, "
                "or choose another --output_dir."
            )
        return False

    def check_resume_target(self, resume_from_checkpoint: str | None) -> None:
        r"""
        Refuses a `--resume_from_checkpoint` that is neither `latest` nor a stage checkpoint of this folder.

        Args:
            resume_from_checkpoint (`str`, *optional*): The flag's value.
        """
        if resume_from_checkpoint in (None, "latest"):
            return
        path = Path(resume_from_checkpoint)
        is_checkpoint = (
            path.is_dir()
            and re.fullmatch(r"checkpoint-\d+", path.name) is not None
            and (path / "stage_state.json").is_file()
            and path.resolve().parent.parent == self.checkpoint_dir.resolve()
        )
        if not is_checkpoint:
            found = sorted(str(p) for p in self.checkpoint_dir.glob("*/checkpoint-*") if p.is_dir())
            raise ValueError(
                f"--resume_from_checkpoint {resume_from_checkpoint} is not a stage checkpoint of this run (a folder "
                f"{self.checkpoint_dir}/task-K-<stage>/checkpoint-N); pass 'latest' to continue where the run stopped"
                + (f", or one of {found}." if found else ".")
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the folder for one live run; a second run into it is refused. The OS releases it if the run dies."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path / LOCK_NAME, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ValueError(
                f"Another jdcl run is live in {self.path} (it holds {self.path / LOCK_NAME}). Wait for it to end, or "
                "choose another --output_dir."
            ) from None
        try:
            yield
        finally:
            lock.release()

    def write_run_config(self, identity: dict, config: dict, replace: bool = False) -> None:
        """Claims the folder for this run (once, unless `replace`: a resumed run keeps the first record)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if replace or not (self.path / RUN_CONFIG_NAME).exists():
            write_json({"identity": identity, "config": config}, self.path / RUN_CONFIG_NAME)

    def write_labeled_examples(self, labeled, labels) -> None:
        r"""
        Records which training examples keep their labels (semi-supervised): their indices in the training split.

        Args:
            labeled (`np.ndarray`): One bool per training example.
            labels (`np.ndarray`): The class of every training example.
        """
        kept = labels[labeled]
        write_json(
            {
                "labeled_indices": [int(i) for i in labeled.nonzero()[0]],
                "per_class": {str(int(c)): int((kept == c).sum()) for c in sorted(set(labels.tolist()))},
                "num_train_examples": len(labeled),
            },
            self.path / LABELED_EXAMPLES_NAME,
        )

    def write_task_record(self, task_index: int, record: dict) -> None:
        """Keeps what metrics.json says of a task in `state/task-K/record.json`, written before the task folder."""
        write_json(record, self.state_dir / self.task_dir(task_index).name / "record.json")

    def read_task_record(self, task_index: int) -> dict | None:
        path = self.state_dir / self.task_dir(task_index).name / "record.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def load_metrics(self, resume: bool) -> dict:
        """What `metrics.json` holds when resuming, else an empty record."""
        path = self.path / METRICS_NAME
        metrics = json.loads(path.read_text()) if resume and path.exists() else {}
        for key, empty in (("accuracy_matrix", []), ("accuracy_seen", []), ("stage_seconds", {}), ("rehearsal", {})):
            metrics.setdefault(key, empty)
        return metrics

    def write_metrics(self, metrics: dict, accuracy_matrix: AccuracyMatrix, title: str) -> None:
        """Writes `metrics.json` and redraws the accuracy-matrix heatmap."""
        write_json(metrics, self.path / METRICS_NAME)
        plot_accuracy_matrix(accuracy_matrix.to_list(), self.path / "accuracy_matrix.png", title=title)

    def save_task(self, task_index: int, pipeline: JDCLPipeline, grid: PIL.Image.Image | None, model_card) -> Path:
        r"""
        Writes the pipeline of a task with its model card and sample grid, as one atomic folder.

        Args:
            task_index (`int`): The task, from 0.
            pipeline ([`JDCLPipeline`]): The model after the task, with its classes recorded.
            grid (`PIL.Image.Image`, *optional*): The per-class sample grid.
            model_card (`huggingface_hub.ModelCard`): The task's model card.
        """
        task_dir = self.task_dir(task_index)
        with atomic_directory(task_dir) as temporary:
            pipeline.save_pretrained(temporary)
            if grid is not None:
                save_image_atomically(grid, temporary / "samples.png")
            model_card.save(str(temporary / "README.md"))
        if grid is not None:
            save_image_atomically(grid, self.path / "samples" / f"{task_dir.name}.png")
        return task_dir

    def remove_stage_checkpoints(self, task_index: int) -> None:
        """Once a task is saved, its stages' checkpoints are no longer needed to resume."""
        for stage_checkpoints in self.checkpoint_dir.glob(f"{self.task_dir(task_index).name}-*"):
            shutil.rmtree(stage_checkpoints, ignore_errors=True)

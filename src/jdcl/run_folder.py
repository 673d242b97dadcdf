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
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import filelock
import PIL.Image
from accelerate import PartialState

from .atomic import atomic_directory, write_json
from .config_schema import add_missing_defaults, ran_earlier_semi_supervised_stage
from .metrics import AccuracyMatrix
from .paths import check_writable_folder, read_json
from .pipelines.pipeline_jdcl import JDCLPipeline
from .plotting import plot_accuracy_matrix, save_image_atomically


logger = logging.getLogger(__name__)

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
        Refuses a folder that cannot be written, that a live run holds, that holds anything but a jdcl run (the
        user's own files are never overwritten), or that holds results of another run, or of this run without
        `--resume_from_checkpoint`.

        Args:
            identity (`dict`): What defines the experiment (see [`JDCLTrainingConfig.run_identity`]).
            resume (`bool`): Whether the run continues what the folder holds.

        Returns:
            `bool`: whether the folder is claimed afresh (its `run_config.json`, if any, is then replaced). A folder
            whose run failed before finishing a task or writing a checkpoint may be claimed by another configuration.
        """
        check_writable_folder(self.path, "--output_dir")
        self._check_not_live()
        recorded = self.read_run_config()
        if recorded is None:
            others = sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME) if self.path.is_dir() else []
            if others:
                shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
                raise ValueError(
                    f"--output_dir {self.path} is not empty ({shown}) and holds no jdcl run (it has no "
                    f"{RUN_CONFIG_NAME} of one). A run writes only into an empty folder or one of its own runs, so as "
                    "not to overwrite files; choose another --output_dir, or empty this one."
                )
            return True
        if not self.holds_results():
            return True
        if ran_earlier_semi_supervised_stage(recorded["identity"]):
            raise ValueError(
                f"{self.path} holds a few-label run of an earlier jdcl version, whose semi-supervised stage differed "
                "(its diffusion loss also saw the labelled batch, with other views); this version cannot continue it. "
                "Start the run again in another --output_dir, or finish it with the jdcl version that began it."
            )
        previous = add_missing_defaults(recorded["identity"])
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

    def read_run_config(self) -> dict | None:
        """The folder's `run_config.json` (`None` when it has none); refuses one that is not a jdcl run's record."""
        path = self.path / RUN_CONFIG_NAME
        if not path.exists():
            return None
        recorded = read_json(path, "Restore it if it was a jdcl run's record, or choose another --output_dir")
        if not isinstance(recorded, dict) or not isinstance(recorded.get("identity"), dict):
            raise ValueError(
                f"{path} is not the record of a jdcl run (it has no `identity`); it may be a file of your own. A run "
                "writes only into an empty folder or one of its own runs: choose another --output_dir."
            )
        return recorded

    def _live_run_error(self) -> ValueError:
        return ValueError(
            f"Another jdcl run is live in {self.path} (it holds {self.path / LOCK_NAME}). Wait for it to end, or "
            "choose another --output_dir."
        )

    def _check_not_live(self) -> None:
        # Said first: whatever else the folder holds, a second run must not touch it while the first is live. Only the
        # main process asks: it takes the lock when it starts training, maybe before the others have checked.
        lock_path = self.path / LOCK_NAME
        if not lock_path.is_file() or not PartialState().is_main_process:
            return
        probe = filelock.FileLock(lock_path, timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            raise self._live_run_error() from None
        probe.release()

    def check_resume_target(self, resume_from_checkpoint: str | None) -> None:
        r"""
        Refuses a `--resume_from_checkpoint` that is neither `latest` nor a stage checkpoint of this folder; says so
        when `latest` finds nothing to continue.

        Args:
            resume_from_checkpoint (`str`, *optional*): The flag's value.
        """
        if resume_from_checkpoint == "latest" and not self.holds_results():
            logger.warning(
                f"--resume_from_checkpoint latest: {self.path} holds no checkpoint or finished task to continue; "
                "starting a new run."
            )
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
            raise self._live_run_error() from None
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
        if not path.is_file():
            return None
        # Without it the task is evaluated again: the accuracies are those the record kept.
        return read_json(path, "Remove it and resume again; the finished task is then evaluated again")

    def load_metrics(self, resume: bool) -> dict:
        """What `metrics.json` holds when resuming, else an empty record."""
        path = self.path / METRICS_NAME
        metrics = {}
        if resume and path.exists():
            fix = "Remove it and resume again; it is rebuilt from the finished tasks (their state/task-K/record.json)"
            metrics = read_json(path, fix)
            if not isinstance(metrics, dict):
                raise ValueError(f"{path} does not hold a jdcl metrics record (a JSON object). {fix}.")
        for key, empty in (("accuracy_matrix", []), ("accuracy_seen", []), ("stage_seconds", {}), ("rehearsal", {})):
            metrics.setdefault(key, empty)
        return metrics

    def write_metrics(self, metrics: dict, accuracy_matrix: AccuracyMatrix, title: str) -> None:
        """Writes `metrics.json` and redraws the accuracy-matrix heatmap."""
        write_json(metrics, self.path / METRICS_NAME)
        # The matrix itself, not its JSON form: an accuracy not measured is NaN there, null in JSON.
        plot_accuracy_matrix(accuracy_matrix, self.path / "accuracy_matrix.png", title=title)

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

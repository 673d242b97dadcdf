"""A stage's checkpoints: saved atomically through accelerate with the stage's step and EMA, and resumed, falling back
to the previous complete checkpoint when the newest is damaged."""

import json
import logging
import pickle
import shutil
import warnings
from pathlib import Path

from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError

from .atomic import replace_directory, write_json
from .models.joint_unet_2d import JointUNet2DModel


logger = logging.getLogger(__name__)

# What loading a checkpoint with a file cut short or overwritten raises: safetensors, torch's zip reader, pickle, JSON.
DAMAGED_CHECKPOINT_ERRORS = (
    SafetensorError,
    OSError,
    EOFError,
    RuntimeError,
    pickle.UnpicklingError,
    ValueError,
    KeyError,
)


class StageCheckpoints:
    r"""
    The checkpoints of a run's stages, `<directory>/task-K-<stage>/checkpoint-N`, every `config.checkpointing_steps`
    (at most `config.checkpoints_total_limit` kept), resumed with `config.resume_from_checkpoint`.

    Args:
        accelerator (`Accelerator`): The run's accelerator, which saves and loads the training state.
        config ([`JDCLTrainingConfig`]): The checkpoint and resume settings.
        directory (`Path`, *optional*): Where they go; none are written when `None`.
    """

    def __init__(self, accelerator: Accelerator, config, directory: Path | None):
        self.accelerator = accelerator
        self.config = config
        self.directory = directory

    def root(self, task_index: int, stage_name: str) -> Path:
        """The folder of one stage's checkpoints."""
        return self.directory / f"task-{task_index + 1}-{stage_name}"

    def register_hooks(self, ema: EMAModel | None, progress_state: dict) -> list:
        # Accelerate saves the model, optimizer and RNG states; these hooks add the stage's step and its EMA
        # (through `EMAModel.save_pretrained`, safetensors), as diffusers' training examples do.
        def save_hook(models, weights, output_dir):
            if self.accelerator.is_main_process:
                write_json({"step": progress_state["step"]}, Path(output_dir) / "stage_state.json")
                if ema is not None:
                    ema.save_pretrained(Path(output_dir) / "unet_ema")

        def load_hook(models, input_dir):
            state_path = Path(input_dir) / "stage_state.json"
            if not state_path.is_file():
                raise ValueError(
                    f"{input_dir} is not a jdcl stage checkpoint (it has no stage_state.json); it may come from an "
                    "earlier jdcl version, whose stage checkpoints do not resume. Remove it to start the stage over."
                )
            progress_state["step"] = json.loads(state_path.read_text())["step"]
            if ema is not None:
                with warnings.catch_warnings():
                    # diffusers' own `EMAModel.from_pretrained` calls a `from_config` form it has deprecated.
                    warnings.simplefilter("ignore", FutureWarning)
                    loaded = EMAModel.from_pretrained(
                        Path(input_dir) / "unet_ema", model_cls=JointUNet2DModel, foreach=True
                    )
                ema.load_state_dict(loaded.state_dict())
                ema.to(self.accelerator.device)

        return [
            self.accelerator.register_save_state_pre_hook(save_hook),
            self.accelerator.register_load_state_pre_hook(load_hook),
        ]

    def to_resume(self, task_index: int, stage_name: str) -> Path | None:
        resume = self.config.resume_from_checkpoint
        if resume is None or self.directory is None:
            return None
        root = self.root(task_index, stage_name)
        if resume != "latest":
            path = Path(resume)
            if not path.is_dir():
                raise ValueError(f"--resume_from_checkpoint {resume} is not a folder; pass 'latest' or a checkpoint.")
            return path if path.parent == root else None
        checkpoints = self.listed(root)
        return checkpoints[-1] if checkpoints else None

    @staticmethod
    def listed(root: Path) -> list[Path]:
        """The checkpoints of a stage, oldest first."""
        checkpoints = (
            [p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()] if root.exists() else []
        )
        return sorted(checkpoints, key=lambda p: int(p.name.split("-")[-1]))

    def load(self, task_index: int, stage_name: str, checkpoint: Path) -> Path:
        """Loads `checkpoint`, or with `latest` the newest complete one before it when it is damaged; returns it."""
        candidates = [checkpoint]
        if self.config.resume_from_checkpoint == "latest":
            earlier = self.listed(self.root(task_index, stage_name))
            candidates = [checkpoint, *reversed([p for p in earlier if p != checkpoint])]
        for index, candidate in enumerate(candidates):
            try:
                # Each load replaces the whole state (model, optimizer, EMA, RNG, step): a failed one leaves nothing.
                self.accelerator.load_state(str(candidate))
                return candidate
            except DAMAGED_CHECKPOINT_ERRORS as error:
                if index + 1 < len(candidates):
                    logger.warning(
                        f"Stage checkpoint {candidate} is damaged and cannot be loaded ({type(error).__name__}: "
                        f"{error}); resuming from the one before it, {candidates[index + 1]}."
                    )
                    continue
                fix = (
                    f"Remove {self.root(task_index, stage_name)} to start the stage over"
                    if self.config.resume_from_checkpoint == "latest"
                    else "Remove it, or pass --resume_from_checkpoint latest"
                )
                raise ValueError(
                    f"Stage checkpoint {candidate} is damaged and cannot be loaded ({type(error).__name__}: {error}). "
                    f"{fix}."
                ) from None

    def save(self, task_index: int, stage_name: str, step: int) -> None:
        if self.directory is None:
            return
        root = self.root(task_index, stage_name)
        final = root / f"checkpoint-{step}"
        # Every process writes its RNG state into the same temporary folder; the main process moves it into place. Its
        # name does not match `checkpoint-*`, so nothing takes a half-written checkpoint for a finished one.
        temporary = root / f"tmp-checkpoint-{step}"
        if self.accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(temporary))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            replace_directory(temporary, final)
            checkpoints = self.listed(root)
            for stale in checkpoints[: max(0, len(checkpoints) - self.config.checkpoints_total_limit)]:
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()

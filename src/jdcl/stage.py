"""One training stage: a model, its data, a number of steps and an objective in; the trained (EMA) model out.

The stage runner owns what every stage of every method shares: accelerate preparation, the optimizer, EMA, seeded
batches, augmentation and noise, checkpoints and their resume (`stage_checkpoints.py`), progress bars and logging.
"""

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor
from torch.profiler import record_function
from tqdm.auto import tqdm

from .atomic import write_json
from .augment import TwoViewAugmentation
from .compilation import compile_kwargs, memory_format
from .labels import count_pseudo_labels, pseudo_label_record, pseudo_label_scalars
from .models.joint_unet_2d import JointUNet2DModel
from .objectives import JointForward, StageObjective, StageOutputs
from .schedulers import noise_scheduler_from_config
from .stage_checkpoints import StageCheckpoints
from .stage_data import StageBatch, StageData


logger = logging.getLogger(__name__)

# Where the run's count of stage steps is kept (in the checkpoint folder) for a resumed run.
GLOBAL_STEP_NAME = "global_step.json"


@dataclass(frozen=True)
class Stage:
    r"""
    A kind of training stage of a method.

    Args:
        name (`str`): Its name in logs, checkpoint folders and `metrics.json` (`"local"`, `"global"`, ...).
        seed_id (`int`): Enters the seed of its batches, so that two stages of one task never share their noise.
            Every stage of a method needs its own.
    """

    name: str
    seed_id: int


LOCAL = Stage("local", 1)
GLOBAL = Stage("global", 2)


class StageRunner:
    r"""
    Trains a model for one stage: AdamW, EMA, two augmented views, seeded batches and noise, checkpoints every
    `config.checkpointing_steps` (resumed with `config.resume_from_checkpoint`), a progress bar and logged terms.

    Args:
        accelerator (`Accelerator`): The run's accelerator.
        config ([`JDCLTrainingConfig`]): The optimizer, EMA, batch, checkpoint and seed settings.
        augmentation ([`TwoViewAugmentation`]): Makes the diffusion and classifier views of a batch.
        checkpoint_dir (`Path`, *optional*): Where stage checkpoints go (`<dir>/task-K-<stage>/checkpoint-N`); none
            are written when `None`.
        show_progress (`bool`, *optional*, defaults to `True`): Progress bars on the local main process.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        config,
        augmentation: TwoViewAugmentation,
        checkpoint_dir: Path | None = None,
        show_progress: bool = True,
    ):
        self.accelerator = accelerator
        self.config = config
        self.augmentation = augmentation
        self.checkpoint_dir = checkpoint_dir
        self.checkpoints = StageCheckpoints(accelerator, config, checkpoint_dir)
        self.show_progress = show_progress and accelerator.is_local_main_process
        self.noise_scheduler = noise_scheduler_from_config(config)
        self.memory_format = memory_format(config.channels_last)
        # Semi-supervised stages: the pseudo-labels of each task (by index), one record per logging interval.
        self.pseudo_label_records: dict[int, list[dict]] = {}
        # Steps of the run's stages so far: each stage logs from there, so that logged steps never restart. A resumed
        # run continues the count its stages had reached (stages it does not train again are counted in it).
        self.global_step = 0
        if config.resume_from_checkpoint is not None and checkpoint_dir is not None:
            global_step_path = Path(checkpoint_dir) / GLOBAL_STEP_NAME
            if global_step_path.is_file():
                self.global_step = json.loads(global_step_path.read_text())["global_step"]

    def stage_seed(self, task_index: int, stage: Stage, step: int) -> int:
        """The seed of one step's batch, noise and dropout, on this process."""
        return (self.config.seed * 1_000_003 + task_index * 10_007 + stage.seed_id * 1_009 + step) * 97 + (
            self.accelerator.process_index
        )

    def run(
        self,
        stage: Stage,
        task_index: int,
        model: JointUNet2DModel,
        data: StageData,
        num_steps: int,
        objective: StageObjective,
        stage_seconds: dict[str, float] | None = None,
    ) -> JointUNet2DModel:
        r"""
        Trains `model` for `num_steps` on `data` against `objective`.

        Args:
            stage ([`Stage`]): Which stage (names its checkpoints, logs and seeds).
            task_index (`int`): The task, from 0.
            model ([`JointUNet2DModel`]): The model to train (trained in place).
            data ([`StageData`]): What batches are drawn from.
            num_steps (`int`): Optimizer steps.
            objective ([`StageObjective`]): The loss, with its teachers (a built-in objective or a method's own).
            stage_seconds (`dict[str, float]`, *optional*): Where to add the stage's wall time under its name.

        Returns:
            [`JointUNet2DModel`]: a copy with the EMA weights (or the trained ones without EMA), frozen, in eval mode.
        """
        start_time = time.time()
        config, accelerator = self.config, self.accelerator
        model = model.to(accelerator.device, memory_format=self.memory_format).train().requires_grad_(True)
        # Parts that no term reaches are not run; frozen, they are no unused parameters for DDP either.
        if not objective.predict_noise:
            for module in model.decoder_modules():
                module.requires_grad_(False)
        if not objective.classify:
            model.classifier.requires_grad_(False)
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        # The training step itself is compiled by `accelerator.prepare` when its dynamo plugin says so.
        objective.to(accelerator.device, self.memory_format, compile_kwargs(accelerator))
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
            # One update over all tensors, never a loop per tensor: that loop dominates the step of small models.
            foreach=not config.adam_fused,
            fused=config.adam_fused,
        )
        ema = None
        if config.use_ema:
            ema = EMAModel(
                model.parameters(),
                decay=config.ema_decay,
                use_ema_warmup=config.ema_warmup,
                power=config.ema_power,
                foreach=True,
                model_cls=JointUNet2DModel,
                model_config=model.config,
            )
            ema.to(accelerator.device)
        joint_module, optimizer = accelerator.prepare(
            JointForward(model, predict_noise=objective.predict_noise, classify=objective.classify), optimizer
        )
        progress_state = {"step": 0}
        hooks = self.checkpoints.register_hooks(ema, progress_state)
        try:
            checkpoint = self.checkpoints.to_resume(task_index, stage.name)
            if checkpoint is not None:
                checkpoint = self.checkpoints.load(task_index, stage.name, checkpoint)
                logger.info(
                    f"Resuming task {task_index + 1} {stage.name} stage from {checkpoint} "
                    f"(step {progress_state['step']})."
                )
            self._train(
                stage, task_index, model, joint_module, optimizer, ema, data, num_steps, objective, progress_state
            )
        finally:
            for hook in hooks:
                hook.remove()
        self.global_step += num_steps
        if self.checkpoint_dir is not None and accelerator.is_main_process:
            write_json({"global_step": self.global_step}, Path(self.checkpoint_dir) / GLOBAL_STEP_NAME)

        trained = accelerator.unwrap_model(joint_module).unet
        accelerator.free_memory()
        result = copy.deepcopy(trained)
        if ema is not None:
            ema.copy_to(result.parameters())
        if config.gradient_checkpointing:
            result.disable_gradient_checkpointing()
        result.to(memory_format=torch.contiguous_format)
        if stage_seconds is not None:
            stage_seconds[stage.name] = stage_seconds.get(stage.name, 0.0) + time.time() - start_time
        return result.eval().requires_grad_(False)

    def _train(
        self, stage, task_index, model, joint_module, optimizer, ema, data, num_steps, objective, progress_state
    ):
        config, accelerator = self.config, self.accelerator
        device = accelerator.device
        start_step = progress_state["step"]
        progress = tqdm(
            range(num_steps),
            initial=start_step,
            total=num_steps,
            desc=f"Task {task_index + 1} {stage.name}",
            disable=not self.show_progress,
        )
        # Throughput over the steps since the last log (read after the losses, which wait for the device).
        last_log_step, last_log_time = start_step, time.perf_counter()
        # Semi-supervised: the pseudo-labels since the last log, counted on the device (see `_count_pseudo_labels`).
        pseudo_label_counts = None
        unlabeled_classes = data.unlabeled_classes
        for step in range(start_step, num_steps):
            # 1. Seed the step: its batch, noise, timesteps and dropout depend on the step alone. (The `record_function`
            #    ranges name the parts of a step in a profile, as benchmarks/stage_speed.py reads them.)
            with record_function("jdcl.batch"):
                seed = self.stage_seed(task_index, stage, step)
                torch.manual_seed(seed)
                generator = torch.Generator().manual_seed(seed)
                batch = data.sample(config.train_batch_size, generator, device)
                # Noise and timesteps are drawn on the device that uses them (a GPU draws them in microseconds, the
                # host in milliseconds, plus a copy); on a CPU they continue the batch's stream, as they always have.
                noise_generator = generator if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
            with accelerator.accumulate(joint_module):
                # 2. The views: one noised for the diffusion loss, one clean for the classifier (semi-supervised: see
                #    `_semi_supervised_views`).
                with record_function("jdcl.views"):
                    if batch.unlabeled_images is None:
                        diffusion_view, classifier_view = self.augmentation(batch.images)
                        clean_view, weak_view = classifier_view, None
                    else:
                        diffusion_view, classifier_view, weak_view, strong_view = self._semi_supervised_views(
                            batch, objective.classify
                        )
                        clean_view = (
                            classifier_view if weak_view is None else torch.cat([classifier_view, strong_view])
                        )
                    noise = randn_tensor(diffusion_view.shape, generator=noise_generator, device=device)
                    timesteps = torch.randint(
                        0,
                        self.noise_scheduler.config.num_train_timesteps,
                        (len(diffusion_view),),
                        generator=noise_generator,
                        device=device,
                    )
                    noisy = self.noise_scheduler.add_noise(diffusion_view, noise, timesteps)
                    noisy = noisy.contiguous(memory_format=self.memory_format)
                    clean_view = clean_view.contiguous(memory_format=self.memory_format)
                # 3. The outputs the objective reads, and its loss.
                with record_function("jdcl.forward"), accelerator.autocast():
                    noise_pred, logits = joint_module(noisy, timesteps, clean_view)
                    unlabeled_logits = weak_logits = None
                    if weak_view is not None:
                        logits, unlabeled_logits = logits[: len(batch.labels)], logits[len(batch.labels) :]
                        with torch.no_grad():
                            weak_logits = model.classify(weak_view)
                        # Only a FixMatch-style objective pseudo-labels; a method's own objective may not.
                        if hasattr(objective, "pseudo_labels"):
                            pseudo_label_counts = count_pseudo_labels(
                                pseudo_label_counts,
                                *objective.pseudo_labels(weak_logits),
                                batch.unlabeled_labels,
                                model.config.num_classes,
                            )
                    terms = objective(
                        StageOutputs(
                            noise_pred=noise_pred,
                            logits=logits,
                            noise=noise,
                            labels=batch.labels,
                            is_old=batch.is_old,
                            noisy_sample=noisy,
                            timesteps=timesteps,
                            clean_sample=classifier_view,
                            step=step,
                            unlabeled_logits=unlabeled_logits,
                            weak_logits=weak_logits,
                            fields=batch.fields,
                        )
                    )
                # 4. The update, then the EMA.
                with record_function("jdcl.backward"):
                    accelerator.backward(terms["loss"])
                with record_function("jdcl.optimizer"):
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(joint_module.parameters(), config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients and ema is not None:
                with record_function("jdcl.ema"):
                    ema.step(model.parameters())
            progress.update(1)
            # 5. Log the terms now and then (reading them back waits for the device), checkpoint on schedule.
            if step % 10 == 0 or step == num_steps - 1:
                values = {name: float(value.detach()) for name, value in terms.items()}
                now = time.perf_counter()
                values["steps_per_second"] = (step + 1 - last_log_step) / max(now - last_log_time, 1e-9)
                values["images_per_second"] = values["steps_per_second"] * len(noisy) * accelerator.num_processes
                last_log_step, last_log_time = step + 1, now
                if pseudo_label_counts is not None:
                    values.update(
                        self._record_pseudo_labels(pseudo_label_counts, unlabeled_classes, stage, task_index, step)
                    )
                    pseudo_label_counts = None
                progress.set_postfix(loss=f"{values['loss']:.4f}")
                accelerator.log(
                    {f"task_{task_index + 1}/{stage.name}/{name}": value for name, value in values.items()},
                    step=self.global_step + step,
                )
            progress_state["step"] = step + 1
            if (step + 1) % config.checkpointing_steps == 0 and step + 1 < num_steps:
                self.checkpoints.save(task_index, stage.name, step + 1)
        progress.close()

    # ------------------------------------------------------------------------------------------ semi-supervised

    def _semi_supervised_views(
        self, batch: StageBatch, classify: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        r"""
        The views of a semi-supervised step, as the authors' `DiffMatchFixed.training_step`
        (`models/standard_diffusion/diff_match.py`) takes them from its dataloader (configs `diffmatch_pooling`): the
        diffusion loss sees the unlabelled batch alone (its diffusion view, with `augment`); the classifier sees the
        weak views of the labelled images, and pseudo-labels the weak views of the unlabelled ones to learn their
        strong views. Without a classification term (`--classification_loss_weight 0`) no classifier view is made.

        Returns:
            `(diffusion_view, classifier_view, weak_view, strong_view)`; the last two `None` without classification.
        """
        augmentation, unlabeled = self.augmentation, batch.unlabeled_images
        diffusion_view = augmentation.diffusion_view(unlabeled) if augmentation.enabled else unlabeled
        if not classify:
            return diffusion_view, batch.images, None, None
        weak_view, strong_view = augmentation.weak_view(unlabeled), augmentation.strong_view(unlabeled)
        return diffusion_view, augmentation.weak_view(batch.images), weak_view, strong_view

    def _record_pseudo_labels(
        self, counts: torch.Tensor, unlabeled_classes: torch.Tensor, stage: Stage, task_index: int, step: int
    ) -> dict[str, float]:
        # Summed over all processes, kept in `pseudo_label_records` (the trainer stores them per task), and logged.
        record = pseudo_label_record(self.accelerator.reduce(counts, reduction="sum"), stage.name, step)
        self.pseudo_label_records.setdefault(task_index, []).append(record)
        return pseudo_label_scalars(record, unlabeled_classes)

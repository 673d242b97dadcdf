"""The continual trainer: JDCL (local stage, rehearsal, two-teacher global stage) and its baselines over all tasks."""

import copy
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .augment import TwoViewAugmentation
from .config import JDCLTrainingConfig
from .data import (
    BUNDLED_DATASET_NAME,
    ClassificationData,
    TensorData,
    infer_num_channels,
    load_classification_dataset,
    prepare_tensors,
)
from .evaluation import evaluate_seen_tasks
from .hub import TaskHubUploader, task_revision
from .losses import DistillationLossWeights, JointLossWeights, distillation_loss, joint_loss
from .metrics import AccuracyMatrix
from .model_card import make_task_model_card
from .models.joint_unet_2d import JointUNet2DModel
from .pipelines.pipeline_jdcl import JDCLPipeline
from .plotting import make_class_grid, plot_accuracy_matrix, save_image_atomically
from .replay import RehearsalSet, generate_rehearsal_set
from .tasks import ClassIncrementalSplit, resolve_class_order


logger = logging.getLogger(__name__)

RUN_CONFIG_NAME = "run_config.json"
METRICS_NAME = "metrics.json"


def replace_directory_atomically(source: Path, destination: Path) -> None:
    r"""
    Moves a finished folder into place so that `destination` is always either the old complete folder or the new one.

    Args:
        source (`Path`): The fully written folder (a sibling of `destination`).
        destination (`Path`): The final path.
    """
    if destination.exists():
        # Rename the old folder out of the way first: a kill between the two renames leaves the old copy beside.
        stale = destination.with_name(destination.name + ".old")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(destination, stale)
        os.replace(source, destination)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(source, destination)


def write_json_atomically(data: dict, path: Path) -> None:
    r"""
    Writes JSON through a temporary file and `os.replace`, so a kill never leaves a half-written file.

    Args:
        data (`dict`): The content.
        path (`Path`): The destination.
    """
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def stage_outputs(
    unet: JointUNet2DModel,
    noisy_sample: torch.Tensor,
    timesteps: torch.Tensor,
    clean_sample: torch.Tensor,
    predict_noise: bool = True,
    classify: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""
    The noise prediction and the logits a training stage needs, each `None` when it is not needed: both from one
    [`JointUNet2DModel.joint_forward`], the noise alone from the plain UNet forward, or the logits alone from
    [`~JointUNet2DModel.classify`] (the encoder and head).

    Args:
        unet ([`JointUNet2DModel`]): The model (a student or a teacher).
        noisy_sample (`torch.Tensor`): Noisy images `x_t`.
        timesteps (`torch.Tensor`): Their timesteps.
        clean_sample (`torch.Tensor`): Clean images for the classifier.
        predict_noise (`bool`, *optional*, defaults to `True`): Whether to compute the noise prediction.
        classify (`bool`, *optional*, defaults to `True`): Whether to compute the logits of the clean images.
    """
    if predict_noise and classify:
        return unet.joint_forward(noisy_sample, timesteps, clean_sample, return_dict=False)
    if predict_noise:
        return unet(noisy_sample, timesteps).sample, None
    if classify:
        return None, unet.classify(clean_sample)
    raise ValueError("A training stage must compute the noise prediction, the logits or both.")


class JointForward(torch.nn.Module):
    r"""
    Routes `forward` to [`stage_outputs`], so that DDP (which only syncs gradients of `forward` calls) can wrap the
    training step of a stage, whichever outputs its loss reads.

    Args:
        unet ([`JointUNet2DModel`]): The model being trained.
        predict_noise (`bool`, *optional*, defaults to `True`): Whether to compute the noise prediction.
        classify (`bool`, *optional*, defaults to `True`): Whether to compute the logits of the clean images.
    """

    def __init__(self, unet: JointUNet2DModel, predict_noise: bool = True, classify: bool = True):
        super().__init__()
        self.unet = unet
        self.predict_noise = predict_noise
        self.classify = classify

    def forward(
        self, noisy_sample: torch.Tensor, timesteps: torch.Tensor, clean_sample: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return stage_outputs(self.unet, noisy_sample, timesteps, clean_sample, self.predict_noise, self.classify)


@dataclass
class StageBatch:
    r"""
    A training batch: images in [-1, 1], labels, and which samples are rehearsal of old classes.

    Args:
        images (`torch.Tensor`): `(B, C, H, W)` in [-1, 1].
        labels (`torch.Tensor`): `(B,)`.
        is_old (`torch.Tensor`): `(B,)` bool; all `False` for real data of a local stage.
    """

    images: torch.Tensor
    labels: torch.Tensor
    is_old: torch.Tensor


class StageData:
    r"""
    The data one stage samples from: real images (uint8) and/or generated rehearsal (float), drawn uniformly.

    Batches are drawn from a generator seeded by `(seed, step, process)`, so a resumed stage sees exactly the batches
    that the killed one would have seen, with no data-loader state to save.

    Args:
        real (`TensorData`, *optional*): Real training images of the stage's classes.
        rehearsal ([`RehearsalSet`], *optional*): Generated images.
    """

    def __init__(self, real: TensorData | None = None, rehearsal: RehearsalSet | None = None):
        images, labels, is_old = [], [], []
        if real is not None and len(real):
            images.append(real.to_float())
            labels.append(real.labels)
            is_old.append(torch.zeros(len(real), dtype=torch.bool))
        if rehearsal is not None and len(rehearsal):
            images.append(rehearsal.images.float())
            labels.append(rehearsal.labels)
            is_old.append(rehearsal.is_old)
        if not images:
            raise ValueError("A training stage has no data: the task has no examples and no rehearsal was generated.")
        self.images = torch.cat(images)
        self.labels = torch.cat(labels)
        self.is_old = torch.cat(is_old)

    def __len__(self) -> int:
        return self.labels.numel()

    def sample(self, batch_size: int, generator: torch.Generator, device: torch.device) -> StageBatch:
        indices = torch.randint(0, len(self), (batch_size,), generator=generator)
        return StageBatch(
            images=self.images[indices].to(device),
            labels=self.labels[indices].to(device),
            is_old=self.is_old[indices].to(device),
        )


@dataclass
class Teachers:
    r"""
    The frozen teachers of a global (or single) stage.

    Args:
        old (`JointUNet2DModel`, *optional*): The previous global model, teacher of old classes.
        new (`JointUNet2DModel`, *optional*): The local model, teacher of new classes.
    """

    old: JointUNet2DModel | None = None
    new: JointUNet2DModel | None = None


@dataclass
class RehearsalSource:
    r"""
    Who generates which classes of a rehearsal set.

    Args:
        generator ([`JointUNet2DModel`]): The model that samples (EMA weights).
        classes (`list[int]`): Its classes.
        is_old (`bool`): Whether they are classes of earlier tasks.
        labeller ([`JointUNet2DModel`], *optional*): A separate classifier that labels; the generator's own if `None`.
    """

    generator: JointUNet2DModel
    classes: list[int]
    is_old: bool
    labeller: JointUNet2DModel | None = None


class ContinualTrainer:
    r"""
    Trains a [`JointUNet2DModel`] over class-incremental tasks with JDCL or a baseline, and writes every task's
    pipeline, metrics, pictures and logs to `config.output_dir`.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration.
        accelerator (`Accelerator`, *optional*, defaults to `None`): Built from the configuration when `None`.
        data ([`ClassificationData`], *optional*, defaults to `None`):
            The data set, loaded from the configuration when `None`.
        hub_api (`huggingface_hub.HfApi`, *optional*, defaults to `None`): The Hub client used with `push_to_hub`.
    """

    def __init__(
        self,
        config: JDCLTrainingConfig,
        accelerator: Accelerator | None = None,
        data: ClassificationData | None = None,
        hub_api=None,
    ):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self._owns_accelerator = accelerator is None
        if accelerator is None:
            log_with = None if config.logger == "none" else config.logger
            accelerator = Accelerator(
                mixed_precision=config.mixed_precision,
                log_with=log_with,
                project_config=ProjectConfiguration(
                    project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
                ),
                # Without CUDA, ask for CPU explicitly: multi-process CPU runs then get gloo and real ranks.
                cpu=not torch.cuda.is_available(),
            )
        self.accelerator = accelerator
        self.show_progress = config.show_progress and accelerator.is_local_main_process

        # Everything that can be wrong is checked here, before any training.
        self.data = data if data is not None else self._load_data()
        self.class_order = resolve_class_order(config.class_order, self.data.class_names)
        self.split = ClassIncrementalSplit.from_order(self.class_order, config.num_tasks)
        self.num_channels = infer_num_channels(self.data.train, self.data.image_column)
        self.pretrained_model = self._load_pretrained_model()
        self._check_output_dir()

        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_start=config.beta_start,
            beta_end=config.beta_end,
            beta_schedule="linear",
            prediction_type="epsilon",
        )
        self.sampling_scheduler = DDIMScheduler.from_config(self.noise_scheduler.config)
        self.augmentation = TwoViewAugmentation(config.resolution, self.num_channels, enabled=config.augment)
        self.hub_uploader = None
        if config.push_to_hub:
            self.hub_uploader = TaskHubUploader(
                config.hub_model_id or self.output_dir.resolve().name,
                # A given client carries its own credentials.
                token=config.hub_token if hub_api is None else None,
                private=config.hub_private_repo,
                api=hub_api,
            )
        self.train_data: TensorData | None = None
        self.test_data: TensorData | None = None
        self._global_step = 0

    # ----------------------------------------------------------------------------------------------- set-up and checks

    def _load_data(self) -> ClassificationData:
        config = self.config
        return load_classification_dataset(
            dataset_name=config.dataset_name,
            dataset_config_name=config.dataset_config_name,
            train_data_dir=config.train_data_dir,
            cache_dir=config.cache_dir,
            image_column=config.image_column,
            label_column=config.label_column,
            test_split=config.test_split,
            seed=config.seed,
        )

    @property
    def dataset_display_name(self) -> str:
        return self.config.dataset_name or self.config.train_data_dir or BUNDLED_DATASET_NAME

    def _load_pretrained_model(self) -> JointUNet2DModel | None:
        path = self.config.pretrained_model_name_or_path
        if path is None:
            return None
        model = JDCLPipeline.from_pretrained(path).unet
        expected = {
            "sample_size": self.config.resolution,
            "in_channels": self.num_channels,
            "num_classes": self.data.num_classes,
        }
        for key, value in expected.items():
            if model.config[key] != value:
                raise ValueError(
                    f"The pretrained model {path} has {key}={model.config[key]} but this run needs {value} "
                    f"({'--resolution' if key == 'sample_size' else 'the data set'}); pass --resolution "
                    f"{model.config['sample_size']} or train from scratch."
                )
        return model

    def _check_output_dir(self) -> None:
        run_config_path = self.output_dir / RUN_CONFIG_NAME
        identity = {
            **self.config.run_identity(),
            "class_order": self.class_order,
            "tasks": self.split.tasks,
        }
        if run_config_path.exists():
            previous = json.loads(run_config_path.read_text()).get("identity")
            if previous != identity:
                changed = sorted(
                    k for k in set(previous or {}) | set(identity) if (previous or {}).get(k) != identity.get(k)
                )
                raise ValueError(
                    f"{self.output_dir} holds a run of another configuration (differs in {changed}). Choose another "
                    "--output_dir, or remove that folder."
                )
            if self.config.resume_from_checkpoint is None:
                raise ValueError(
                    f"{self.output_dir} already holds this run. Pass --resume_from_checkpoint latest to continue it, "
                    "or choose another --output_dir."
                )
        elif self.output_dir.exists() and any(self.output_dir.glob("task-*")):
            raise ValueError(
                f"{self.output_dir} holds task folders but no {RUN_CONFIG_NAME}; it is not a jdcl run of this "
                "configuration. Choose another --output_dir."
            )
        self._identity = identity

    def _write_run_config(self) -> None:
        # Every process checks the folder in __init__: none may write run_config.json before all have checked, or a
        # slower process would find it and refuse "a folder that already holds this run".
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            run_config_path = self.output_dir / RUN_CONFIG_NAME
            if not run_config_path.exists():
                write_json_atomically({"identity": self._identity, "config": self.config.to_dict()}, run_config_path)
        self.accelerator.wait_for_everyone()

    def _new_model(self, seed: int) -> JointUNet2DModel:
        if self.pretrained_model is not None:
            return copy.deepcopy(self.pretrained_model)
        torch.manual_seed(seed)
        return JointUNet2DModel(
            sample_size=self.config.resolution,
            in_channels=self.num_channels,
            out_channels=self.num_channels,
            num_classes=self.data.num_classes,
            **self.config.unet_config,
        )

    # ------------------------------------------------------------------------------------------------------ main loop

    def load_tensors(self) -> None:
        """Decodes and resizes the data set once into `train_data` and `test_data` (the test set's task classes)."""
        config = self.config
        self.train_data = prepare_tensors(
            self.data.train,
            self.data.image_column,
            self.data.label_column,
            config.resolution,
            self.num_channels,
            show_progress=self.show_progress,
        )
        self.test_data = prepare_tensors(
            self.data.test,
            self.data.image_column,
            self.data.label_column,
            config.resolution,
            self.num_channels,
            show_progress=self.show_progress,
        ).subset(self.split.all_classes)
        for task_index in range(self.split.num_tasks):
            self.train_data.subset(self.split.new_classes(task_index))  # raises early for an empty task

    def train(self) -> dict:
        r"""
        Runs every task (resuming finished work when `config.resume_from_checkpoint` is set) and returns the metrics.

        Returns:
            `dict`: what `metrics.json` holds.
        """
        config = self.config
        accelerator = self.accelerator
        set_seed(config.seed)
        self._write_run_config()
        if accelerator.is_main_process and config.logger != "none":
            tracker_config = {
                k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool)) and v is not None
            }
            accelerator.init_trackers("jdcl", config=tracker_config)
        if self.hub_uploader is not None and accelerator.is_main_process:
            self.hub_uploader.create_repo()

        self.load_tensors()

        metrics = self._load_metrics()
        accuracy_matrix = AccuracyMatrix(num_tasks=self.split.num_tasks)
        global_model = None
        for task_index in range(self.split.num_tasks):
            task_dir = self.output_dir / task_revision(task_index + 1)
            if config.resume_from_checkpoint is not None and (task_dir / "model_index.json").exists():
                global_model = JDCLPipeline.from_pretrained(task_dir).unet.to(accelerator.device).eval()
                if task_index < len(metrics["accuracy_matrix"]) and task_index < len(metrics["accuracy_seen"]):
                    accuracy_matrix.add_row(metrics["accuracy_matrix"][task_index][: task_index + 1])
                else:
                    # Killed between saving the task folder and writing metrics.json: evaluate it again.
                    evaluation = self._evaluate(global_model, task_index)
                    accuracy_matrix.add_row(evaluation.accuracy_per_task)
                    metrics["accuracy_seen"] = metrics["accuracy_seen"][:task_index] + [evaluation.accuracy_seen]
                self._global_step += self._task_total_steps(task_index)
                logger.info(f"Task {task_index + 1} was finished by an earlier run; loaded it from {task_dir}.")
                continue

            task_start = time.time()
            global_model = self._train_task(task_index, global_model, metrics)
            evaluation = self._evaluate(global_model, task_index)
            accuracy_matrix.add_row(evaluation.accuracy_per_task)
            summary = accuracy_matrix.metrics()
            metrics["stage_seconds"].setdefault(str(task_index + 1), {})["task_total"] = time.time() - task_start
            metrics["accuracy_seen"].append(evaluation.accuracy_seen)
            self._save_task(task_index, global_model, accuracy_matrix, summary)
            self._write_metrics(metrics, accuracy_matrix)
            if accelerator.is_main_process:
                accelerator.log(
                    {
                        "eval/accuracy_seen": evaluation.accuracy_seen,
                        "eval/average_accuracy": summary["average_accuracy"],
                        "eval/forgetting": summary["forgetting"],
                    },
                    step=self._global_step,
                )
            message = (
                f"Task {task_index + 1}/{self.split.num_tasks}: accuracy on seen classes "
                f"{evaluation.accuracy_seen:.4f}, average accuracy {summary['average_accuracy']:.4f}, forgetting so "
                f"far {summary['forgetting']:.4f}"
            )
            logger.info(message)
            if self.show_progress:
                tqdm.write(message)
            if accelerator.is_main_process:
                # The task is safely in its folder: its stages' checkpoints are no longer needed to resume.
                for stage_checkpoints in (self.output_dir / "checkpoints").glob(f"{task_revision(task_index + 1)}-*"):
                    shutil.rmtree(stage_checkpoints, ignore_errors=True)
            if self.hub_uploader is not None and accelerator.is_main_process:
                self.hub_uploader.upload_task(
                    task_dir, task_index + 1, evaluation.accuracy_seen, num_tasks=self.split.num_tasks
                )
            accelerator.wait_for_everyone()

        final = self._write_metrics(metrics, accuracy_matrix)
        if self._owns_accelerator:
            accelerator.end_training()
        return final

    def _task_total_steps(self, task_index: int) -> int:
        """Training steps of one task over all its stages: the tensorboard step offset of the next task."""
        config = self.config
        if task_index == 0:
            steps = config.total_first_task_steps
        else:
            steps = config.local_train_steps + config.global_train_steps
        # The separate ablation trains two models per stage.
        return steps if config.joint_modelling else 2 * steps

    def _train_task(self, task_index: int, global_model: JointUNet2DModel | None, metrics: dict) -> JointUNet2DModel:
        config = self.config
        new_classes = self.split.new_classes(task_index)
        old_classes = self.split.old_classes(task_index)
        seen_classes = self.split.classes_seen(task_index)
        stage_seconds = metrics["stage_seconds"].setdefault(str(task_index + 1), {})
        first_task = task_index == 0
        single_stage_steps = (
            config.total_first_task_steps if first_task else (config.local_train_steps + config.global_train_steps)
        )
        local_weights = JointLossWeights(config.diffusion_loss_weight, config.classification_loss_weight)

        def init_from_global() -> JointUNet2DModel:
            return copy.deepcopy(global_model) if global_model is not None else self._new_model(config.seed)

        if config.strategy in ("finetune", "cumulative"):
            classes = new_classes if config.strategy == "finetune" else seen_classes
            start = time.time()
            model = self._run_stage(
                task_index,
                "train",
                init_from_global(),
                StageData(real=self.train_data.subset(classes)),
                single_stage_steps,
                local_weights,
            )
            stage_seconds["train"] = time.time() - start
            return model

        if first_task and config.joint_modelling:
            start = time.time()
            model = self._run_stage(
                task_index,
                "local",
                init_from_global(),
                StageData(real=self.train_data.subset(new_classes)),
                config.total_first_task_steps,
                local_weights,
            )
            stage_seconds["local"] = time.time() - start
            return model

        if not config.joint_modelling:
            return self._train_task_separate(task_index, global_model, stage_seconds, metrics)

        if config.single_stage:
            start = time.time()
            rehearsal = self._rehearsal(task_index, [RehearsalSource(global_model, old_classes, is_old=True)], metrics)
            stage_seconds["rehearsal"] = time.time() - start
            start = time.time()
            data = StageData(real=self.train_data.subset(new_classes), rehearsal=rehearsal)
            if config.no_distillation:
                weights, teachers = local_weights, None
            else:
                # The joint loss on everything, plus distillation of the old classes from the previous global model.
                weights = dataclasses.replace(
                    self.global_loss_weights(),
                    diffusion=config.diffusion_loss_weight,
                    classification=config.classification_loss_weight,
                )
                teachers = Teachers(old=global_model)
            model = self._run_stage(
                task_index, "single", init_from_global(), data, single_stage_steps, weights, teachers
            )
            stage_seconds["single"] = time.time() - start
            return model

        start = time.time()
        local_model = self._local_model(task_index, global_model, new_classes, local_weights)
        stage_seconds["local"] = time.time() - start
        start = time.time()
        sources = [
            RehearsalSource(global_model, old_classes, is_old=True),
            RehearsalSource(local_model, new_classes, is_old=False),
        ]
        rehearsal = self._rehearsal(task_index, sources, metrics)
        stage_seconds["rehearsal"] = time.time() - start
        start = time.time()
        if config.no_distillation:
            model = self._run_stage(
                task_index,
                "global",
                init_from_global(),
                StageData(rehearsal=rehearsal),
                config.global_train_steps,
                local_weights,
            )
        else:
            model = self._run_stage(
                task_index,
                "global",
                init_from_global(),
                StageData(rehearsal=rehearsal),
                config.global_train_steps,
                self.global_loss_weights(),
                Teachers(old=global_model, new=local_model),
            )
        stage_seconds["global"] = time.time() - start
        return model

    def global_loss_weights(self) -> DistillationLossWeights:
        """The weights of JDCL's global-stage loss, from the configuration."""
        config = self.config
        return DistillationLossWeights(
            diffusion=config.global_diffusion_loss_weight,
            classification=config.global_classification_loss_weight,
            distillation_diffusion=config.distillation_diffusion_weight,
            distillation_classification=config.distillation_classification_weight,
        )

    def _train_task_separate(
        self, task_index: int, global_classifier: JointUNet2DModel | None, stage_seconds: dict, metrics: dict
    ) -> JointUNet2DModel:
        r"""
        The paper's "without joint modelling" ablation: a diffusion-only generator and a classifier of the same
        architecture with its own weights, each trained and distilled as in JDCL; the generator samples the rehearsal
        and the classifier labels it. Returns the classifier; the generator is kept for the next task.
        """
        config = self.config
        new_classes = self.split.new_classes(task_index)
        old_classes = self.split.old_classes(task_index)
        generator_weights = JointLossWeights(diffusion=config.diffusion_loss_weight, classification=0.0)
        classifier_weights = JointLossWeights(diffusion=0.0, classification=config.classification_loss_weight)
        previous_generator = self._load_generator(task_index - 1) if task_index > 0 else None
        real = StageData(real=self.train_data.subset(new_classes))

        def init(model: JointUNet2DModel | None, seed: int) -> JointUNet2DModel:
            return copy.deepcopy(model) if model is not None else self._new_model(seed)

        start = time.time()
        local_init_generator = previous_generator if config.local_init == "global" else None
        local_init_classifier = global_classifier if config.local_init == "global" else None
        steps = config.total_first_task_steps if task_index == 0 else config.local_train_steps
        local_generator = self._run_stage(
            task_index,
            "local-generator",
            init(local_init_generator, config.seed + task_index),
            real,
            steps,
            generator_weights,
        )
        local_classifier = self._run_stage(
            task_index,
            "local",
            init(local_init_classifier, config.seed + task_index + 1),
            real,
            steps,
            classifier_weights,
        )
        stage_seconds["local"] = time.time() - start
        if task_index == 0:
            self._save_generator(task_index, local_generator)
            return local_classifier

        start = time.time()
        sources = [
            RehearsalSource(previous_generator, old_classes, is_old=True, labeller=global_classifier),
            RehearsalSource(local_generator, new_classes, is_old=False, labeller=local_classifier),
        ]
        rehearsal = StageData(rehearsal=self._rehearsal(task_index, sources, metrics))
        stage_seconds["rehearsal"] = time.time() - start
        start = time.time()
        generator = self._run_stage(
            task_index,
            "global-generator",
            init(previous_generator, 0),
            rehearsal,
            config.global_train_steps,
            DistillationLossWeights(
                diffusion=config.global_diffusion_loss_weight,
                classification=0.0,
                distillation_diffusion=config.distillation_diffusion_weight,
                distillation_classification=0.0,
            ),
            Teachers(old=previous_generator, new=local_generator),
        )
        classifier = self._run_stage(
            task_index,
            "global",
            init(global_classifier, 0),
            rehearsal,
            config.global_train_steps,
            DistillationLossWeights(
                diffusion=0.0,
                classification=config.global_classification_loss_weight,
                distillation_diffusion=0.0,
                distillation_classification=config.distillation_classification_weight,
            ),
            Teachers(old=global_classifier, new=local_classifier),
        )
        stage_seconds["global"] = time.time() - start
        self._save_generator(task_index, generator)
        return classifier

    def _save_generator(self, task_index: int, generator: JointUNet2DModel) -> None:
        if self.accelerator.is_main_process:
            saved = self._state_dir(task_index) / "generator"
            temporary = saved.with_name("generator.tmp")
            shutil.rmtree(temporary, ignore_errors=True)
            generator.save_pretrained(temporary)
            replace_directory_atomically(temporary, saved)
        self.accelerator.wait_for_everyone()

    def _load_generator(self, task_index: int) -> JointUNet2DModel:
        saved = self._state_dir(task_index) / "generator"
        return JointUNet2DModel.from_pretrained(saved).to(self.accelerator.device).eval()

    def _state_dir(self, task_index: int) -> Path:
        return self.output_dir / "state" / task_revision(task_index + 1)

    def _local_model(
        self, task_index: int, global_model: JointUNet2DModel, new_classes: list[int], weights: JointLossWeights
    ) -> JointUNet2DModel:
        saved = self._state_dir(task_index) / "local"
        if (saved / "config.json").exists():
            self._global_step += self.config.local_train_steps
            return JointUNet2DModel.from_pretrained(saved).to(self.accelerator.device).eval()
        if self.config.local_init == "global":
            init = copy.deepcopy(global_model)
        else:
            init = self._new_model(self.config.seed + task_index)
        model = self._run_stage(
            task_index,
            "local",
            init,
            StageData(real=self.train_data.subset(new_classes)),
            self.config.local_train_steps,
            weights,
        )
        if self.accelerator.is_main_process:
            temporary = saved.with_name("local.tmp")
            shutil.rmtree(temporary, ignore_errors=True)
            model.save_pretrained(temporary)
            replace_directory_atomically(temporary, saved)
        self.accelerator.wait_for_everyone()
        return model

    def generate_rehearsal(self, source: RehearsalSource, samples_per_class: int, seed: int) -> RehearsalSet:
        r"""
        Generates rehearsal of `source`'s classes with the run's sampler settings.

        Args:
            source ([`RehearsalSource`]): Who generates (and labels) which classes.
            samples_per_class (`int`): The quota of each class.
            seed (`int`): Seed of the sampling.
        """
        config = self.config
        return generate_rehearsal_set(
            self.accelerator,
            source.generator,
            self.sampling_scheduler,
            source.classes,
            samples_per_class,
            is_old=source.is_old,
            seed=seed,
            num_inference_steps=config.replay_inference_steps,
            batch_size=config.replay_batch_size,
            sampler=config.replay_sampler,
            guidance_scale=config.replay_guidance_scale,
            max_sampling_factor=config.replay_max_sampling_factor,
            selection=config.replay_selection,
            eta=config.replay_eta,
            show_progress=self.show_progress,
            labeller=source.labeller,
        )

    def _rehearsal(self, task_index: int, sources: list["RehearsalSource"], metrics: dict) -> RehearsalSet:
        config = self.config
        saved = self._state_dir(task_index) / "rehearsal.safetensors"
        if saved.exists():
            rehearsal = RehearsalSet.from_state_dict(load_file(saved))
        else:
            parts = [
                self.generate_rehearsal(
                    source, config.replay_samples_per_class, seed=config.seed + 1000 * (task_index + 1) + 100 * offset
                )
                for offset, source in enumerate(sources)
            ]
            rehearsal = RehearsalSet.concatenate(parts)
            if self.accelerator.is_main_process:
                saved.parent.mkdir(parents=True, exist_ok=True)
                temporary = saved.with_name(saved.name + ".tmp")
                save_file(rehearsal.state_dict(), temporary)
                os.replace(temporary, saved)
            self.accelerator.wait_for_everyone()
        metrics["rehearsal"][str(task_index + 1)] = {
            "generated": rehearsal.num_generated,
            "kept": len(rehearsal) - rehearsal.num_filled,
            "filled": rehearsal.num_filled,
            "per_class": {str(c): int((rehearsal.labels == c).sum()) for c in rehearsal.labels.unique().tolist()},
        }
        return rehearsal

    # ------------------------------------------------------------------------------------------------- one stage

    def _checkpoint_root(self, task_index: int, stage: str) -> Path:
        return self.output_dir / "checkpoints" / f"{task_revision(task_index + 1)}-{stage}"

    def _latest_checkpoint(self, task_index: int, stage: str) -> Path | None:
        resume = self.config.resume_from_checkpoint
        if resume is None:
            return None
        if resume != "latest":
            path = Path(resume)
            if not path.is_dir():
                raise ValueError(f"--resume_from_checkpoint {resume} is not a folder; pass 'latest' or a checkpoint.")
            return path if path.parent == self._checkpoint_root(task_index, stage) else None
        root = self._checkpoint_root(task_index, stage)
        checkpoints = (
            [p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()] if root.exists() else []
        )
        return max(checkpoints, key=lambda p: int(p.name.split("-")[-1])) if checkpoints else None

    def _save_checkpoint(self, task_index: int, stage: str, step: int, ema: EMAModel | None) -> None:
        root = self._checkpoint_root(task_index, stage)
        final = root / f"checkpoint-{step}"
        temporary = root / f"tmp-checkpoint-{step}"
        if self.accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(temporary))
        if self.accelerator.is_main_process:
            if ema is not None:
                save_file(
                    {f"shadow_{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                    temporary / "ema.safetensors",
                )
            (temporary / "jdcl_state.json").write_text(
                json.dumps({"step": step, "ema_optimization_step": ema.optimization_step if ema else 0})
            )
            os.replace(temporary, final)
            checkpoints = sorted(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
            for stale in checkpoints[: max(0, len(checkpoints) - self.config.checkpoints_total_limit)]:
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _stage_seed(self, task_index: int, stage: str, step: int) -> int:
        stage_id = {"local": 1, "global": 2, "single": 3, "train": 4, "local-generator": 5, "global-generator": 6}[
            stage
        ]
        return (self.config.seed * 1_000_003 + task_index * 10_007 + stage_id * 1_009 + step) * 97 + (
            self.accelerator.process_index
        )

    def _run_stage(
        self,
        task_index: int,
        stage: str,
        model: JointUNet2DModel,
        data: StageData,
        num_steps: int,
        weights: JointLossWeights | DistillationLossWeights,
        teachers: Teachers | None = None,
    ) -> JointUNet2DModel:
        r"""Trains `model` for `num_steps` on `data`; returns the EMA weights (or the trained weights) in eval mode."""
        config = self.config
        accelerator = self.accelerator
        model = model.to(accelerator.device).train().requires_grad_(True)
        # Parts that no term of the loss reaches are not run; frozen, they are no unused parameters for DDP either.
        if not weights.needs_noise_prediction:
            for module in model.decoder_modules():
                module.requires_grad_(False)
        if not weights.needs_logits:
            model.classifier.requires_grad_(False)
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        if teachers is not None:
            for teacher in (teachers.old, teachers.new):
                if teacher is not None:
                    # Teachers run in eval mode: dropout in a teacher only adds noise to its targets.
                    teacher.to(accelerator.device).eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
            # One fused update over all tensors: per-tensor loops dominate the step of small models on CPU.
            foreach=True,
        )
        ema = None
        if config.use_ema:
            ema = EMAModel(
                model.parameters(),
                decay=config.ema_decay,
                use_ema_warmup=config.ema_warmup,
                power=config.ema_power,
                foreach=True,
            )
            ema.to(accelerator.device)
        joint_module, optimizer = accelerator.prepare(
            JointForward(model, predict_noise=weights.needs_noise_prediction, classify=weights.needs_logits), optimizer
        )

        start_step = 0
        checkpoint = self._latest_checkpoint(task_index, stage)
        if checkpoint is not None:
            accelerator.load_state(str(checkpoint))
            state = json.loads((checkpoint / "jdcl_state.json").read_text())
            start_step = state["step"]
            if ema is not None:
                shadows = load_file(checkpoint / "ema.safetensors")
                ema.shadow_params = [shadows[f"shadow_{i}"].to(accelerator.device) for i in range(len(shadows))]
                ema.optimization_step = state["ema_optimization_step"]
            logger.info(f"Resuming task {task_index + 1} {stage} stage from {checkpoint} (step {start_step}).")

        step_offset = self._global_step
        progress = tqdm(
            range(num_steps),
            initial=start_step,
            total=num_steps,
            desc=f"Task {task_index + 1}/{self.split.num_tasks} {stage}",
            disable=not self.show_progress,
        )
        loss_fn = self._loss_fn(weights, teachers)
        for step in range(start_step, num_steps):
            seed = self._stage_seed(task_index, stage, step)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            batch = data.sample(config.train_batch_size, generator, accelerator.device)
            with accelerator.accumulate(joint_module):
                diffusion_view, classifier_view = self.augmentation(batch.images)
                noise = torch.randn(diffusion_view.shape, generator=generator).to(accelerator.device)
                timesteps = torch.randint(
                    0, self.noise_scheduler.config.num_train_timesteps, (diffusion_view.shape[0],), generator=generator
                ).to(accelerator.device)
                noisy = self.noise_scheduler.add_noise(diffusion_view, noise, timesteps)
                with accelerator.autocast():
                    noise_pred, logits = joint_module(noisy, timesteps, classifier_view)
                    terms = loss_fn(noise_pred, noise, logits, batch, noisy, timesteps, classifier_view, step)
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(joint_module.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients and ema is not None:
                ema.step(model.parameters())
            progress.update(1)
            if step % 10 == 0 or step == num_steps - 1:
                values = {k: float(v.detach()) for k, v in terms.items()}
                progress.set_postfix(loss=f"{values['loss']:.4f}")
                accelerator.log(
                    {f"task_{task_index + 1}/{stage}/{name}": value for name, value in values.items()},
                    step=step_offset + step,
                )
            if (step + 1) % config.checkpointing_steps == 0 and step + 1 < num_steps:
                self._save_checkpoint(task_index, stage, step + 1, ema)
        progress.close()
        self._global_step = step_offset + num_steps

        trained = accelerator.unwrap_model(joint_module).unet
        accelerator.free_memory()
        result = copy.deepcopy(trained)
        if ema is not None:
            ema.copy_to(result.parameters())
        if config.gradient_checkpointing:
            result.disable_gradient_checkpointing()
        return result.eval().requires_grad_(False)

    def _loss_fn(
        self, weights: JointLossWeights | DistillationLossWeights, teachers: Teachers | None
    ) -> Callable[..., dict[str, torch.Tensor]]:
        warmup = self.config.classification_warmup_steps

        def local(noise_pred, noise, logits, batch, noisy, timesteps, clean, step):
            return joint_loss(noise_pred, noise, logits, batch.labels, weights)

        def distill(noise_pred, noise, logits, batch, noisy, timesteps, clean, step):
            outputs = {}
            for name, teacher, mask in (("old", teachers.old, batch.is_old), ("new", teachers.new, ~batch.is_old)):
                if teacher is None or not bool(mask.any()):
                    outputs[name] = (None, None)
                    continue
                with torch.no_grad():
                    outputs[name] = stage_outputs(
                        teacher,
                        noisy[mask],
                        timesteps[mask],
                        clean[mask],
                        weights.needs_noise_prediction,
                        weights.needs_logits,
                    )
            return distillation_loss(
                noise_pred,
                noise,
                logits,
                batch.labels,
                batch.is_old,
                *outputs["old"],
                *outputs["new"],
                weights=weights,
                classification_enabled=step >= warmup,
            )

        return local if teachers is None else distill

    # ------------------------------------------------------------------------------------------------ outputs

    def _evaluate(self, model: JointUNet2DModel, task_index: int):
        tasks = self.split.tasks[: task_index + 1]
        return evaluate_seen_tasks(model, self.test_data, tasks, batch_size=self.config.eval_batch_size)

    def _load_metrics(self) -> dict:
        path = self.output_dir / METRICS_NAME
        if self.config.resume_from_checkpoint is not None and path.exists():
            metrics = json.loads(path.read_text())
        else:
            metrics = {}
        metrics.setdefault("accuracy_matrix", [])
        metrics.setdefault("accuracy_seen", [])
        metrics.setdefault("stage_seconds", {})
        metrics.setdefault("rehearsal", {})
        return metrics

    def _write_metrics(self, metrics: dict, accuracy_matrix: AccuracyMatrix) -> dict:
        metrics["dataset"] = self.dataset_display_name
        metrics["strategy"] = self.config.strategy
        metrics["class_order"] = self.class_order
        metrics["tasks"] = self.split.tasks
        metrics["accuracy_matrix"] = [
            row + [None] * (self.split.num_tasks - len(row)) for row in accuracy_matrix.to_list()
        ]
        metrics.update(accuracy_matrix.metrics())
        if self.accelerator.is_main_process:
            write_json_atomically(metrics, self.output_dir / METRICS_NAME)
            plot_accuracy_matrix(
                accuracy_matrix.to_list(),
                self.output_dir / "accuracy_matrix.png",
                title=f"{self.config.strategy} on {self.dataset_display_name}",
            )
        return metrics

    def _sample_grid(self, model: JointUNet2DModel, task_index: int):
        classes = self.split.classes_seen(task_index)
        count = self.config.grid_samples_per_class
        pipeline = JDCLPipeline(unet=model, scheduler=self.sampling_scheduler)
        pipeline.set_progress_bar_config(disable=True)
        labels = torch.tensor([c for c in classes for _ in range(count)])
        images = pipeline.sample_images(
            len(labels),
            class_labels=labels.to(self.accelerator.device),
            num_inference_steps=self.config.grid_inference_steps,
            guidance_scale=self.config.replay_guidance_scale,
            classes=classes,
            generator=torch.Generator(device=self.accelerator.device).manual_seed(self.config.seed),
            show_progress=False,
        )
        return make_class_grid(images.cpu(), labels, classes, self.data.class_names, samples_per_class=count)

    def _save_task(
        self, task_index: int, model: JointUNet2DModel, accuracy_matrix: AccuracyMatrix, summary: dict
    ) -> None:
        if not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return
        task_dir = self.output_dir / task_revision(task_index + 1)
        temporary = task_dir.with_name(task_dir.name + ".tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        pipeline = JDCLPipeline(unet=model, scheduler=self.sampling_scheduler)
        pipeline.save_pretrained(temporary)
        grid = self._sample_grid(model, task_index) if self.config.grid_samples_per_class > 0 else None
        if grid is not None:
            save_image_atomically(grid, temporary / "samples.png")
            save_image_atomically(grid, self.output_dir / "samples" / f"{task_revision(task_index + 1)}.png")
        card = make_task_model_card(
            task_index=task_index + 1,
            num_tasks=self.split.num_tasks,
            dataset_name=self.dataset_display_name,
            class_names=self.data.class_names,
            class_order=self.class_order,
            classes_seen=self.split.classes_seen(task_index),
            accuracy_matrix=accuracy_matrix.to_list(),
            metrics=summary,
            repo_id=self.hub_uploader.repo_id if self.hub_uploader is not None else None,
            sample_grid_path="samples.png" if grid is not None else None,
            training_config=self.config.to_dict(),
        )
        card.save(str(temporary / "README.md"))
        replace_directory_atomically(temporary, task_dir)
        self.accelerator.wait_for_everyone()


def train_jdcl(config: JDCLTrainingConfig, **kwargs) -> dict:
    r"""
    Runs a whole continual JDCL run (or a baseline) and returns its metrics.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration.
        kwargs: Passed to [`ContinualTrainer`].
    """
    return ContinualTrainer(config, **kwargs).train()


__all__ = ["ContinualTrainer", "JointForward", "StageData", "Teachers", "train_jdcl"]

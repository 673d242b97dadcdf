"""The task loop of a continual run: set-up, resume, one method's training per task, evaluation, outputs, the Hub.

The loop knows nothing of the method: `config.strategy` names a [`ContinualStrategy`] (`jdcl/strategies/`), which
learns each task from the model after the previous one.
"""

import copy
import logging
import time

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from .augment import TwoViewAugmentation
from .compilation import compile_kwargs, dynamo_plugin
from .config import JDCLTrainingConfig
from .continuation import load_run_start
from .data import BUNDLED_DATASET_NAME, ClassificationData, labels_of, load_classification_dataset
from .evaluation import TaskEvaluation, evaluate_seen_tasks
from .hub import TaskHubUploader
from .labels import pseudo_label_summary, select_labeled
from .metrics import AccuracyMatrix, accuracy_rows_from_json
from .model_card import make_task_model_card
from .models import JointUNet2DModel
from .pipelines.pipeline_jdcl import JDCLPipeline
from .plotting import make_class_grid
from .quality.task_quality import TaskQuality, quality_scalars
from .run_folder import RUN_CONFIG_NAME, RunFolder
from .schedulers import sampling_scheduler_from_config
from .stage import StageRunner
from .strategies import STRATEGIES, ContinualStrategy, Task
from .tasks import ClassIncrementalSplit, resolve_class_order
from .tensor_data import TensorData, infer_num_channels, prepare_tensors
from .tracking import check_tracker_installed, log_image


logger = logging.getLogger(__name__)


class ContinualTrainer:
    r"""
    Trains a [`JointUNet2DModel`] over class-incremental tasks with the method `config.strategy`, and writes every
    task's pipeline, metrics, pictures and logs to `config.output_dir`.

    Everything that can be wrong with the configuration, the data or the output folder is checked when it is built,
    before any training.

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
        self.run_folder = RunFolder(config.output_dir)
        on_cuda = accelerator.device.type == "cuda" if accelerator is not None else torch.cuda.is_available()
        if config.mixed_precision == "fp16" and not on_cuda:
            raise ValueError(
                "`--mixed_precision fp16` needs a CUDA device, and none is here; on a CPU pass `--mixed_precision "
                "bf16` (bf16 autocast runs on CPUs) or `no`."
            )
        self._owns_accelerator = accelerator is None
        check_tracker_installed(config.logger)
        if accelerator is None:
            accelerator = Accelerator(
                mixed_precision=config.mixed_precision,
                log_with=None if config.logger == "none" else config.logger,
                project_config=ProjectConfiguration(
                    project_dir=str(self.run_folder.path), logging_dir=str(self.run_folder.path / "logs")
                ),
                # Without CUDA, ask for CPU explicitly: multi-process CPU runs then get gloo and real ranks.
                cpu=not torch.cuda.is_available(),
                dynamo_plugin=dynamo_plugin(config.compile),
            )
        if config.compile and compile_kwargs(accelerator) is None:
            raise ValueError(
                "`--compile` is set but the given Accelerator compiles nothing; create it with "
                '`dynamo_backend="inductor"` (or another backend), or leave `--compile` off.'
            )
        self.accelerator = accelerator
        self.show_progress = config.show_progress and accelerator.is_local_main_process

        # Everything that can be wrong is checked here, before any training.
        self.data = data if data is not None else self._load_data()
        # A published task checkpoint is continued; a pipeline saved by hand or a diffusers UNet starts task 1.
        self.pretrained_model, self.checkpoint = load_run_start(config, self.data.num_classes)
        if self.checkpoint is None:
            self.class_order = resolve_class_order(config.class_order, self.data.class_names)
            self.split = ClassIncrementalSplit.from_order(self.class_order, config.num_tasks)
        else:
            self.data = self.checkpoint.align_data(self.data, config.class_names_map)
            new_order = None
            if config.class_order is not None:
                new_order = resolve_class_order(config.class_order, self.data.class_names)
            self.split = self.checkpoint.continued_split(new_order, config.num_tasks)
            self.class_order = self.split.all_classes
        self.first_task = self.checkpoint.num_tasks if self.checkpoint is not None else 0
        STRATEGIES[config.strategy].check_classes(config, len(self.split.all_classes))
        # Semi-supervised: which training examples keep their labels (chosen once, seeded, class-balanced).
        self.labeled = self.train_labels = None
        if config.semi_supervised:
            self.train_labels = labels_of(self.data.train, self.data.label_column)
            self.labeled = select_labeled(
                self.train_labels,
                fraction=config.labeled_fraction,
                per_class=config.labeled_per_class,
                seed=config.seed,
            )
        # A pretrained model decides the channels: the images are converted to them.
        model = self.pretrained_model if self.pretrained_model is not None else getattr(self.checkpoint, "model", None)
        self.num_channels = (
            model.config.in_channels
            if model is not None
            else infer_num_channels(self.data.train, self.data.image_column)
        )
        self.identity = {**config.run_identity(), "class_order": self.class_order, "tasks": self.split.tasks}
        self.claims_folder = self.run_folder.check(self.identity, resume=config.resume_from_checkpoint is not None)
        self.run_folder.check_resume_target(config.resume_from_checkpoint)

        self.sampling_scheduler = sampling_scheduler_from_config(config)
        self.stages = StageRunner(
            accelerator,
            config,
            TwoViewAugmentation(
                config.resolution, self.num_channels, horizontal_flip=config.horizontal_flip, enabled=config.augment
            ),
            checkpoint_dir=self.run_folder.checkpoint_dir,
            show_progress=config.show_progress,
        )
        self.hub_uploader = None
        if config.push_to_hub:
            self.hub_uploader = TaskHubUploader(
                config.hub_model_id or self.run_folder.path.resolve().name,
                # A given client carries its own credentials.
                token=config.hub_token if hub_api is None else None,
                private=config.hub_private_repo,
                api=hub_api,
            )
        # Extractors with weights to load are loaded now: a missing download fails before any training.
        self.quality_extractors = (
            TaskQuality.load_extractors(config, accelerator.device) if config.quality_metrics else {}
        )
        self.quality: TaskQuality | None = None
        self.train_data: TensorData | None = None
        self.unlabeled_data: TensorData | None = None
        self.test_data: TensorData | None = None

    # ----------------------------------------------------------------------------------------------- set-up

    def _load_data(self) -> ClassificationData:
        config = self.config
        return load_classification_dataset(
            dataset_name=config.dataset_name,
            dataset_config_name=config.dataset_config_name,
            train_data_dir=config.train_data_dir,
            cache_dir=config.cache_dir,
            skip_bad_images=config.skip_bad_images,
            image_column=config.image_column,
            label_column=config.label_column,
            test_split=config.test_split,
            seed=config.seed,
        )

    @property
    def dataset_display_name(self) -> str:
        return self.config.dataset_name or self.config.train_data_dir or BUNDLED_DATASET_NAME

    def new_model(self, seed: int) -> JointUNet2DModel:
        r"""
        A model for the first task (or a local model trained from scratch): a copy of the pretrained model when the
        run has one, else a new model initialised from `seed` (of the continued checkpoint's architecture, if any).

        Args:
            seed (`int`): The seed of the initialisation.
        """
        if self.pretrained_model is not None:
            return copy.deepcopy(self.pretrained_model)
        torch.manual_seed(seed)
        if self.checkpoint is not None:
            return JointUNet2DModel.from_config(self.checkpoint.model.config)
        return JointUNet2DModel(
            sample_size=self.config.resolution,
            in_channels=self.num_channels,
            out_channels=self.num_channels,
            num_classes=self.data.num_classes,
            **self.config.unet_config,
        )

    def build_strategy(self) -> ContinualStrategy:
        """The run's method, with the tools it trains with."""
        return STRATEGIES[self.config.strategy](
            config=self.config,
            accelerator=self.accelerator,
            stages=self.stages,
            train_data=self.train_data,
            new_model=self.new_model,
            sampling_scheduler=self.sampling_scheduler,
            state_dir=self.run_folder.state_dir,
            unlabeled_data=self.unlabeled_data,
        )

    def load_tensors(self) -> None:
        r"""
        Decodes and resizes the data set once into `train_data` and `test_data` (the test set's task classes).

        The main process converts first and caches the result on disk (`datasets`); the others then read its cache.
        """
        config, data = self.config, self.data
        with self.accelerator.main_process_first():
            train, test = [
                prepare_tensors(
                    split,
                    data.image_column,
                    data.label_column,
                    config.resolution,
                    self.num_channels,
                    show_progress=self.show_progress,
                    cache_dir=config.cache_dir,
                )
                for split in (data.train, data.test)
            ]
        for task_index in range(self.split.num_tasks):
            train.subset(self.split.new_classes(task_index))  # raises early for an empty task
        self.train_data, self.test_data = train, test.subset(self.split.all_classes)
        if self.config.quality_metrics and self.accelerator.is_main_process:
            # Quality is measured by the main process, against the real test images, with the referee trained on every
            # real training image of the run's classes.
            self.quality = TaskQuality.build(
                self.config,
                self.quality_extractors,
                self.run_folder.path / "quality",
                train.subset(self.split.all_classes),
                self.test_data,
                self.data.num_classes,
                self.sampling_scheduler,
                self.accelerator.device,
                show_progress=self.show_progress,
            )
        if self.labeled is not None:
            labeled = torch.from_numpy(self.labeled)
            # The unlabelled pool is the whole training set, the labelled images included, as in the authors'
            # `dataloading/splitting/ssl_split.py`: a labelled image reaches the diffusion loss as often as another.
            self.train_data, self.unlabeled_data = train.select(labeled), train

    def task(self, task_index: int) -> Task:
        """The [`Task`] of index `task_index` (from 0)."""
        return Task(
            index=task_index,
            new_classes=self.split.new_classes(task_index),
            old_classes=self.split.old_classes(task_index),
        )

    # ------------------------------------------------------------------------------------------ the task loop

    def train(self) -> dict:
        r"""
        Runs every task (resuming finished work when `config.resume_from_checkpoint` is set) and returns the metrics.

        Returns:
            `dict`: what `metrics.json` holds.
        """
        if not self.accelerator.is_main_process:
            return self._train()
        with self.run_folder.lock():
            return self._train()

    def _train(self) -> dict:
        config, accelerator = self.config, self.accelerator
        resume = config.resume_from_checkpoint is not None
        set_seed(config.seed)
        # Every process checked the folder when it was built: none may claim it before all have.
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self.run_folder.write_run_config(self.identity, config.to_dict(), replace=self.claims_folder)
            if self.labeled is not None:
                self.run_folder.write_labeled_examples(self.labeled, self.train_labels)
        if accelerator.is_main_process and config.logger != "none":
            tracker_config = {
                k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool)) and v is not None
            }
            accelerator.init_trackers("jdcl", config=tracker_config)
        if self.hub_uploader is not None and accelerator.is_main_process:
            self.hub_uploader.create_repo()
        self.load_tensors()
        strategy = self.build_strategy()

        metrics = self.run_folder.load_metrics(resume)
        if self.quality is not None:
            metrics.setdefault("quality", {"tasks": {}})["extractors"] = self.quality.extractor_records
        accuracy_matrix = AccuracyMatrix(num_tasks=self.split.num_tasks)
        model = None
        if self.checkpoint is not None:
            # The continued run's matrix starts with the checkpoint's rows, so it reads as one run's.
            model = self.checkpoint.model.to(accelerator.device).eval()
            last_task = self.first_task - 1
            for row in self.checkpoint.accuracy_rows(lambda: self._evaluate(model, last_task).accuracy_per_task):
                accuracy_matrix.add_row(row)
            if len(metrics["accuracy_seen"]) < self.first_task:
                metrics["accuracy_seen"] = [None] * self.first_task
        for task_index in range(self.first_task, self.split.num_tasks):
            # 1. A task an earlier run finished is loaded, not trained again.
            if resume and self.run_folder.has_task(task_index):
                model = self._load_finished_task(task_index, metrics, accuracy_matrix)
                continue

            # 2. The method learns the task from the model after the previous one.
            task = self.task(task_index)
            start_time = time.time()
            model = strategy.train_task(task, model)
            task.stage_seconds["task_total"] = time.time() - start_time

            # 3. Evaluate on every seen task's test classes, among the seen classes.
            evaluation = self._evaluate(model, task_index)
            accuracy_matrix.add_row(evaluation.accuracy_per_task)
            summary = accuracy_matrix.metrics()
            metrics["accuracy_seen"].append(evaluation.accuracy_seen)
            metrics["stage_seconds"][str(task_index + 1)] = task.stage_seconds
            if task.rehearsal is not None:
                metrics["rehearsal"][str(task_index + 1)] = task.rehearsal
            pseudo_labels = self.stages.pseudo_label_records.pop(task_index, None)
            if pseudo_labels:
                metrics.setdefault("pseudo_labels", {})[str(task_index + 1)] = pseudo_label_summary(
                    pseudo_labels, task.old_classes
                )
            quality = self._measure_quality(strategy, task, model)
            if quality is not None:
                metrics["quality"]["tasks"][str(task_index + 1)] = quality

            # 4. Keep the task's record, save its pipeline, then the metrics; its stage checkpoints are then no
            #    longer needed.
            if accelerator.is_main_process:
                self.run_folder.write_task_record(
                    task_index,
                    {
                        "accuracy_per_task": evaluation.accuracy_per_task,
                        "accuracy_seen": evaluation.accuracy_seen,
                        "stage_seconds": task.stage_seconds,
                        "rehearsal": task.rehearsal,
                        "quality": quality,
                    },
                )
            self._save_task(task_index, model, accuracy_matrix, summary, quality, evaluation.accuracy_seen)
            self._write_metrics(metrics, accuracy_matrix)
            self._report(task_index, evaluation, summary, quality)
            if accelerator.is_main_process:
                self.run_folder.remove_stage_checkpoints(task_index)

            # 5. Push it to its Hub branch.
            if self.hub_uploader is not None and accelerator.is_main_process:
                self.hub_uploader.upload_task(
                    self.run_folder.task_dir(task_index),
                    task_index + 1,
                    evaluation.accuracy_seen,
                    num_tasks=self.split.num_tasks,
                )
            accelerator.wait_for_everyone()

        final = self._write_metrics(metrics, accuracy_matrix)
        if self._owns_accelerator:
            accelerator.end_training()
        return final

    def _load_finished_task(self, task_index: int, metrics: dict, accuracy_matrix: AccuracyMatrix) -> JointUNet2DModel:
        task_dir = self.run_folder.task_dir(task_index)
        model = JDCLPipeline.from_pretrained(task_dir).unet.to(self.accelerator.device).eval()
        record = self.run_folder.read_task_record(task_index)
        key = str(task_index + 1)
        if task_index < len(metrics["accuracy_matrix"]) and task_index < len(metrics["accuracy_seen"]):
            accuracy_matrix.add_row(accuracy_rows_from_json(metrics["accuracy_matrix"])[task_index])
        elif record is not None:
            # Killed between saving the task folder and writing metrics.json: its record says what it measured.
            accuracy_matrix.add_row(record["accuracy_per_task"])
            metrics["accuracy_seen"] = metrics["accuracy_seen"][:task_index] + [record["accuracy_seen"]]
            metrics["stage_seconds"][key] = record["stage_seconds"]
            if record["rehearsal"] is not None:
                metrics["rehearsal"][key] = record["rehearsal"]
            if record.get("quality") is not None and "quality" in metrics:
                metrics["quality"]["tasks"][key] = record["quality"]
        else:
            # A folder of a jdcl version that kept no task record: evaluate the task again.
            evaluation = self._evaluate(model, task_index)
            accuracy_matrix.add_row(evaluation.accuracy_per_task)
            metrics["accuracy_seen"] = metrics["accuracy_seen"][:task_index] + [evaluation.accuracy_seen]
        if self.accelerator.is_main_process:
            # Killed after the task folder was saved, its stage checkpoints may have been left behind.
            self.run_folder.remove_stage_checkpoints(task_index)
        logger.info(f"Task {task_index + 1} was finished by an earlier run; loaded it from {task_dir}.")
        return model

    # ------------------------------------------------------------------------------------------------ outputs

    def _evaluate(self, model: JointUNet2DModel, task_index: int):
        tasks = self.split.tasks[: task_index + 1]
        return evaluate_seen_tasks(model, self.test_data, tasks, batch_size=self.config.eval_batch_size)

    def _measure_quality(self, strategy: ContinualStrategy, task: Task, model: JointUNet2DModel) -> dict | None:
        """The task's generation quality, measured by the main process (`None` when no quality metric is asked); its
        seconds go to the task's `stage_seconds` under "quality"."""
        quality = None
        if self.quality is not None:
            start_time = time.time()
            generator = strategy.task_generator(task, model)
            quality = self.quality.measure(task.index, task.seen_classes, generator, model, task.rehearsal_set)
            task.stage_seconds["quality"] = time.time() - start_time
        self.accelerator.wait_for_everyone()
        return quality

    def _report(self, task_index: int, evaluation: TaskEvaluation, summary: dict, quality: dict | None = None) -> None:
        accuracy_seen = evaluation.accuracy_seen
        if self.accelerator.is_main_process:
            # At the run's step after the task's stages; the accuracy matrix's row, one curve per task.
            self.accelerator.log(
                {
                    "eval/accuracy_seen": accuracy_seen,
                    "eval/average_accuracy": summary["average_accuracy"],
                    "eval/forgetting": summary["forgetting"],
                    **{f"eval/accuracy_task_{j + 1}": value for j, value in enumerate(evaluation.accuracy_per_task)},
                    **quality_scalars(quality or {}),
                },
                step=self.stages.global_step,
            )
        message = (
            f"Task {task_index + 1}/{self.split.num_tasks}: accuracy on seen classes {accuracy_seen:.4f}, average "
            f"accuracy {summary['average_accuracy']:.4f}, forgetting so far {summary['forgetting']:.4f}"
        )
        # Printed once: through logging when it shows INFO lines, else beside the progress bars.
        if logger.isEnabledFor(logging.INFO):
            logger.info(message)
        elif self.show_progress:
            tqdm.write(message)

    def _write_metrics(self, metrics: dict, accuracy_matrix: AccuracyMatrix) -> dict:
        metrics["dataset"] = self.dataset_display_name
        metrics["strategy"] = self.config.strategy
        metrics["class_order"] = self.class_order
        metrics["tasks"] = self.split.tasks
        metrics["accuracy_matrix"] = accuracy_matrix.to_list()
        metrics.update(accuracy_matrix.metrics())
        if self.accelerator.is_main_process:
            title = f"{self.config.strategy} on {self.dataset_display_name}"
            self.run_folder.write_metrics(metrics, accuracy_matrix, title)
        return metrics

    def task_pipeline(
        self, model: JointUNet2DModel, task_index: int, accuracy_matrix: AccuracyMatrix | None = None
    ) -> JDCLPipeline:
        r"""
        The pipeline of `model` after task `task_index` (from 0), which records the run's classes, its tasks so far and
        (given) its accuracy matrix so far: what a run that continues it reads.

        Args:
            model ([`JointUNet2DModel`]): The model after the task.
            task_index (`int`): The task, from 0.
            accuracy_matrix ([`AccuracyMatrix`], *optional*): The run's matrix, filled up to the task.
        """
        pipeline = JDCLPipeline(
            unet=model,
            scheduler=self.sampling_scheduler,
            class_names=self.data.class_names,
            class_order=self.class_order,
            seen_classes=self.split.classes_seen(task_index),
            task_index=task_index + 1,
            num_tasks=self.split.num_tasks,
            tasks=self.split.tasks[: task_index + 1],
            accuracy_matrix=None if accuracy_matrix is None else accuracy_matrix.lower_triangle_list(task_index + 1),
        )
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _sample_grid(self, pipeline: JDCLPipeline, task_index: int):
        classes = self.split.classes_seen(task_index)
        count = self.config.grid_samples_per_class
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
        self,
        task_index: int,
        model: JointUNet2DModel,
        accuracy_matrix: AccuracyMatrix,
        summary,
        quality: dict | None,
        accuracy_seen: float | None = None,
    ) -> None:
        if self.accelerator.is_main_process:
            pipeline = self.task_pipeline(model, task_index, accuracy_matrix)
            grid = self._sample_grid(pipeline, task_index) if self.config.grid_samples_per_class > 0 else None
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
                quality=quality,
                strategy=self.config.strategy,
                accuracy_seen=accuracy_seen,
            )
            self.run_folder.save_task(task_index, pipeline, grid, card)
            if grid is not None:
                log_image(self.accelerator, f"samples/task_{task_index + 1}", grid, self.stages.global_step)
        self.accelerator.wait_for_everyone()


def train_jdcl(config: JDCLTrainingConfig, **kwargs) -> dict:
    r"""
    Runs a whole continual run with the method `config.strategy` and returns its metrics.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration.
        kwargs: Passed to [`ContinualTrainer`].
    """
    return ContinualTrainer(config, **kwargs).train()


__all__ = ["RUN_CONFIG_NAME", "ContinualTrainer", "train_jdcl"]

"""Generation quality in a continual run: after every task, fresh samples and the task's rehearsal set against the real
test images of the seen classes."""

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..models import JointUNet2DModel, mask_logits
from ..pipelines.pipeline_jdcl import JDCLPipeline
from ..rehearsal import RehearsalSet
from ..tensor_data import TensorData
from .distances import QualityReference
from .extractors import DinoV2FeatureExtractor, FeatureExtractor, InceptionFeatureExtractor
from .referee import load_or_train_referee


logger = logging.getLogger(__name__)

QUALITY_EXTRACTORS = ("referee", "dinov2", "inception")
# Sampling seeds of the quality samples, apart from those of rehearsal (`seed + 1000 * task + 100 * source`).
_QUALITY_SEED_OFFSET = 7_000_000


def check_quality_metrics(names: Sequence[str] | None) -> None:
    """Refuses unknown extractor names, or the same one twice."""
    if isinstance(names, str):
        raise ValueError(f"`quality_metrics` is a list of extractor names, got the string {names!r}; e.g. [referee].")
    names = list(names or [])
    unknown = sorted(set(names) - set(QUALITY_EXTRACTORS))
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"`--quality_metrics` takes distinct names from {list(QUALITY_EXTRACTORS)}, comma-separated, got "
            f"{names}; e.g. `--quality_metrics referee` (offline) or `--quality_metrics referee,dinov2`."
        )


class TaskQuality:
    r"""
    Measures a run's generation quality after every task, with each configured extractor:

    - `samples`: `quality_samples_per_class` times the seen classes' count of fresh unguided samples of the model that
      generates, labelled by the task's classifier (among the seen classes), against the real test images of the seen
      classes: Fréchet distance, KID, and the Fréchet distance per class;
    - `rehearsal`: the task's rehearsal set (its own labels) against the real test images of its classes.

    It draws from its own seeded generators and leaves every random state as it was, so a run measures the same with
    it on or off.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration (`quality_*` and `replay_*` settings).
        references (`dict[str, QualityReference]`): One reference of the real test images per extractor.
        sampling_scheduler ([`SchedulerMixin`]): The scheduler samples are drawn with.
        extractor_records (`dict[str, dict]`): What to record of each extractor (the referee's test accuracy).
    """

    def __init__(self, config, references: dict[str, QualityReference], sampling_scheduler, extractor_records: dict):
        self.config = config
        self.references = references
        self.sampling_scheduler = sampling_scheduler
        self.extractor_records = extractor_records

    @staticmethod
    def load_extractors(config, device: torch.device) -> dict[str, FeatureExtractor]:
        """The extractors that need no training data (DINOv2, Inception), loaded before any training."""
        extractors = {}
        if "dinov2" in config.quality_metrics:
            extractors["dinov2"] = DinoV2FeatureExtractor.from_pretrained(config.quality_dinov2_model).to(device)
        if "inception" in config.quality_metrics:
            extractors["inception"] = InceptionFeatureExtractor().to(device)
        return extractors

    @classmethod
    def build(
        cls,
        config,
        extractors: dict[str, FeatureExtractor],
        folder: str | Path,
        train_data: TensorData,
        test_data: TensorData,
        num_classes: int,
        sampling_scheduler,
        device: torch.device,
        show_progress: bool = True,
    ) -> "TaskQuality":
        r"""
        Trains (or reads back) the referee where it is asked for, and extracts the real test images' features once.

        Args:
            config ([`JDCLTrainingConfig`]): The run's configuration.
            extractors (`dict[str, FeatureExtractor]`): From [`~TaskQuality.load_extractors`].
            folder (`str` or `Path`): The run's `quality/` folder (the referee is kept in `referee/`).
            train_data ([`TensorData`]): All real training images with their labels (the referee's data).
            test_data ([`TensorData`]): The real test images of the run's classes.
            num_classes (`int`): Classes of the data set.
            sampling_scheduler ([`SchedulerMixin`]): The scheduler samples are drawn with.
            device (`torch.device`): Where features are extracted.
            show_progress (`bool`, *optional*, defaults to `True`): Progress bars.
        """
        extractors = dict(extractors)
        records = {name: {} for name in config.quality_metrics}
        if "dinov2" in records:
            records["dinov2"]["model"] = config.quality_dinov2_model
        if "referee" in config.quality_metrics:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                referee = load_or_train_referee(
                    Path(folder) / "referee",
                    train_data,
                    test_data,
                    num_classes,
                    num_steps=config.quality_referee_steps,
                    seed=config.seed,
                    device=device,
                    show_progress=show_progress,
                )
            extractors["referee"] = referee
            records["referee"]["test_accuracy"] = referee.test_accuracy
        references = {
            name: QualityReference(extractors[name], test_data.images, test_data.labels)
            for name in config.quality_metrics
        }
        return cls(config, references, sampling_scheduler, records)

    @torch.no_grad()
    def samples(
        self, generator: JointUNet2DModel, classifier: JointUNet2DModel, classes: list[int], seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        Fresh unguided samples of `generator`, labelled by `classifier` among `classes`.

        Args:
            generator ([`JointUNet2DModel`]): The model that samples.
            classifier ([`JointUNet2DModel`]): The model that labels.
            classes (`list[int]`): The seen classes.
            seed (`int`): Seeds the sampling.
        """
        config = self.config
        pipeline = JDCLPipeline(unet=generator, scheduler=self.sampling_scheduler)
        pipeline.set_progress_bar_config(disable=True)
        random = torch.Generator(device=generator.device).manual_seed(seed)
        total = config.quality_samples_per_class * len(classes)
        images = []
        for start in range(0, total, config.replay_batch_size):
            images.append(
                pipeline.sample_images(
                    min(config.replay_batch_size, total - start),
                    num_inference_steps=config.replay_inference_steps,
                    eta=config.replay_eta,
                    generator=random,
                    show_progress=False,
                ).cpu()
            )
        images = torch.cat(images)
        labels = []
        for chunk in images.split(config.eval_batch_size):
            logits = classifier.classify(chunk.to(device=classifier.device, dtype=classifier.dtype)).float()
            labels.append(mask_logits(logits, classes).argmax(dim=-1).cpu())
        return images, torch.cat(labels)

    def measure(
        self,
        task_index: int,
        seen_classes: list[int],
        generator: JointUNet2DModel,
        classifier: JointUNet2DModel,
        rehearsal: RehearsalSet | None,
    ) -> dict:
        r"""
        The quality after task `task_index`: `{extractor: {"samples": {...}, "rehearsal": {...}}}` (see
        [`QualityReference.measure`]; no `rehearsal` for a task without one).

        Args:
            task_index (`int`): The task, from 0.
            seen_classes (`list[int]`): The classes seen so far.
            generator ([`JointUNet2DModel`]): The model that generates after the task.
            classifier ([`JointUNet2DModel`]): The task's classifier (it labels the samples).
            rehearsal ([`RehearsalSet`], *optional*): The rehearsal set the task trained on.
        """
        devices = [generator.device] if generator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed = self.config.seed + _QUALITY_SEED_OFFSET + task_index
            images, labels = self.samples(generator, classifier, seen_classes, seed)
            result = {}
            for name, reference in self.references.items():
                result[name] = {"samples": reference.measure(images, labels, classes=seen_classes)}
                if rehearsal is not None and len(rehearsal) >= 2:
                    rehearsal_classes = sorted(rehearsal.labels.unique().tolist())
                    result[name]["rehearsal"] = reference.measure(
                        rehearsal.images, rehearsal.labels, classes=rehearsal_classes
                    )
        return result


def quality_scalars(quality: dict) -> dict[str, float]:
    """The tensorboard scalars of one task's quality: `quality/<extractor>/<set>_<fd|kid>`."""
    scalars = {}
    for name, sets in quality.items():
        for set_name, values in sets.items():
            scalars[f"quality/{name}/{set_name}_fd"] = values["fd"]
            scalars[f"quality/{name}/{set_name}_kid"] = values["kid"]
    return scalars


__all__ = ["QUALITY_EXTRACTORS", "TaskQuality", "check_quality_metrics", "quality_scalars"]

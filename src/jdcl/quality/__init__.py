"""Generation quality: Fréchet distance and KID between image sets, on the features of a pluggable extractor."""

from .distances import QualityReference, extract_features, frechet_distance, kernel_distance
from .extractors import DEFAULT_DINOV2_MODEL, DinoV2FeatureExtractor, FeatureExtractor, InceptionFeatureExtractor
from .referee import RefereeClassifier, RefereeFeatureExtractor, load_or_train_referee, train_referee
from .task_quality import QUALITY_EXTRACTORS, TaskQuality, check_quality_metrics, quality_scalars


__all__ = [
    "DEFAULT_DINOV2_MODEL",
    "QUALITY_EXTRACTORS",
    "DinoV2FeatureExtractor",
    "FeatureExtractor",
    "InceptionFeatureExtractor",
    "QualityReference",
    "RefereeClassifier",
    "RefereeFeatureExtractor",
    "TaskQuality",
    "check_quality_metrics",
    "extract_features",
    "frechet_distance",
    "kernel_distance",
    "load_or_train_referee",
    "quality_scalars",
    "train_referee",
]

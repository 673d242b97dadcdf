"""jdcl: JDCL joint diffusion models for class-incremental continual learning, native to diffusers."""

__version__ = "0.1.0"

from .models import JointUNet2DModel, JointUNet2DOutput
from .pipelines import JDCLClassificationOutput, JDCLPipeline


__all__ = [
    "JDCLClassificationOutput",
    "JDCLPipeline",
    "JointUNet2DModel",
    "JointUNet2DOutput",
]

"""jdcl: JDCL joint diffusion models for class-incremental continual learning, native to diffusers."""

__version__ = "0.1.0"

import diffusers as _diffusers

from .models import JointUNet2DModel, JointUNet2DOutput
from .pipelines import JDCLClassificationOutput, JDCLPipeline


# diffusers' generic loader resolves a pipeline's `_class_name` in its own namespace only (0.42): registering the class
# there lets `DiffusionPipeline.from_pretrained(<a jdcl folder>)` work once jdcl is imported. (Its custom-pipeline
# mechanism would need `trust_remote_code=True` on every load, `JDCLPipeline.from_pretrained` included.)
if not hasattr(_diffusers, "JDCLPipeline"):
    _diffusers.JDCLPipeline = JDCLPipeline


__all__ = [
    "JDCLClassificationOutput",
    "JDCLPipeline",
    "JointUNet2DModel",
    "JointUNet2DOutput",
]

"""jdcl: JDCL joint diffusion models for class-incremental continual learning, native to diffusers."""

__version__ = "0.1.0"

import os as _os


# Before torch loads OpenMP (jdcl imports it through diffusers): its default busy-waiting threads slow a step up to 50x
# whenever another process shares the cores (measured on 2 cores beside one busy process: 6.1 s against 0.13 s per demo
# training step). A value set by the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import diffusers as _diffusers  # noqa: E402

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

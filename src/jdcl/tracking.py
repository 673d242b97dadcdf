"""Experiment trackers (accelerate's): the asked one must be installed, and a run's pictures reach each of them."""

import numpy as np
import PIL.Image
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers


__all__ = ["check_tracker_installed", "log_image"]


def check_tracker_installed(tracker: str) -> None:
    r"""
    Refuses a tracker that is not installed: accelerate would drop it silently, and the run would log nothing.

    Args:
        tracker (`str`): The value of `--logger` (`--report_to`): a tracker's name, `"all"` (every installed one) or
            `"none"`.

    Raises:
        `ValueError`: When `tracker` names a tracker whose package cannot be imported.
    """
    if tracker in ("all", "none"):
        return
    available = {str(name) for name in get_available_trackers()}
    if tracker not in available:
        raise ValueError(
            f"`--logger {tracker}` (`--report_to {tracker}`) needs the `{tracker}` package, which is not installed: "
            f"`pip install {tracker}`, or pass `--logger tensorboard` (installed with jdcl) or `--logger none`."
        )


def log_image(accelerator: Accelerator, tag: str, image: PIL.Image.Image, step: int) -> None:
    r"""
    Logs one picture to every tracker of `accelerator` that shows pictures (tensorboard, wandb).

    Args:
        accelerator (`Accelerator`): The run's accelerator, its trackers initialised.
        tag (`str`): The picture's name in the trackers.
        image (`PIL.Image.Image`): The picture.
        step (`int`): The run's global step.
    """
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            pixels = np.asarray(image.convert("RGB"))[None]
            tracker.log_images({tag: pixels}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({tag: [image]}, step=step)

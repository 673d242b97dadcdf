"""The schedulers of a run: the training noise schedule, and the scheduler rehearsal and pictures are sampled with."""

import diffusers
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin


# Short names of `--replay_scheduler`, with the settings that make the named solver; any class of
# `SAMPLING_SCHEDULER_CLASSES` is accepted by its class name too.
REPLAY_SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "sde-dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}
# The schedulers that sample a DDPM-trained model from its betas (EDM's own sigma schedule is not one of them).
SAMPLING_SCHEDULER_CLASSES = tuple(name for name in DDPMScheduler._compatibles if name != "EDMEulerScheduler")


def noise_scheduler_from_config(config) -> DDPMScheduler:
    r"""
    The training noise schedule of a run: linear betas, epsilon prediction.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration.
    """
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule="linear",
        prediction_type="epsilon",
    )


def sampling_scheduler_from_config(config) -> SchedulerMixin:
    r"""
    The scheduler a run samples rehearsal, quality samples and sample grids with (`config.replay_scheduler`), on the
    run's training noise schedule; it is also the scheduler of the pipelines the run saves.

    Args:
        config ([`JDCLTrainingConfig`]): The run's configuration.

    Raises:
        `ValueError`: when `replay_scheduler` names no scheduler that can sample the run's model, or diffusers cannot
            build it (a missing optional dependency, say).
    """
    name = config.replay_scheduler
    class_name, settings = REPLAY_SCHEDULERS.get(name, (name, {}))
    if class_name not in SAMPLING_SCHEDULER_CLASSES:
        raise ValueError(
            f"`--replay_scheduler` must be one of {list(REPLAY_SCHEDULERS)} or a diffusers scheduler class among "
            f"{list(SAMPLING_SCHEDULER_CLASSES)}, got {name!r}."
        )
    try:
        return getattr(diffusers, class_name).from_config(noise_scheduler_from_config(config).config, **settings)
    except (ImportError, ValueError, NotImplementedError) as error:
        raise ValueError(f"`--replay_scheduler {name}` cannot be built: {error}") from None


__all__ = [
    "REPLAY_SCHEDULERS",
    "SAMPLING_SCHEDULER_CLASSES",
    "noise_scheduler_from_config",
    "sampling_scheduler_from_config",
]

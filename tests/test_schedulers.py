"""`--replay_scheduler`: any diffusers scheduler of the run's noise schedule samples rehearsal and goes with the
saved pipelines."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler

from jdcl import JDCLPipeline
from jdcl.config import JDCLTrainingConfig
from jdcl.schedulers import REPLAY_SCHEDULERS, sampling_scheduler_from_config
from jdcl.trainer import train_jdcl

from .test_trainer import tiny_config
from .utils import task_unet_weights


@pytest.mark.parametrize("name", sorted(REPLAY_SCHEDULERS))
def test_every_short_name_builds_its_scheduler_on_the_run_noise_schedule(name):
    config = JDCLTrainingConfig(replay_scheduler=name, beta_start=2e-3, beta_end=0.03, num_train_timesteps=500)
    scheduler = sampling_scheduler_from_config(config)
    class_name, settings = REPLAY_SCHEDULERS[name]
    assert type(scheduler).__name__ == class_name
    for key, value in settings.items():
        assert scheduler.config[key] == value
    training = DDPMScheduler(num_train_timesteps=500, beta_start=2e-3, beta_end=0.03, beta_schedule="linear")
    assert torch.equal(scheduler.alphas_cumprod, training.alphas_cumprod)


def test_a_class_name_is_accepted_and_the_default_is_ddim():
    assert isinstance(sampling_scheduler_from_config(JDCLTrainingConfig()), DDIMScheduler)
    config = JDCLTrainingConfig(replay_scheduler="DPMSolverSinglestepScheduler")
    assert isinstance(sampling_scheduler_from_config(config), DPMSolverSinglestepScheduler)


def test_rehearsal_is_sampled_with_the_chosen_scheduler(tmp_path):
    ddim = train_jdcl(tiny_config(tmp_path / "ddim"))
    dpm = train_jdcl(tiny_config(tmp_path / "dpm", replay_scheduler="dpmsolver++"))
    # Task 1 has no rehearsal: the same weights. Task 2 trains on rehearsal from another solver: other weights.
    first_ddim, first_dpm = task_unet_weights(tmp_path / "ddim", 1), task_unet_weights(tmp_path / "dpm", 1)
    assert all(torch.equal(first_ddim[name], first_dpm[name]) for name in first_ddim)
    second_ddim, second_dpm = task_unet_weights(tmp_path / "ddim", 2), task_unet_weights(tmp_path / "dpm", 2)
    assert not all(torch.equal(second_ddim[name], second_dpm[name]) for name in second_ddim)
    assert dpm["rehearsal"]["2"]["per_class"] == ddim["rehearsal"]["2"]["per_class"]
    # The saved pipeline samples with it too.
    pipe = JDCLPipeline.from_pretrained(tmp_path / "dpm" / "task-2")
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    images = pipe(batch_size=2, num_inference_steps=3, output_type="pt").images
    assert images.shape[0] == 2 and torch.isfinite(images).all()

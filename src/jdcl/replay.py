"""Rehearsal generation split across processes: each process samples its share of every quota, then all gather."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from diffusers import DDIMScheduler

from .models.joint_unet_2d import JointUNet2DModel
from .pipelines.pipeline_jdcl import JDCLPipeline


@dataclass
class RehearsalSet:
    r"""
    Generated rehearsal data, the same on every process.

    Args:
        images (`torch.Tensor`): Images in [-1, 1], `(N, C, H, W)`, on the CPU.
        labels (`torch.Tensor`): Labels `(N,)`.
        is_old (`torch.Tensor`): Whether each sample is of a class of an earlier task, `(N,)` bool.
        num_generated (`int`): Samples generated in all processes, kept or not.
        num_filled (`int`): Flipped/shifted copies that filled short classes.
    """

    images: torch.Tensor
    labels: torch.Tensor
    is_old: torch.Tensor
    num_generated: int
    num_filled: int

    def __len__(self) -> int:
        return self.labels.numel()

    @classmethod
    def concatenate(cls, parts: Sequence["RehearsalSet"]) -> "RehearsalSet":
        return cls(
            images=torch.cat([part.images for part in parts]),
            labels=torch.cat([part.labels for part in parts]),
            is_old=torch.cat([part.is_old for part in parts]),
            num_generated=sum(part.num_generated for part in parts),
            num_filled=sum(part.num_filled for part in parts),
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "images": self.images.contiguous(),
            "labels": self.labels,
            "is_old": self.is_old,
            "counts": torch.tensor([self.num_generated, self.num_filled]),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "RehearsalSet":
        return cls(
            images=state["images"],
            labels=state["labels"],
            is_old=state["is_old"].bool(),
            num_generated=int(state["counts"][0]),
            num_filled=int(state["counts"][1]),
        )


def process_quotas(samples_per_class: int, num_processes: int, process_index: int) -> int:
    r"""
    The share of a class quota that one process generates; the shares of all processes add up to the quota.

    Args:
        samples_per_class (`int`): The class quota.
        num_processes (`int`): Number of processes.
        process_index (`int`): This process.
    """
    return samples_per_class // num_processes + (1 if process_index < samples_per_class % num_processes else 0)


def generate_rehearsal_set(
    accelerator: Accelerator,
    model: JointUNet2DModel,
    scheduler: DDIMScheduler,
    classes: Sequence[int],
    samples_per_class: int,
    is_old: bool,
    seed: int,
    num_inference_steps: int,
    batch_size: int,
    sampler: str = "label",
    guidance_scale: float = 3.0,
    max_sampling_factor: float = 2.0,
    selection: str = "first",
    eta: float = 0.0,
    show_progress: bool = True,
    labeller: JointUNet2DModel | None = None,
) -> RehearsalSet:
    r"""
    Generates a labelled rehearsal set with [`JDCLPipeline.generate_rehearsal`], split across processes and gathered,
    so every process gets the same set.

    Args:
        accelerator (`Accelerator`): The run's accelerator.
        model ([`JointUNet2DModel`]): The generator and labeller (EMA weights, eval mode).
        scheduler ([`DDIMScheduler`]): The sampling scheduler.
        classes (`Sequence[int]`): Classes to generate.
        samples_per_class (`int`): Quota per class, over all processes.
        is_old (`bool`): Whether these classes belong to earlier tasks (decides the teacher in the global stage).
        seed (`int`): Seed of this generation; each process adds its index.
        num_inference_steps (`int`): DDIM steps.
        batch_size (`int`): Samples at once per process.
        sampler (`str`, *optional*, defaults to `"label"`): "label" or "guided" (see `generate_rehearsal`).
        guidance_scale (`float`, *optional*, defaults to 3.0): Guidance strength of the "guided" sampler.
        max_sampling_factor (`float`, *optional*, defaults to 2.0): Sampling budget as a multiple of the quota.
        selection (`str`, *optional*, defaults to `"first"`): "first" or "confident" (see `generate_rehearsal`).
        eta (`float`, *optional*, defaults to 0.0): DDIM's eta.
        show_progress (`bool`, *optional*, defaults to `True`): Progress bar on the main process.
        labeller ([`JointUNet2DModel`], *optional*, defaults to `None`):
            A separate classifier that labels the samples; `model`'s own classifier when `None`.
    """
    classes = list(classes)
    channels, height, width = model.config.in_channels, model.config.sample_size, model.config.sample_size
    if not classes or samples_per_class == 0:
        return RehearsalSet(
            images=torch.empty(0, channels, height, width),
            labels=torch.empty(0, dtype=torch.long),
            is_old=torch.empty(0, dtype=torch.bool),
            num_generated=0,
            num_filled=0,
        )
    pipeline = JDCLPipeline(unet=model, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=not (show_progress and accelerator.is_local_main_process))
    share = process_quotas(samples_per_class, accelerator.num_processes, accelerator.process_index)
    local = pipeline.generate_rehearsal(
        classes=classes,
        samples_per_class=share,
        batch_size=batch_size,
        num_inference_steps=num_inference_steps,
        sampler=sampler,
        guidance_scale=guidance_scale,
        max_sampling_factor=max_sampling_factor,
        selection=selection,
        eta=eta,
        generator=torch.Generator(device=accelerator.device).manual_seed(seed + accelerator.process_index),
        show_progress=show_progress and accelerator.is_local_main_process,
        classifier=labeller,
    )
    if accelerator.num_processes == 1:
        images, labels = local.images.cpu(), local.labels.cpu()
        num_generated, num_filled = local.num_generated, local.num_filled
    else:
        # Shares differ by at most one per class: pad to the largest, gather, then drop each process's padding.
        max_share = process_quotas(samples_per_class, accelerator.num_processes, 0) * len(classes)
        padded_images = local.images.new_zeros((max_share, channels, height, width))
        padded_images[: local.images.shape[0]] = local.images
        padded_labels = torch.full((max_share,), -1, dtype=torch.long, device=accelerator.device)
        padded_labels[: local.labels.numel()] = local.labels.to(accelerator.device)
        counts = torch.tensor([local.num_generated, local.num_filled], device=accelerator.device)
        all_images = accelerator.gather(padded_images.to(accelerator.device).contiguous()).cpu()
        all_labels = accelerator.gather(padded_labels).cpu()
        all_counts = accelerator.gather(counts[None]).cpu()
        keep = all_labels >= 0
        images, labels = all_images[keep], all_labels[keep]
        num_generated, num_filled = int(all_counts[:, 0].sum()), int(all_counts[:, 1].sum())
    return RehearsalSet(
        images=images.float(),
        labels=labels,
        is_old=torch.full((labels.numel(),), is_old, dtype=torch.bool),
        num_generated=num_generated,
        num_filled=num_filled,
    )

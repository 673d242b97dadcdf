"""A joint model from any pretrained diffusers `UNet2DModel`: its UNet kept as it is, a new classifier head."""

import inspect

import torch
from diffusers.models.unets.unet_2d import UNet2DModel

from .joint_unet_2d import JointUNet2DModel


def joint_unet_from_unet2d(
    unet: UNet2DModel,
    num_classes: int,
    classifier_hidden_dim: int = 1024,
    classifier_dropout: float = 0.1,
    seed: int = 0,
) -> JointUNet2DModel:
    r"""
    A [`JointUNet2DModel`] whose UNet is `unet` (same configuration, same weights: its noise prediction is `unet`'s,
    bit for bit) and whose classifier head is new, initialised from `seed`.

    Args:
        unet ([`UNet2DModel`]):
            A diffusers UNet, e.g. `UNet2DModel.from_pretrained("google/ddpm-cifar10-32")`.
        num_classes (`int`):
            Classes of the new head: every class of the continual run.
        classifier_hidden_dim (`int`, *optional*, defaults to 1024):
            Width of the head's hidden layer.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            Dropout in the head.
        seed (`int`, *optional*, defaults to 0):
            Seed of the head's initialisation.

    Returns:
        [`JointUNet2DModel`]: the joint model, in `unet`'s dtype and on its device.
    """
    accepted = set(inspect.signature(JointUNet2DModel.__init__).parameters) - {"self"}
    unet_config = {key: value for key, value in unet.config.items() if not key.startswith("_")}
    # A joint model saved by jdcl may be given too: its own head is replaced.
    for key in ("num_classes", "classifier_hidden_dim", "classifier_dropout"):
        unet_config.pop(key, None)
    unknown = sorted(set(unet_config) - accepted)
    if unknown:
        raise ValueError(
            f"The pretrained UNet's configuration has settings {unknown} that `JointUNet2DModel` does not know (a "
            "newer diffusers release?); load a `UNet2DModel` checkpoint of this diffusers version."
        )
    torch.manual_seed(seed)
    model = JointUNet2DModel(
        **unet_config,
        num_classes=num_classes,
        classifier_hidden_dim=classifier_hidden_dim,
        classifier_dropout=classifier_dropout,
    )
    unet_weights = {key: value for key, value in unet.state_dict().items() if not key.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(unet_weights, strict=False)
    missing = [key for key in missing if not key.startswith("classifier.")]
    if missing or unexpected:
        raise ValueError(
            f"The pretrained UNet's weights do not fit its own configuration (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); the checkpoint is damaged or was saved by another class."
        )
    if model.dtype != unet.dtype:
        model = model.to(dtype=unet.dtype)
    return model.to(device=unet.device)

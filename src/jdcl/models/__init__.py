from .joint_unet_2d import (
    JointClassifierHead,
    JointUNet2DEncoderOutput,
    JointUNet2DModel,
    JointUNet2DOutput,
    class_mask,
    mask_logits,
)


__all__ = [
    "JointClassifierHead",
    "JointUNet2DEncoderOutput",
    "JointUNet2DModel",
    "JointUNet2DOutput",
    "class_mask",
    "mask_logits",
]

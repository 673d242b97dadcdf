from .classifier_head import JointClassifierHead, class_mask, mask_logits
from .conversion import joint_unet_from_unet2d
from .joint_unet_2d import JointUNet2DModel
from .modeling_outputs import JointUNet2DEncoderOutput, JointUNet2DOutput


__all__ = [
    "JointClassifierHead",
    "JointUNet2DEncoderOutput",
    "JointUNet2DModel",
    "JointUNet2DOutput",
    "class_mask",
    "joint_unet_from_unet2d",
    "mask_logits",
]

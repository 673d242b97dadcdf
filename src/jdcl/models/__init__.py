from .joint_unet_2d import JointClassifierHead, JointUNet2DEncoderOutput, JointUNet2DModel, JointUNet2DOutput


__all__ = ["JointClassifierHead", "JointUNet2DEncoderOutput", "JointUNet2DModel", "JointUNet2DOutput"]

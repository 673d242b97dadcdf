"""DER++ (Buzzega et al., NeurIPS 2020, "Dark Experience for General Continual Learning"): experience replay whose
buffer keeps the model's logits of each stored image, matched later besides its label."""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..evaluation import classify_logits
from ..models.joint_unet_2d import JointUNet2DModel
from ..objectives import JointObjective, StageOutputs, joint_loss
from ..options import StrategyOption
from ..tensor_data import TensorData
from .base import register_strategy
from .replay_buffer import ReplayBufferStrategy


@dataclass
class DERObjective(JointObjective):
    r"""
    DER++'s loss (mammoth's `models/derpp.py`), on a batch whose last rows come from the buffer with their stored
    logits (`outputs.fields["logits"]`): the noise MSE on every image, and, weighted by `classification`,
    `CE(new rows) + alpha * MSE(logits, stored logits) + beta * CE(buffer rows)`. Without stored logits (the first
    task), the joint loss.

    Args:
        diffusion (`float`, *optional*, defaults to 1.0): Weight of the noise MSE.
        classification (`float`, *optional*, defaults to 1e-3): Weight of the classification terms.
        alpha (`float`, *optional*, defaults to 0.2): Weight of the logit matching, relative to the CE.
        beta (`float`, *optional*, defaults to 0.5): Weight of the buffer rows' CE, relative to the new rows' CE.
    """

    alpha: float = 0.2
    beta: float = 0.5

    def __call__(self, outputs: StageOutputs) -> dict[str, torch.Tensor]:
        stored = outputs.fields.get("logits")
        if stored is None or outputs.logits is None:
            return super().__call__(outputs)
        num_new = len(outputs.labels) - len(stored)
        new_rows = dataclasses.replace(outputs, logits=outputs.logits[:num_new], labels=outputs.labels[:num_new])
        terms = joint_loss(new_rows, self.diffusion, self.classification)
        buffer_logits = outputs.logits[num_new:].float()
        logit_matching = F.mse_loss(buffer_logits, stored.float())
        buffer_classification = F.cross_entropy(buffer_logits, outputs.labels[num_new:])
        penalty = self.alpha * logit_matching + self.beta * buffer_classification
        return {
            **terms,
            "loss": terms["loss"] + self.classification * penalty,
            "logit_matching": logit_matching.detach(),
            "buffer_classification": buffer_classification.detach(),
        }


@register_strategy
class DERStrategy(ReplayBufferStrategy):
    r"""
    DER++: experience replay (see [`ReplayBufferStrategy`]) whose buffer also stores, with each image, the logits the
    model gave it at the end of the task that stored it (mammoth records them as the images stream by, during
    training); replayed images are pulled towards those logits (`--der_alpha`) and their labels (`--der_beta`).
    One draw from the buffer serves both terms (mammoth draws twice).
    """

    name = "der"
    card_description = (
        "DER++ (dark experience replay): every batch is half the new classes' real data and half stored real images "
        "of earlier classes, which are also pulled towards the logits the model gave them when they were stored."
    )
    state_outside_checkpoint = "the real images and logits its buffer stored"
    options = (
        StrategyOption(
            "der_alpha", float, 0.2, "DER++: weight of matching the stored logits, relative to the CE.", low=0
        ),
        StrategyOption("der_beta", float, 0.5, "DER++: weight of the buffer images' CE, relative to the CE.", low=0),
    )

    def replay_objective(self) -> DERObjective:
        config = self.config
        return DERObjective(
            diffusion=config.diffusion_loss_weight,
            classification=config.classification_loss_weight,
            alpha=config.der_alpha,
            beta=config.der_beta,
        )

    @torch.no_grad()
    def buffer_fields(self, model: JointUNet2DModel, new_data: TensorData) -> dict[str, torch.Tensor]:
        return {"logits": classify_logits(model, new_data.images, self.config.eval_batch_size)}

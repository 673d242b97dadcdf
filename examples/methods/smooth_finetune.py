"""A method kept outside jdcl: finetuning whose classifier learns smoothed labels, with its own option."""

from dataclasses import dataclass

import torch.nn.functional as F

from jdcl.objectives import JointObjective
from jdcl.strategies import StrategyOption, register_strategy
from jdcl.strategies.finetune import FinetuneStrategy


@dataclass
class SmoothedObjective(JointObjective):
    label_smoothing: float = 0.1

    def __call__(self, outputs):
        diffusion = F.mse_loss(outputs.noise_pred.float(), outputs.noise.float())
        classification = F.cross_entropy(outputs.logits.float(), outputs.labels, label_smoothing=self.label_smoothing)
        loss = self.diffusion * diffusion + self.classification * classification
        return {"loss": loss, "diffusion": diffusion.detach(), "classification": classification.detach()}


@register_strategy
class SmoothFinetuneStrategy(FinetuneStrategy):
    """Each task trains on its own classes' real data; the classifier learns smoothed labels."""

    name = "smooth_finetune"
    options = (StrategyOption("smooth_label_smoothing", float, 0.1, "Label smoothing of the CE.", low=0.0, high=1.0),)

    def task_objective(self, task, previous):
        config = self.config
        return SmoothedObjective(
            config.diffusion_loss_weight, config.classification_loss_weight, config.smooth_label_smoothing
        )

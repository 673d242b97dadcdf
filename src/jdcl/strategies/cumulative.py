"""Cumulative, the upper bound: each task trains on the real data of every class seen so far."""

from .base import Task, register_strategy
from .finetune import FinetuneStrategy


@register_strategy
class CumulativeStrategy(FinetuneStrategy):
    r"""Finetune on all real data seen so far: what a continual method tries to approach without keeping data."""

    name = "cumulative"
    learns_from_unlabeled = True
    card_description = (
        "Cumulative, the upper bound: each task trains on the real data of every class seen so far, which a "
        "continual method that keeps no data tries to approach."
    )
    # Finetune, its parent, forgets the classes of earlier tasks; this method trains on them again at every task.
    keeps_old_classes = True

    def training_classes(self, task: Task) -> list[int]:
        return task.seen_classes

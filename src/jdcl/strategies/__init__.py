"""Continual-learning methods, one file each; `--strategy NAME` picks one by its registered name.

Every module of this package is imported here, so a method added as a new file with `@register_strategy` is
available with no other change.
"""

import importlib
import pkgutil

from .base import STRATEGIES, ContinualStrategy, Task, register_strategy


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


__all__ = ["STRATEGIES", "ContinualStrategy", "Task", "register_strategy"]

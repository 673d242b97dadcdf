"""Continual-learning methods, one file each; `--strategy NAME` picks one by its registered name.

Every module of this package is imported here, so a method added as a new file with `@register_strategy` is
available with no other change. A method kept in another package is registered by importing its module, which
happens here for every module a package names in its `jdcl.strategies` entry points:

    entry_points={"jdcl.strategies": ["my_method = my_package.my_method"]}
"""

import importlib
import importlib.metadata
import logging
import pkgutil

from ..options import StrategyOption
from .base import STRATEGIES, ContinualStrategy, Task, register_strategy


logger = logging.getLogger(__name__)

# The group of the entry points that name modules of methods kept outside this package.
ENTRY_POINT_GROUP = "jdcl.strategies"


def load_entry_points() -> None:
    """Imports the module of every `jdcl.strategies` entry point; one that fails is skipped with a warning."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as error:
            # A broken package of methods must not break jdcl for runs that do not use it.
            logger.warning(
                "The method of entry point %r (%s) was not loaded: %s: %s",
                entry_point.name,
                entry_point.value,
                type(error).__name__,
                error,
            )


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
load_entry_points()


__all__ = ["STRATEGIES", "ContinualStrategy", "StrategyOption", "Task", "register_strategy"]

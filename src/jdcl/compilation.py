"""The settings that make a run faster without changing what it trains: compilation and the memory format."""

import torch
from accelerate import Accelerator
from accelerate.utils import DynamoBackend, TorchDynamoPlugin


def dynamo_plugin(compile: bool) -> TorchDynamoPlugin | None:
    r"""
    The dynamo plugin of a run's own accelerator: inductor when `--compile` is set; otherwise `None`, which leaves the
    choice to `accelerate launch --dynamo_backend` and accelerate's config.

    Args:
        compile (`bool`): The run's `compile` setting.
    """
    return TorchDynamoPlugin(backend="inductor") if compile else None


def compile_kwargs(accelerator: Accelerator) -> dict | None:
    r"""
    The `torch.compile` arguments of the accelerator's dynamo plugin, or `None` when it compiles nothing. Accelerate
    compiles the training step it prepares; teachers and samplers are compiled with the same arguments.

    Args:
        accelerator (`Accelerator`): The run's accelerator.
    """
    plugin = accelerator.state.dynamo_plugin
    if plugin is None or plugin.backend == DynamoBackend.NO:
        return None
    return plugin.to_kwargs()


def maybe_compile(module: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    r"""
    `module` compiled as the accelerator's dynamo plugin says, or `module` itself.

    Args:
        module (`torch.nn.Module`): A module to call (a teacher, a sampling UNet).
        accelerator (`Accelerator`): The run's accelerator.
    """
    return compiled(module, compile_kwargs(accelerator))


def compiled(module: torch.nn.Module, kwargs: dict | None) -> torch.nn.Module:
    r"""
    `module` compiled with `kwargs`, or `module` itself when they are `None`.

    Args:
        module (`torch.nn.Module`): A module to call.
        kwargs (`dict`, *optional*): `torch.compile` arguments, as [`compile_kwargs`] gives them.
    """
    return module if kwargs is None else torch.compile(module, **kwargs)


def memory_format(channels_last: bool) -> torch.memory_format:
    r"""
    The memory format of models and batches: channels-last (faster convolutions with tensor cores) or the usual one.

    Args:
        channels_last (`bool`): The run's `channels_last` setting.
    """
    return torch.channels_last if channels_last else torch.contiguous_format

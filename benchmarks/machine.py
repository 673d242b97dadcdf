"""Where a benchmark ran: one description shared by every script under benchmarks/, so that recorded figures compare."""

import os
import platform
from typing import Any

import diffusers
import torch

import jdcl


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_description() -> dict[str, Any]:
    """CPU model, core and thread counts, the GPU if torch sees one, and library versions."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "jdcl": getattr(jdcl, "__version__", "unknown"),
        "python": platform.python_version(),
        "system": platform.system(),
        "platform": platform.platform(),
    }


def machine_summary(machine: dict[str, Any] | None = None) -> str:
    r"""
    One line for tables and results files: "CPU, N CPU cores (T torch threads), GPU or no GPU, torch V, OS".

    Args:
        machine (`dict`, *optional*): From [`machine_description`]; this machine when `None`.
    """
    machine = machine or machine_description()
    return (
        f"{machine['cpu_model']}, {machine['cpu_count']} CPU cores ({machine['torch_num_threads']} torch threads), "
        f"{machine['gpu'] or 'no GPU'}, torch {machine['torch']}, {machine['system']}"
    )

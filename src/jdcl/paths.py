"""The files and folders of a run: checks of the folders it writes into (`--output_dir`, `--cache_dir`), made before
anything is written, and reads of its kept tensors and records that name a damaged file."""

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


def check_writable_folder(path: str | os.PathLike, flag: str) -> Path:
    r"""
    Refuses a folder path that cannot be created or written: a file, a path under a file, or a folder this user may
    not write to.

    Args:
        path (`str` or `os.PathLike`): The folder, existing or to be created.
        flag (`str`): The flag that gave it (`"--output_dir"`), named in the error.

    Returns:
        `Path`: the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"`{flag} {path}` is a file, not a folder; pass the path of a folder (existing or new).")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(
            f"`{flag} {path}` lies under {ancestor}, which is a file, so the folder cannot be created; pass a path "
            "under a folder."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(
            f"`{flag} {path}` cannot be written: this user may not write to {ancestor}. Pass a folder you may write "
            "to, or change its permissions."
        )
    return path


def read_safetensors(path: str | os.PathLike, fix: str) -> dict[str, torch.Tensor]:
    r"""
    Reads a safetensors file that a run kept; a damaged one (cut short, overwritten) is refused with its path.

    Args:
        path (`str` or `os.PathLike`): The file.
        fix (`str`): What the user can do about a damaged file, as a sentence without its full stop.
    """
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is damaged: it cannot be read as safetensors ({error}). {fix}.") from None


def read_json(path: Path, fix: str) -> object:
    r"""
    Reads a JSON file of a run folder; a damaged one (cut short, edited) is refused with its path and `fix`.

    Args:
        path (`Path`): The file.
        fix (`str`): What the user can do about a damaged file, as a sentence without its full stop.
    """
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged: it is not valid JSON ({error}). {fix}.") from None

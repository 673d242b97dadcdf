"""Checks of the folders a run writes into (`--output_dir`, `--cache_dir`), made before anything is written."""

import os
from pathlib import Path


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
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ValueError(f"`{flag}` must name a folder, got {path!r}; pass a folder path such as `{flag} jdcl-run`.")
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

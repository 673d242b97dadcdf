"""Atomic outputs: a file or folder is either its old complete version or its new complete one, never half-written."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def replace_directory(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    r"""
    Moves a fully written folder over `destination`.

    A kill between the two renames leaves the old copy beside as `<destination>.old`; it is removed by the next
    replacement.

    Args:
        source (`str` or `os.PathLike`): The written folder, a sibling of `destination`.
        destination (`str` or `os.PathLike`): The final path.
    """
    source, destination = Path(source), Path(destination)
    follow_umask(source)
    if destination.exists():
        stale = destination.with_name(destination.name + ".old")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(destination, stale)
        os.replace(source, destination)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(source, destination)


def current_umask() -> int:
    """The process's file-mode creation mask (read without changing it where Linux reports it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    # Elsewhere the only way to read the mask is to set it, and set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    r"""
    Gives a written file, or a folder and everything in it, the modes the user's umask allows, as `open` and `mkdir`
    do: `mkstemp` and safetensors (which writes through a temporary file) leave files readable by their owner alone.

    Args:
        path (`str` or `os.PathLike`): The file or folder.
    """
    mask = current_umask()
    path = Path(path)
    for member in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not member.is_symlink():
            os.chmod(member, (0o777 if member.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike) -> Iterator[Path]:
    r"""
    Yields an empty folder `<destination>.tmp` to write into; on success it replaces `destination`.

    The temporary name is fixed (not random) so that every process of a distributed run writes into the same folder.

    Args:
        destination (`str` or `os.PathLike`): The folder to write.
    """
    destination = Path(destination)
    temporary = destination.with_name(destination.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    replace_directory(temporary, destination)


@contextlib.contextmanager
def atomic_file(destination: str | os.PathLike) -> Iterator[Path]:
    r"""
    Yields a temporary file path beside `destination` (same suffix, so writers that read it pick the right format);
    on success it is renamed over `destination`.

    Args:
        destination (`str` or `os.PathLike`): The file to write; missing parent folders are created.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.stem}.", suffix=destination.suffix or ".tmp"
    )
    os.close(descriptor)
    try:
        yield Path(temporary)
        follow_umask(temporary)
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_json(data: dict, path: str | os.PathLike) -> None:
    r"""
    Writes `data` as indented JSON, atomically.

    Args:
        data (`dict`): The content.
        path (`str` or `os.PathLike`): The destination.
    """
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2))

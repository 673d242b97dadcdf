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
    if destination.exists():
        stale = destination.with_name(destination.name + ".old")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(destination, stale)
        os.replace(source, destination)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(source, destination)


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

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from jdcl.atomic import atomic_directory, atomic_file, current_umask, write_json


@pytest.fixture
def umask():
    """Sets the process's umask for one test, and restores it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_written_files_follow_the_umask_like_any_other_file(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    # What `open` creates under this umask: the mode every other file of a run gets.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_json({"a": 1}, tmp_path / "out" / "metrics.json")
    with atomic_file(tmp_path / "grid.png") as temporary:
        temporary.write_bytes(b"\x89PNG")
    # safetensors writes through a temporary file of its own, readable by its owner alone.
    with atomic_file(tmp_path / "rehearsal.safetensors") as temporary:
        save_file({"images": torch.zeros(2)}, temporary)
    assert mode(plain) == 0o666 & ~mask
    for name in ("out/metrics.json", "grid.png", "rehearsal.safetensors"):
        assert mode(tmp_path / name) == mode(plain), name
    # Reading the mask leaves it as it was.
    assert current_umask() == mask


def test_atomic_directory_follows_the_umask(tmp_path, umask):
    umask(0o027)
    with atomic_directory(tmp_path / "task-1") as temporary:
        write_json({"b": 2}, temporary / "record.json")
        (temporary / "unet").mkdir()
        save_file({"weight": torch.ones(3)}, temporary / "unet" / "diffusion_pytorch_model.safetensors")
    assert mode(tmp_path / "task-1") == mode(tmp_path / "task-1" / "unet") == 0o750
    assert mode(tmp_path / "task-1" / "record.json") == 0o640
    assert mode(tmp_path / "task-1" / "unet" / "diffusion_pytorch_model.safetensors") == 0o640


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "metrics.json") as temporary:
            temporary.write_text("{")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []

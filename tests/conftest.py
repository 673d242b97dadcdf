import os


# Set before anything imports huggingface_hub: online, it retries the unreachable Hub for ~25 s per call.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before torch loads OpenMP: its default busy-waiting threads slow a step up to 50x whenever another process shares
# the cores (measured on 2 cores beside one busy process: 6.1 s against 0.13 s per demo training step).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _small_cpu_threads():
    # Keep the tiny models fast and deterministic on the 2-core CI machines.
    torch.set_num_threads(2)
    yield


def pytest_collection_modifyitems(config, items):
    # Full-size end-to-end runs take minutes on 2 CPU cores; CI runs their small versions only.
    if os.environ.get("JDCL_RUN_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow end-to-end run; set JDCL_RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)

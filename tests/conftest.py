import os


# Set before anything imports huggingface_hub: online, it retries the unreachable Hub for ~25 s per call.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _small_cpu_threads():
    # Keep the tiny models fast and deterministic on the 2-core CI machines.
    torch.set_num_threads(2)
    yield

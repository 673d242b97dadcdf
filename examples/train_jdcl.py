#!/usr/bin/env python
"""Class-incremental training with JDCL (joint diffusion models for continual learning): the `jdcl-train` command.

    accelerate launch examples/train_jdcl.py                                  # the bundled digits demo
    accelerate launch examples/train_jdcl.py --config cifar10 --push_to_hub   # a shipped preset, or a preset's path

Every flag is a field of `jdcl.config.JDCLTrainingConfig` (`--help` lists them); the parser and the run are
`jdcl.cli.main`.
"""

import sys


# Run from a checkout without installing: the library lives in src/.
try:
    import jdcl  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"))

from jdcl.cli import main  # noqa: E402


if __name__ == "__main__":
    main()

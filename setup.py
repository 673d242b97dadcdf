from setuptools import find_packages, setup


setup(
    name="jdcl",
    version="0.1.0",
    description="JDCL: joint diffusion models for class-incremental continual learning, native to diffusers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # The model-card templates live in the top-level model_cards/ folder and ship as the package jdcl.model_cards.
    package_dir={"": "src", "jdcl.model_cards": "model_cards"},
    packages=find_packages("src") + ["jdcl.model_cards"],
    # py.typed: the package's type hints are meant for type checkers (PEP 561).
    # presets/: the YAML presets that `--config NAME` finds (examples/configs links to them).
    package_data={"jdcl": ["py.typed", "presets/*.yaml"], "jdcl.model_cards": ["*.md"]},
    python_requires=">=3.11",
    entry_points={"console_scripts": ["jdcl-train=jdcl.cli:main"]},
    install_requires=[
        "torch>=2.4",
        # JointUNet2DModel subclasses UNet2DModel and runs its blocks, and JDCLPipeline relies on how DiffusionPipeline
        # loads its config arguments; both are diffusers internals that minor releases change (before 0.37, loading a
        # saved JDCLPipeline fails on its class-order arguments). The suite passes on 0.37.1, 0.38.0 and 0.42.1 (the
        # newest release); the cap moves once it passes on the next minor release.
        "diffusers>=0.37.1,<0.43",
        "accelerate>=1.0",
        "datasets>=3.0",
        "safetensors",
        "huggingface_hub>=0.30",
        "kornia>=0.8",
        "scikit-learn",
        "torchmetrics>=1.4",
        "numpy",
        "Pillow",
        "tqdm",
        "matplotlib",
        "tensorboard",
        "PyYAML",
        "filelock",
    ],
    extras_require={
        # The feature extractors of `--quality_metrics`: DINOv2 through transformers, and the Inception-v3 of
        # published FID through torchmetrics, which needs torch-fidelity (torchmetrics' own bound).
        "quality": ["transformers>=4.43", "torch-fidelity<=0.4.0"],
        "wandb": ["wandb"],
        # The tests build a tiny DINOv2 with transformers; torch-fidelity's absence is tested too.
        "test": ["pytest>=8", "ruff", "transformers>=4.43"],
    },
)

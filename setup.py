from setuptools import find_packages, setup


setup(
    name="jdcl",
    version="0.1.0",
    description="JDCL: joint diffusion models for class-incremental continual learning, native to diffusers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    python_requires=">=3.11",
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.42.1,<0.43",
        "transformers",
        "accelerate>=1.0",
        "datasets>=3.0",
        "safetensors",
        "huggingface_hub>=0.30",
        "kornia>=0.8",
        "scikit-learn",
        "numpy",
        "Pillow",
        "tqdm",
        "matplotlib",
        "tensorboard",
        "PyYAML",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff"],
        "examples": ["tensorboard", "matplotlib"],
    },
)

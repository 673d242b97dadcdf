from .pipeline_jdcl import JDCLClassificationOutput, JDCLPipeline, JDCLRehearsalOutput


__all__ = ["JDCLClassificationOutput", "JDCLPipeline", "JDCLRehearsalOutput"]

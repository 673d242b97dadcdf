from .pipeline_jdcl import JDCLClassificationOutput, JDCLPipeline


__all__ = ["JDCLClassificationOutput", "JDCLPipeline"]

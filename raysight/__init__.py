"""raysight: SageMaker's built-in image classification and object detection on Ray."""

__version__ = "0.1.0"

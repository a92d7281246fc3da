"""Pure codecs for SageMaker's input formats: bytes in, records out, no Ray."""

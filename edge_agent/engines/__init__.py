"""Inference engines: ``llama`` (llama.cpp, GGUF) and ``onnx`` (onnxruntime encoders)."""

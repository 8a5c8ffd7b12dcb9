"""Torch-free query encoders: the ONNX towers and the CLIP tokenizer."""

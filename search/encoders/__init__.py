"""Torch-free query encoders: the ONNX towers, CLIP's BPE tokenizer and Hugging Face tokenizers."""

"""The torch-free query towers: their on-disk format, the ONNX export from a model, and their
install into an index.
"""

"""The models: specs and identity, fingerprints, loading open_clip checkpoints, the image
embedder, the ITM head module and the attention and trimmed text forward it shares with the
ONNX export. No index I/O.
"""

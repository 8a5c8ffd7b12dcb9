"""The models: specs and identity, loading open_clip checkpoints, the image embedder and the ITM
head module. No index I/O.
"""

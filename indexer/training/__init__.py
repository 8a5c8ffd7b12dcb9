"""Training and evaluation: pair files, batches, losses, the training loop, checkpoints,
calibration and metrics.
"""

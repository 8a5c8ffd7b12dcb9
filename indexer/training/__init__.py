"""Training and evaluation: pair files, batches, losses, the training loop, checkpoints,
calibration and metrics; and distilling a teacher's scores into a head on frozen towers.
"""

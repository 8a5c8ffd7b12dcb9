"""Training and evaluation: pair files, batches, losses, the training loop, checkpoints,
calibration and metrics; distilling a teacher's scores into a head on frozen towers; and a CoCa
captioner trained from scratch with its caption metrics (`coca_train`, `coca_metrics`).
"""

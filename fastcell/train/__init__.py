"""Training AttentionNet (torch): the loop, checkpoints with exact resume, logs and plots."""

from fastcell.train.trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]

"""The torch side of the detector: AttentionNet, K-means++ anchors (Algorithm 1), GIoU loss (Algorithm 2)."""

from fastcell.model.attentionnet import AttentionNet, conv_flops, count_parameters, fold_batchnorm

__all__ = ["AttentionNet", "conv_flops", "count_parameters", "fold_batchnorm"]

"""``fastcell anchors DATA``: K-means++ anchors for a data set (the paper's Algorithm 1)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Pascal VOC folder, YOLO data.yaml or COCO .json")
    parser.add_argument("--split", default="train", help="split whose boxes are clustered (default train)")
    from fastcell.defaults import INPUT_SIZE

    parser.add_argument("--input-size", type=int, default=INPUT_SIZE,
                        help=f"network input side the boxes are scaled to (default {INPUT_SIZE})")
    parser.add_argument("--metric", choices=("iou", "euclidean"), default="iou",
                        help="distance: 1 - IoU (default) or Euclidean in (w, h)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", default=None, help="draw the (w, h) scatter with the anchors")


def run(args: argparse.Namespace) -> int:
    from fastcell.data.labels import load_labels
    from fastcell.model.anchors import (YOLOV3_TINY_COCO_ANCHORS, kmeans_anchors, mean_best_iou,
                                        scaled_box_sizes)

    labels = load_labels(args.data, args.split)
    for issue in labels.issues:
        print(f"skipped label: {issue}")
    wh = scaled_box_sizes(labels, args.input_size)
    anchors = kmeans_anchors(wh, 6, args.metric, seed=args.seed)
    ours, coco = mean_best_iou(wh, anchors), mean_best_iou(wh, YOLOV3_TINY_COCO_ANCHORS)
    print(f"{len(wh)} boxes of {len(labels)} images ({args.split}), scaled to {args.input_size}x{args.input_size}; "
          f"K-means++ ({args.metric}, seed {args.seed}):")
    print("  anchors (w,h), by area:", "  ".join(f"{w:.0f},{h:.0f}" for w, h in anchors))
    print("  26x26 head (stride 16): anchors 0-2; 13x13 head (stride 32): anchors 3-5")
    print(f"  mean best IoU: {ours:.4f} (K-means++)  vs  {coco:.4f} (stock YOLOv3-tiny COCO anchors "
          + " ".join(f"{w:.0f},{h:.0f}" for w, h in YOLOV3_TINY_COCO_ANCHORS) + ")")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        _, classes = labels.all_boxes()
        fig, ax = plt.subplots(figsize=(6, 6))
        for c, name in enumerate(labels.classes):
            sel = classes == c
            ax.scatter(wh[sel, 0], wh[sel, 1], s=4, alpha=0.4, label=name)
        ax.scatter(anchors[:, 0], anchors[:, 1], marker="x", s=120, c="k", label=f"K-means++ (IoU {ours:.3f})")
        ax.scatter(YOLOV3_TINY_COCO_ANCHORS[:, 0], YOLOV3_TINY_COCO_ANCHORS[:, 1], marker="+", s=120, c="r",
                   label=f"YOLOv3-tiny COCO (IoU {coco:.3f})")
        ax.set_xlabel(f"width (px at {args.input_size})")
        ax.set_ylabel(f"height (px at {args.input_size})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=90)
        plt.close(fig)
        print(f"  scatter written to {args.plot}")
    return 0

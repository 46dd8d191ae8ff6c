"""A torch Dataset over a :class:`~fastcell.data.labels.LabelSet`, with images cached in RAM.

Decoding a JPEG costs more than a training augmentation, so every image is decoded once and kept,
already resized to its letterbox scale (a BCCD image is 416×312×3 bytes = 390 kB; the 205 training
images take 80 MB).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from dataclasses import replace

from fastcell.data.augment import (Augment, augment_sample, letterbox_params, letterbox_uint8, mosaic,
                                   single_cell_crop)
from fastcell.data.labels import LabelSet
from fastcell.defaults import INPUT_SIZE, PAD_VALUE

__all__ = ["DetectionDataset", "collate"]


def _read_bgr(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


class DetectionDataset(Dataset):
    """Letterboxed (and, for training, augmented) images with their boxes.

    Parameters
    ----------
    labels : LabelSet
        The split to serve.
    size : int
        Network input side.
    augment : Augment or None
        ``None`` gives the deployed letterbox only (validation / test).
    seed : int
        Base seed; each item draws from ``seed + epoch·len + index`` so a resumed run replays the
        same augmentations (call :meth:`set_epoch` each epoch).

    Items are ``(image (3, S, S) uint8 RGB tensor, targets (K, 5) float32 [cls, x1, y1, x2, y2]
    in input pixels, params (5,) float32 letterbox row, index, labelled (C,) bool)`` — ``labelled``
    says which classes the image's source labels (all, unless the sample says otherwise).
    """

    def __init__(self, labels: LabelSet, size: int = INPUT_SIZE, augment: Augment | None = None, seed: int = 0,
                 pad_value: int = PAD_VALUE, progress: bool = True) -> None:
        self.labels = labels
        self.size = size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.pad_value = pad_value
        self.images: list[np.ndarray] = []
        self.scales: list[float] = []
        for sample in tqdm(labels.samples, desc=f"caching {labels.split or 'images'}", disable=not progress,
                           leave=False):
            image = _read_bgr(sample.image)
            h, w = image.shape[:2]
            scale, new_w, new_h, _, _ = letterbox_params(w, h, size)
            self.images.append(cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR))
            self.scales.append(scale)

    def __len__(self) -> int:
        return len(self.labels.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes scaled to the cached (resized) image."""
        sample = self.labels.samples[index]
        return sample.boxes * self.scales[index], sample.class_ids

    def __getitem__(self, index: int):
        sample = self.labels.samples[index]
        params = np.array([self.scales[index], 0, 0, sample.width, sample.height], np.float32)
        if self.augment is None:
            image, lb = letterbox_uint8(self.images[index], self.size, self.pad_value)
            params[1:3] = lb[1:3]
            boxes, ids = self._boxes(index)
            boxes = boxes + np.array([lb[1], lb[2], lb[1], lb[2]], np.float32)
        else:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            crop = None
            if self.augment.single_cell and rng.random() < self.augment.single_cell:
                b, c = self._boxes(index)
                wbc = self.labels.classes.index("WBC") if "WBC" in self.labels.classes else None
                crop = single_cell_crop(self.images[index], b, c, rng, prefer=wbc)
            if crop is not None:
                # an analyser frame is letterboxed whole: only a mild zoom on top of that
                aug = replace(self.augment, zoom=(0.7, 1.15), translate=0.05)
                image, boxes, ids = augment_sample(*crop, self.size, aug, rng, self.pad_value)
            elif self.augment.mosaic and rng.random() < self.augment.mosaic:
                picks = [index, *rng.integers(0, len(self), 3)]
                parts = [self._boxes(i) for i in picks]
                image, boxes, ids = mosaic([self.images[i] for i in picks], [p[0] for p in parts],
                                           [p[1] for p in parts], self.size, self.augment, rng, self.pad_value)
            else:
                b, c = self._boxes(index)
                image, boxes, ids = augment_sample(self.images[index], b, c, self.size, self.augment, rng,
                                                   self.pad_value)
        chw = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)))  # BGR → RGB
        targets = np.concatenate([ids.reshape(-1, 1).astype(np.float32), boxes.reshape(-1, 4)], 1)
        labelled = sample.labelled if sample.labelled is not None else (True,) * len(self.labels.classes)
        return (chw, torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(params), index,
                torch.tensor(labelled, dtype=torch.bool))


def collate(batch):
    """Stack images; targets become ``(M, 6)`` ``[image_index, cls, x1, y1, x2, y2]``; the last
    item is the ``(N, C)`` bool mask of the classes each image's source labels."""
    images, targets, params, indices, labelled = zip(*batch)
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(targets)]
    return (torch.stack(images), torch.cat(rows) if rows else torch.zeros(0, 6), torch.stack(params),
            list(indices), torch.stack(labelled))

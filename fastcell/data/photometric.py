"""Colour, stain and camera augmentations: what changes between labs, microscopes and cameras.

Each takes and returns a ``(H, W, 3)`` uint8 BGR image and draws from the given generator, so a
training run replays exactly. Strengths of 0 turn an augmentation off.

* :func:`hed_jitter` — the stain: haematoxylin, eosin and residual (DAB) optical densities are
  scaled and shifted independently (Tellez et al. 2018), through the Ruifrok–Johnston stain
  vectors: a Giemsa or Wright smear of another lab shifts the purple/pink balance this way.
* :func:`white_balance_gamma` — the illumination and camera response: per-channel gains and a
  gamma curve, through one lookup table per channel.
* :func:`camera` — optics and sensor: Gaussian blur (defocus), Gaussian noise, JPEG re-encoding.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["hed_jitter", "white_balance_gamma", "camera"]

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB) in RGB optical density
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def hed_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scale each stain's optical density by ``1 ± strength`` and shift it by ``± strength / 4``."""
    if strength <= 0:
        return image
    rgb = image[:, :, ::-1].astype(np.float32)
    od = -np.log((rgb + 1.0) / 256.0)  # optical density, 0 for white
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    alpha = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    beta = rng.uniform(-strength / 4, strength / 4, 3).astype(np.float32)
    od = (hed * alpha + beta) @ _RGB_FROM_HED
    rgb = np.exp(-od) * 256.0 - 1.0
    return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8).reshape(image.shape)[:, :, ::-1])


def white_balance_gamma(image: np.ndarray, gain: float, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gains in ``[1 - gain, 1 + gain]`` and a gamma in ``exp(±gamma)``, as LUTs."""
    if gain <= 0 and gamma <= 0:
        return image
    gains = rng.uniform(1 - gain, 1 + gain, 3) if gain > 0 else np.ones(3)
    g = float(np.exp(rng.uniform(-gamma, gamma))) if gamma > 0 else 1.0
    x = np.arange(256, dtype=np.float32) / 255.0
    out = np.empty_like(image)
    for c in range(3):
        lut = np.clip(255.0 * np.power(np.clip(x * gains[c], 0, 1), g), 0, 255).astype(np.uint8)
        out[:, :, c] = cv2.LUT(np.ascontiguousarray(image[:, :, c]), lut)
    return out


def camera(image: np.ndarray, blur: float, noise: float, jpeg: float, rng: np.random.Generator,
           jpeg_quality: tuple[int, int] = (30, 95)) -> np.ndarray:
    """Defocus (probability ``blur``, sigma 0.3–1.5 px), sensor noise (sigma up to ``noise`` grey
    levels, half of the time) and JPEG re-encoding (probability ``jpeg``, quality in ``jpeg_quality``)."""
    if blur > 0 and rng.random() < blur:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.3, 1.5)))
    if noise > 0 and rng.random() < 0.5:
        sigma = float(rng.uniform(0, noise))
        image = np.clip(image + rng.normal(0, sigma, image.shape).astype(np.float32), 0, 255).astype(np.uint8)
    if jpeg > 0 and rng.random() < jpeg:
        quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image

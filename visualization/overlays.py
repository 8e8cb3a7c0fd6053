"""Heatmaps drawn on photographs: jet overlays, side-by-side figures, galleries.

  blended = overlay(image, heatmap)                # uint8 RGB, jet heatmap on the photo
  fig = explanation_figure(image, heatmap, 'RDR', 0.93, truth='RDR')
  save_figure(fig, 'figures/explain_IDRiD_001.png')
"""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

DEFAULT_ALPHA = 0.4  # weight of the heatmap in the blend


def to_uint8(image: np.ndarray) -> np.ndarray:
  """RGB uint8 from uint8 or from floats in [0, 1]."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def colorize(heatmap: np.ndarray) -> np.ndarray:
  """A heatmap in [0, 1] as RGB uint8 in the jet colour map (blue low, red high)."""
  levels = np.clip(np.round(np.asarray(heatmap, np.float32) * 255.0), 0, 255).astype(np.uint8)
  return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
  """Blends the jet-coloured heatmap onto the photograph.

  Args:
    image: RGB photograph, uint8 or float in [0, 1], (H, W, 3).
    heatmap: (h, w) in [0, 1]; resized to the photograph when its size differs.
    alpha: Weight of the heatmap (0: photograph only, 1: heatmap only).

  Returns:
    RGB uint8 (H, W, 3).

  Raises:
    ValueError: alpha outside [0, 1] or a heatmap that is not 2-D.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}')
  heatmap = np.asarray(heatmap, np.float32)
  if heatmap.ndim != 2:
    raise ValueError(f'heatmap must be 2-D, got shape {heatmap.shape}')
  photo = to_uint8(image)
  if heatmap.shape != photo.shape[:2]:
    heatmap = cv2.resize(heatmap, (photo.shape[1], photo.shape[0]),
                         interpolation=cv2.INTER_LINEAR)
  return cv2.addWeighted(colorize(heatmap), alpha, photo, 1.0 - alpha, 0.0)


def caption(predicted: str, probability: float, truth: str | None = None) -> str:
  """'predicted RDR (p=0.93), truth RDR'."""
  text = f'predicted {predicted} (p={probability:.2f})'
  return text if truth is None else f'{text}, truth {truth}'


def explanation_figure(image: np.ndarray, heatmap: np.ndarray, predicted: str,
                       probability: float, truth: str | None = None,
                       method: str = 'grad_cam', name: str | None = None):
  """The photograph and its overlay side by side, titled with the prediction.

  Args:
    image: RGB photograph as the model saw it.
    heatmap: (H, W) in [0, 1].
    predicted: Predicted class name.
    probability: Its probability.
    truth: Ground-truth class name, when known.
    method: Attribution method, shown over the overlay.
    name: Photograph name, shown first in the title.

  Returns:
    A matplotlib figure.
  """
  fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
  axes[0].imshow(to_uint8(image))
  axes[0].set_title('photograph')
  axes[1].imshow(overlay(image, heatmap))
  axes[1].set_title(method)
  for ax in axes:
    ax.axis('off')
  title = caption(predicted, probability, truth)
  fig.suptitle(f'{name}: {title}' if name else title)
  fig.tight_layout()
  return fig


def gallery_figure(images: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray],
                   titles: Sequence[str], suptitle: str):
  """Photographs (top row) over their overlays (bottom row), one column each."""
  count = max(1, len(images))
  fig, axes = plt.subplots(2, count, figsize=(2.6 * count, 5.6), squeeze=False)
  for j in range(count):
    for ax in axes[:, j]:
      ax.axis('off')
    if j >= len(images):
      continue
    axes[0, j].imshow(to_uint8(images[j]))
    axes[0, j].set_title(titles[j], fontsize=8)
    axes[1, j].imshow(overlay(images[j], heatmaps[j]))
  fig.suptitle(suptitle)
  fig.tight_layout()
  return fig


def save_figure(fig, path: str, dpi: int = 100) -> str:
  """Writes a figure as PNG (folders created) and closes it; returns the path."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path

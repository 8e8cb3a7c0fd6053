"""Evaluation figures: confusion matrices and ROC curves, as PNG and TensorBoard images."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from sklearn import metrics as sk
import tensorflow as tf

from training import callbacks
from training import run_dir as rd


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str):
  """ROC curves of P(RDR), one per split: {split: (labels, probs)}."""
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  for split, (labels, probs) in curves.items():
    if len(np.unique(labels)) < 2:
      continue
    fpr, tpr, _ = sk.roc_curve(labels, probs)
    ax.plot(fpr, tpr, label=f'{split} (AUC {sk.roc_auc_score(labels, probs):.3f})')
  ax.plot([0, 1], [0, 1], 'k:', lw=1)
  ax.set_xlabel('1 - specificity')
  ax.set_ylabel('sensitivity')
  ax.set_title(title)
  ax.legend(loc='lower right')
  fig.tight_layout()
  return fig


def write_figures(run_dir: str, log_dir: str, results: dict[str, Any], preds,
                  class_names, step: int) -> list[str]:
  """Writes figures/*.png and the same images to the TensorBoard log in log_dir."""
  fig_dir = os.path.join(run_dir, rd.FIGURES_DIR)
  os.makedirs(fig_dir, exist_ok=True)
  figures = {}
  for split, m in results['splits'].items():
    title = f'{split} (n={m["n"]})'
    if 'threshold' in m:
      title += f', threshold {m["threshold"]:.2f}'
    figures[f'confusion_matrix_{split}'] = callbacks.confusion_figure(
        np.array(m['confusion_matrix']), class_names, title)
  if len(class_names) == 2:
    figures['roc'] = roc_figure({s: (p[1], p[0][:, 1]) for s, p in preds.items()},
                                'ROC, P(RDR)')
  paths = []
  # Closed on an error too: its folder is about to be removed.
  with contextlib.closing(tf.summary.create_file_writer(log_dir)) as writer:
    for name, fig in figures.items():
      path = os.path.join(fig_dir, f'{name}.png')
      fig.savefig(path, dpi=100)
      paths.append(path)
      with writer.as_default():
        tf.summary.image(name, callbacks.figure_to_image(fig)[None], step=step)
  return paths

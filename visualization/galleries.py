"""Galleries of explained photographs: the most confident hits and mistakes of a split.

For the binary task, four galleries per split, each with the k most confident cases:

  true_positive   RDR called RDR, highest P(RDR) first
  true_negative   NRDR called NRDR, lowest P(RDR) first
  false_positive  NRDR called RDR, highest P(RDR) first
  false_negative  RDR called NRDR, lowest P(RDR) first

(5-grade models get 'correct' and 'wrong', by the probability of the predicted grade.)
Each gallery shows the photographs over their heatmaps for the predicted class, and is
written twice:

  run_dir/figures/<method>_<split>_<category>.png   e.g. grad_cam_test_false_negative.png
  run_dir/eval/  TensorBoard image '<method>_<split>/<category>'
"""

from __future__ import annotations

import contextlib
import os
from typing import Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from input_pipeline import datasets
from training import run_dir as rd
import visualization
from visualization import overlays

BINARY_CATEGORIES = ('true_positive', 'true_negative', 'false_positive', 'false_negative')
MULTICLASS_CATEGORIES = ('correct', 'wrong')


def select(probs: np.ndarray, labels: np.ndarray, k: int,
           threshold: float = 0.5) -> dict[str, np.ndarray]:
  """Indices of the k most confident photographs of each category.

  Args:
    probs: (n, num_classes) probabilities.
    labels: (n,) true classes.
    k: Photographs per category (fewer when the category has fewer).
    threshold: Binary only: P(class 1) >= threshold is called class 1.

  Returns:
    {category: indices, most confident first}.
  """
  probs, labels = np.asarray(probs), np.asarray(labels).astype(int)
  if probs.shape[1] == 2:
    p = probs[:, 1]
    called = p >= threshold
    order = {'true_positive': (labels == 1) & called, 'true_negative': (labels == 0) & ~called,
             'false_positive': (labels == 0) & called, 'false_negative': (labels == 1) & ~called}
    key = {c: (-p if c in ('true_positive', 'false_positive') else p) for c in order}
  else:
    predicted = probs.argmax(axis=1)
    order = {'correct': predicted == labels, 'wrong': predicted != labels}
    key = {c: -probs.max(axis=1) for c in order}
  out = {}
  for category, chosen in order.items():
    idx = np.flatnonzero(chosen)
    out[category] = idx[np.argsort(key[category][idx], kind='stable')][:k]
  return out


def _images_at(records_dir: str, split: str, indices: Sequence[int]) -> dict[int, np.ndarray]:
  """Model inputs (float32 in [0, 1]) of the photographs at these record positions."""
  wanted, found = set(int(i) for i in indices), {}
  position = 0
  for images, _ in datasets.make_dataset(records_dir, split, batch_size=32):
    for image in images.numpy():
      if position in wanted:
        found[position] = image
      position += 1
    if len(found) == len(wanted):
      break
  return found


def write_galleries(model: keras.Model, run_dir: str, log_dir: str, records_dir: str,
                    split: str,
                    predictions: tuple[np.ndarray, np.ndarray, Sequence[str]],
                    class_names: Sequence[str], k: int = 4, threshold: float = 0.5,
                    method: str = 'grad_cam', step: int = 0) -> list[str]:
  """Writes the galleries of one split as PNG files and TensorBoard images.

  Args:
    model: The evaluated model.
    run_dir: Run directory (the PNG files go to its figures/).
    log_dir: TensorBoard log the images are written to.
    records_dir: The run's records.
    split: 'val' or 'test'.
    predictions: (probabilities, labels, names) of the split, in record order, as
      `evaluation.evaluator.predict` returns them.
    class_names: The run's classes.
    k: Photographs per gallery; 0 writes nothing.
    threshold: Decision threshold on P(class 1) (binary task).
    method: Registered attribution method.
    step: TensorBoard step.

  Returns:
    Paths of the PNG files written.
  """
  if k <= 0:
    return []
  probs, labels, names = predictions
  chosen = select(probs, labels, k, threshold)
  images = _images_at(records_dir, split, np.concatenate(list(chosen.values())))
  binary = len(class_names) == 2
  paths = []
  # Closed on an error too: its folder is about to be removed.
  with contextlib.closing(tf.summary.create_file_writer(log_dir)) as writer:
    for category, indices in chosen.items():
      if not len(indices):
        logging.info('gallery %s/%s: no photograph in this category', split, category)
        continue
      batch = np.stack([images[i] for i in indices])
      called = ((probs[indices, 1] >= threshold).astype(int) if binary
                else probs[indices].argmax(axis=1))
      heatmaps = visualization.attribute(method, model, batch, class_index=called)
      titles = [f'{names[i]}\n{class_names[c]} p={probs[i, c]:.2f}, '
                f'truth {class_names[labels[i]]}' for i, c in zip(indices, called)]
      fig = overlays.gallery_figure(batch, heatmaps, titles,
                                    f'{split}: {category.replace("_", " ")} ({method})')
      path = overlays.save_figure(
          fig, os.path.join(run_dir, rd.FIGURES_DIR, f'{method}_{split}_{category}.png'))
      paths.append(path)
      with writer.as_default():
        png = tf.io.decode_png(tf.io.read_file(path), channels=4)
        tf.summary.image(f'{method}_{split}/{category}', png[None], step=step)
  logging.info('wrote %d %s galleries of %s', len(paths), method, split)
  return paths

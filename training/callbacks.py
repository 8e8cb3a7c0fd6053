"""Callbacks: console progress, validation confusion matrix image, best-value memory,
weight averaging that survives a resume."""

from __future__ import annotations

import io
import os
import time

from absl import logging
import keras
import numpy as np
from sklearn import metrics as sk_metrics
import tensorflow as tf

from training import run_dir as rd


class EpochLogger(keras.callbacks.Callback):
  """One log line per epoch: epoch, time, and the logged metrics."""

  def __init__(self, epochs: int):
    super().__init__()
    self.epochs = epochs
    self._start = 0.0

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.time()

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    keys = ('loss', 'balanced_accuracy', 'auc', 'referable_auc', 'val_loss',
            'val_balanced_accuracy', 'val_auc', 'val_referable_auc')
    text = ' '.join(f'{k} {logs[k]:.4f}' for k in keys if k in logs)
    logging.info('epoch %d/%d (%.1f s): %s', epoch + 1, self.epochs,
                 time.time() - self._start, text)


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
  """Keras' SwapEMAWeights(swap_on_epoch=True), correct after BackupAndRestore.

  Validation runs on the optimizer's moving average of the weights, and from the end of
  each epoch to the start of the next the averaged weights sit in the model (so the
  checkpoint, the confusion matrix and the backup hold them) while the raw weights sit in
  the optimizer's average slots. A run resumed from such a backup therefore starts with
  the two exchanged; `resumed` makes the first epoch swap them back before training on.
  """

  def __init__(self, resumed: bool = False):
    super().__init__(swap_on_epoch=True)
    self._ema_weights_in_model = resumed


class BestCheckpoint(keras.callbacks.Callback):
  """Saves the model when the monitored value improves, and the value in best.json.

  Keras' ModelCheckpoint writes over best.keras in place: a run stopped during that write
  kept an empty or truncated file and lost its best model. Here the model is written to a
  temporary file and renamed into place, then best.json (read again by a resumed run, so
  that it keeps the value to beat) is written. Made inside the run's training lock, it
  removes the temporary file a killed run left.
  """

  def __init__(self, run_dir: str, monitor: str, mode: str):
    super().__init__()
    self.model_path = os.path.join(run_dir, rd.BEST_MODEL)
    self.temporary = self.model_path[:-len('.keras')] + '.tmp.keras'
    if os.path.isfile(self.temporary):  # of a run killed while saving its best model
      os.remove(self.temporary)
    self.path = os.path.join(run_dir, rd.BEST_INFO)
    self.monitor, self.mode = monitor, mode
    self.best = read_best(run_dir, monitor)

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None or not np.isfinite(value):
      return
    better = (self.best is None or
              (value > self.best if self.mode == 'max' else value < self.best))
    if better:
      try:
        self.model.save(self.temporary, overwrite=True)
        os.replace(self.temporary, self.model_path)
      finally:
        if os.path.exists(self.temporary):
          os.remove(self.temporary)
      self.best = float(value)
      rd.write_json(self.path, dict(monitor=self.monitor, value=self.best, epoch=epoch + 1))


def read_best(run_dir: str, monitor: str) -> float | None:
  """The best value of `monitor` recorded by an earlier part of this run, if any."""
  path = os.path.join(run_dir, rd.BEST_INFO)
  if not os.path.isfile(path):
    return None
  best = rd.read_json(path)
  if best.get('monitor') != monitor or not np.isfinite(best.get('value', np.nan)):
    return None  # a NaN (written by earlier versions) could never be beaten
  return best['value']


def confusion_figure(matrix: np.ndarray, class_names, title: str):
  """A matplotlib figure of a confusion matrix with counts."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(3.2 + 0.4 * len(class_names),) * 2)
  ax.imshow(matrix, cmap='Blues')
  ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha='right')
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title)
  for (i, j), v in np.ndenumerate(matrix):
    ax.text(j, i, str(v), ha='center', va='center',
            color='white' if v > matrix.max() / 2 else 'black')
  fig.tight_layout()
  return fig


def figure_to_image(fig) -> np.ndarray:
  """Renders a figure to a uint8 RGBA array and closes it."""
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  plt.close(fig)
  return tf.io.decode_png(buf.getvalue(), channels=4).numpy()


class ConfusionMatrixImage(keras.callbacks.Callback):
  """Writes the validation confusion matrix as a TensorBoard image every few epochs."""

  def __init__(self, val_ds: tf.data.Dataset, class_names, log_dir: str, every: int = 1):
    super().__init__()
    self.val_ds, self.class_names, self.every = val_ds, list(class_names), every
    self.writer = tf.summary.create_file_writer(log_dir)

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.every:
      return
    labels, preds = [], []
    for images, y in self.val_ds:
      labels.append(y.numpy())
      preds.append(np.argmax(self.model(images, training=False), axis=-1))
    matrix = sk_metrics.confusion_matrix(np.concatenate(labels), np.concatenate(preds),
                                         labels=range(len(self.class_names)))
    image = figure_to_image(confusion_figure(matrix, self.class_names,
                                             f'validation, epoch {epoch + 1}'))
    with self.writer.as_default():
      tf.summary.image('confusion_matrix', image[None], step=epoch)  # Keras' 0-based step
    self.writer.flush()

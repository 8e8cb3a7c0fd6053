"""Evaluates a run's best checkpoint on validation and test."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Sequence

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

import models
from evaluation import metrics as metrics_lib
from evaluation import plots
from evaluation import predictions as predictions_file
from input_pipeline import datasets
from input_pipeline import idrid
from input_pipeline import tfrecords
from training import run_dir as rd
from utils import checks
from utils import gin_utils
from utils import staging
from visualization import galleries
from visualization import registry as attribution_methods

# Splits evaluate() scores: the training split is an endless, augmented stream.
EVAL_SPLITS = ('val', 'test')


def load_best_model(run_dir: str) -> keras.Model:
  """The best checkpoint of a run (weights and architecture, no optimizer)."""
  path = os.path.join(run_dir, rd.BEST_MODEL)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no checkpoint in {run_dir} (missing {path}); train it first')
  return models.load_model_file(path)


def dihedral_view(images: tf.Tensor, k: int) -> tf.Tensor:
  """View k (0-7) of a batch: rotation by 90 * (k % 4) degrees, then a flip if k >= 4."""
  out = tf.image.rot90(images, k % 4)
  return tf.image.flip_left_right(out) if k >= 4 else out


def check_tta(tta: int) -> None:
  """Raises ValueError unless `tta` is a number of dihedral views, 1 to 8."""
  checks.check_number('evaluate.tta', tta, low=1, high=8, whole=True,
                      note='dihedral views; 1 is none')


def check_splits(splits: Sequence[str]) -> None:
  """Raises ValueError naming evaluate.splits unless it lists 'val' and/or 'test'."""
  if isinstance(splits, str) or not splits or any(s not in EVAL_SPLITS for s in splits):
    raise ValueError(f'evaluate.splits must list splits among {EVAL_SPLITS}, got {splits!r}')


def average_views(model: keras.Model, images: tf.Tensor | np.ndarray, tta: int = 1
                  ) -> np.ndarray:
  """Class probabilities of a batch averaged over its first `tta` dihedral views."""
  check_tta(tta)
  return np.mean([np.asarray(model(dihedral_view(images, k), training=False))
                  for k in range(tta)], axis=0)


def predict(model: keras.Model, records_dir: str, split: str, batch_size: int = 32,
            tta: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Probabilities, labels and names of every photograph of a split, in record order.

  Args:
    model: Classifier returning class probabilities.
    records_dir: Folder written by `tfrecords.build_tfrecords`.
    split: 'val' or 'test' (`EVAL_SPLITS`).
    batch_size: Photographs per forward pass.
    tta: Test-time augmentation: probabilities averaged over the first `tta` of the
      eight `dihedral_view`s of each photograph (1: the photograph alone).
  """
  check_tta(tta)
  probs, labels, names = [], [], []
  ds = datasets.make_dataset(records_dir, split, batch_size=batch_size, with_info=True)
  for images, y, info in ds:
    probs.append(average_views(model, images, tta))
    labels.append(y.numpy())
    names.extend(n.decode() for n in info['name'].numpy())
  if not names:
    raise ValueError(f'split {split} of {records_dir} is empty')
  return np.concatenate(probs), np.concatenate(labels), names


def format_table(results: dict[str, Any]) -> str:
  """The printed summary: one row per split."""
  keys = [k for k in ('accuracy', 'balanced_accuracy', 'sensitivity', 'specificity',
                      'precision', 'f1', 'roc_auc', 'quadratic_kappa',
                      'referable_balanced_accuracy', 'referable_roc_auc')
          if any(k in m for m in results['splits'].values())]
  short = {'referable_balanced_accuracy': 'RDR bal. acc.', 'referable_roc_auc': 'RDR roc_auc'}
  header = f'{"split":<6}{"n":>5}' + ''.join(f'{short.get(k, k)[:17]:>19}' for k in keys)
  rows = [header]
  for split, m in results['splits'].items():
    rows.append(f'{split:<6}{m["n"]:>5}' + ''.join(f'{m.get(k, float("nan")):>19.4f}'
                                                   for k in keys))
  if 'threshold' in results:
    rows.append(f'decision threshold on P(RDR): {results["threshold"]:.4f} '
                f'({results["threshold_rule"]} rule on validation)')
  return '\n'.join(rows)


def _check_args(*, splits, threshold_rule, min_sensitivity, batch_size, write_figures,
                gradcam_galleries, gallery_method, tta) -> None:
  """`evaluate`'s arguments, checked before any work (each one: a new argument of
  `evaluate` must be added here, or `check_config` fails)."""
  checks.check_number('evaluate.batch_size', batch_size, low=1, whole=True)
  checks.check_number('evaluate.gradcam_galleries', gradcam_galleries, low=0, whole=True,
                      note='0 is none')
  if write_figures and gradcam_galleries > 0:
    try:
      attribution_methods.get(gallery_method)  # An unknown name fails before any work.
    except ValueError as e:
      raise ValueError(f'evaluate.gallery_method: {e}') from e
  check_tta(tta)
  check_splits(splits)
  metrics_lib.check_threshold_rule(threshold_rule, min_sensitivity)


def check_config() -> None:
  """Checks gin's bindings of `evaluate` (tune.py: before a trial trains).

  Raises:
    ValueError: One line naming the gin parameter at fault.
  """
  _check_args(**gin_utils.configured_arguments(evaluate))


@gin.configurable(module='evaluate', denylist=['run_dir'])
def evaluate(run_dir: str, splits: Sequence[str] = ('val', 'test'),
             threshold_rule: str = 'youden', min_sensitivity: float = 0.9,
             batch_size: int = 32, write_figures: bool = True,
             gradcam_galleries: int = 4,
             gallery_method: str = 'grad_cam', tta: int = 1) -> dict[str, Any]:
  """Evaluates the best checkpoint; writes metrics.json, predictions, figures, summaries.

  Args:
    run_dir: A run directory written by `training.trainer.train`.
    splits: Splits to evaluate. The decision threshold is chosen on 'val' and
      applied unchanged to the others.
    threshold_rule: See `evaluation.metrics.choose_threshold`: the binary task, or the
      referable task of a 5-grade model (its metrics are then also given as
      `referable_<metric>`, on P(grades 2-4)).
    min_sensitivity: Target of the 'sensitivity' rule.
    batch_size: Photographs per forward pass.
    write_figures: Write PNG figures and TensorBoard images.
    gradcam_galleries: Photographs per gallery of explained hits and mistakes
      (`visualization.galleries`) of each evaluated 'val' and 'test' split; 0 = none.
      Written only with write_figures.
    gallery_method: Attribution method of the galleries (`visualization.attribute`).
    tta: Views averaged per photograph (`predict`); 1 = no test-time augmentation.

  Returns:
    The content of metrics.json.
  """
  _check_args(splits=splits, threshold_rule=threshold_rule, min_sensitivity=min_sensitivity,
              batch_size=batch_size, write_figures=write_figures,
              gradcam_galleries=gradcam_galleries, gallery_method=gallery_method, tta=tta)
  info = rd.read_json(os.path.join(run_dir, rd.RUN_INFO))
  if info.get('status') != 'completed':
    logging.warning('%s has not finished training (run.json status %r): evaluating the best '
                    'checkpoint of the epochs done so far. If its training was stopped, rerun '
                    'train.py with the same --run_dir to finish it; if it is still training, '
                    'its end removes this evaluation: evaluate again then', run_dir,
                    info.get('status'))
  records_dir, class_names = info['records_dir'], info['class_names']
  manifest = tfrecords.read_manifest(records_dir)
  if info.get('records_fingerprint') not in (None, manifest['fingerprint']):
    raise ValueError(f'the records in {records_dir} changed since {run_dir} was trained '
                     '(manifest fingerprint differs); retrain or rebuild them as they were')
  model = load_best_model(run_dir)
  binary = len(class_names) == 2
  # A model of the five grades is also scored for referable DR, on P(grades 2-4).
  grades = len(class_names) == len(idrid.CLASS_NAMES['grades'])
  empty = [s for s in splits if not manifest['counts'][s]['total']]
  if empty:
    logging.warning('skipping empty split(s) %s', ', '.join(empty))
  # Remove earlier results first, so a failure cannot leave new predictions beside an
  # old metrics.json.
  if os.path.isfile(os.path.join(run_dir, rd.METRICS)):
    os.remove(os.path.join(run_dir, rd.METRICS))
  preds = {s: predict(model, records_dir, s, batch_size, tta) for s in splits
           if s not in empty}
  results: dict[str, Any] = dict(run_dir=os.path.abspath(run_dir),
                                 checkpoint_epoch=info.get('best', {}).get('epoch'),
                                 class_names=class_names, tta=tta, splits={})
  if binary or grades:
    val = metrics_lib.referable(*preds['val'][:2]) if 'val' in preds else None
    if val is None:
      threshold_rule, threshold = 'argmax', 0.5
      logging.warning('no validation split evaluated: using the argmax threshold 0.5')
    elif grades and len(np.unique(val[0])) < 2:
      threshold_rule, threshold = 'argmax', 0.5
      logging.warning('validation lacks NRDR or RDR photographs: the referable metrics use '
                      'the threshold 0.5 on P(grades 2-4)')
    else:
      threshold = metrics_lib.choose_threshold(*val, threshold_rule, min_sensitivity)
    results.update(threshold=threshold, threshold_rule=threshold_rule)
    if threshold_rule == 'sensitivity':  # ensembles and cross-validation reuse it
      results['min_sensitivity'] = min_sensitivity
  for split, (probs, labels, names) in preds.items():
    if binary:
      m = metrics_lib.binary_metrics(labels, probs[:, 1], threshold)
      m['at_argmax'] = metrics_lib.binary_metrics(labels, probs[:, 1], 0.5)
    else:
      m = metrics_lib.multiclass_metrics(labels, probs)
    if grades:
      referable = metrics_lib.binary_metrics(*metrics_lib.referable(probs, labels), threshold)
      m.update({f'referable_{k}': v for k, v in referable.items()})
    results['splits'][split] = m
    predictions_file.write(predictions_file.path(run_dir, split), names, labels, probs,
                           class_names)
  step = _step(results)
  # eval/ is written whole and then replaces the last evaluation's, so it never holds two
  # evaluations, or the part of a stopped one. (TensorBoard lists the hidden staging folder
  # as a run of its own while the evaluation writes it; one left by a killed evaluation
  # is removed by the next.)
  with staging.staged(os.path.join(run_dir, rd.EVAL_DIR)) as log_dir:
    if write_figures:
      plots.write_figures(run_dir, log_dir, results, preds, class_names, step=step)
    if write_figures and gradcam_galleries > 0:
      for split in (s for s in ('test', 'val') if s in preds):
        galleries.write_galleries(model, run_dir, log_dir, records_dir, split, preds[split],
                                  class_names, k=gradcam_galleries,
                                  threshold=results.get('threshold', 0.5),
                                  method=gallery_method,
                                  step=step)
    _write_summaries(log_dir, results, step=step)
  rd.write_json(os.path.join(run_dir, rd.METRICS), results)
  return results


def _step(results: dict[str, Any]) -> int:
  """TensorBoard step of the evaluated checkpoint: Keras' 0-based epoch."""
  return max(0, (results['checkpoint_epoch'] or 1) - 1)


def _write_summaries(log_dir: str, results: dict[str, Any], step: int) -> None:
  with contextlib.closing(tf.summary.create_file_writer(log_dir)) as writer, \
      writer.as_default():
    for split, m in results['splits'].items():
      for key, value in m.items():
        if isinstance(value, float) and np.isfinite(value):
          tf.summary.scalar(f'{split}/{key}', value, step=step)

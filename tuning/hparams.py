"""TensorBoard HParams summaries of a grid search.

    <run_dir>/events.out.tfevents.*          experiment: hyperparameters, domains, metrics
    <run_dir>/<trial>/events.out.tfevents.*  session: the trial's values, its val metrics

`tensorboard --logdir <run_dir>` then shows every trial in the HParams dashboard
(table, parallel coordinates, scatter plots). Values keep their type where TensorBoard
allows it (bool, int, float, str); anything else (None, lists, @references) is shown
as its gin text. The files are rewritten on every invocation, so they always match the
current grid and results.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Callable, Mapping, Sequence

from tensorboard.plugins.hparams import api as hp
import tensorflow as tf

from tuning import grid as grid_lib

METRIC_PREFIX = 'val/'


def metric_tag(metric: str) -> str:
  """Summary tag of a validation metric, e.g. 'val/balanced_accuracy'."""
  return METRIC_PREFIX + metric


def _converter(values: Sequence[Any]) -> Callable[[Any], Any]:
  """A function mapping every value of one parameter to a type TensorBoard accepts."""
  if all(isinstance(v, bool) for v in values):
    return bool
  if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
    return int
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    return float
  if all(isinstance(v, str) for v in values):
    return str
  return grid_lib.gin_text


def hparam_values(grid: Mapping[str, Sequence[Any]], values: Mapping[str, Any]
                  ) -> dict[str, Any]:
  """One trial's values, converted like their parameter's domain."""
  return {p: _converter(grid[p])(values[p]) for p in grid}


def _clear_events(log_dir: str) -> None:
  for path in glob.glob(os.path.join(log_dir, 'events.out.tfevents.*')):
    os.remove(path)


def write_experiment(run_dir: str, grid: Mapping[str, Sequence[Any]],
                     metrics: Sequence[str]) -> None:
  """Writes the HParams experiment config at the top of the search's run directory."""
  short = grid_lib.short_names(list(grid))
  hparams = [hp.HParam(p, hp.Discrete([_converter(v)(x) for x in v]), display_name=short[p])
             for p, v in grid.items()]
  hp_metrics = [hp.Metric(metric_tag(m), display_name=f'val {m}') for m in metrics]
  os.makedirs(run_dir, exist_ok=True)
  _clear_events(run_dir)
  writer = tf.summary.create_file_writer(run_dir)
  with writer.as_default():
    hp.hparams_config(hparams=hparams, metrics=hp_metrics)
  writer.close()


def write_trial(trial_dir: str, name: str, hparams: Mapping[str, Any],
                metrics: Mapping[str, Any], step: int = 0) -> None:
  """Writes one trial's HParams session and its finite validation metrics.

  Args:
    trial_dir: The trial's sub-run; the summaries go to its top level.
    name: Trial name, shown as the session's trial id.
    hparams: Parameter -> value, converted by `hparam_values`.
    metrics: Metric name (without 'val/') -> value; non-numbers are skipped.
    step: Step of the metric scalars.
  """
  os.makedirs(trial_dir, exist_ok=True)
  _clear_events(trial_dir)
  writer = tf.summary.create_file_writer(trial_dir)
  with writer.as_default():
    hp.hparams(dict(hparams), trial_id=name)
    for key, value in metrics.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        tf.summary.scalar(metric_tag(key), float(value), step=step)
  writer.close()

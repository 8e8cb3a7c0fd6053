"""The per-photograph predictions file (predictions_<split>.csv) of a run: write and read.

Columns: name, label, then p_<class> for each class, to the last bit (Python's shortest
repr of the value): the decision threshold is one validation photograph's P(RDR), so a
rounded copy could fall on the other side of it. Files written before this format held six
decimals; they read the same way.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Sequence

import numpy as np

from evaluation import metrics
from training import run_dir as rd


def path(run_dir: str, split: str) -> str:
  """The predictions file of one split of a run."""
  return os.path.join(run_dir, f'predictions_{split}.csv')


def write(file: str, names, labels, probs, class_names) -> None:
  """Writes one row per photograph."""
  with open(file, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['name', 'label'] + [f'p_{c}' for c in class_names])
    for name, label, p in zip(names, labels, probs):
      writer.writerow([name, int(label)] + [repr(float(v)) for v in p])


# The probability columns of a 5-grade run, in grade order (`metrics.referable` sums 2-4).
_GRADE_COLUMNS = ('p_0 no DR', 'p_1 mild', 'p_2 moderate', 'p_3 severe', 'p_4 proliferative')


def read_referable(run_dir: str, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(names, labels, P(RDR)) of one split, in file order, for referable DR (1 = RDR).

  A binary run's file gives them as they are; a 5-grade run's gives RDR = grade >= 2 and
  P(RDR) = P(grade 2) + P(grade 3) + P(grade 4).
  """
  file = path(run_dir, split)
  if not os.path.isfile(file):
    split_name = {'val': 'validation'}.get(split, split)
    raise FileNotFoundError(f'{file}: no {split_name} predictions; run evaluate.py first')
  with open(file, newline='') as f:
    rows = list(csv.DictReader(f))
  columns = set(rows[0]) if rows else set()
  binary = {'name', 'label', 'p_RDR'} <= columns
  if not binary and not {'name', 'label', *_GRADE_COLUMNS} <= columns:
    raise ValueError(f'{file}: expected columns name, label and p_RDR (a binary run) or the '
                     'five grade columns (a 5-grade run)')
  prob_columns = ['p_RDR'] if binary else list(_GRADE_COLUMNS)
  try:
    labels = np.array([int(r['label']) for r in rows])
    probs = np.array([[float(r[c]) for c in prob_columns] for r in rows])
  except (TypeError, ValueError) as e:  # an empty cell reads as None, text as text
    raise ValueError(f'{file}: a label or probability is not a number ({e})') from e
  if not (np.isfinite(probs).all() and probs.min() >= -1e-6 and probs.max() <= 1 + 1e-6):
    raise ValueError(f'{file}: probabilities must lie in [0, 1] (NaN, a value outside, or '
                     'not a predictions file of evaluate.py)')
  probs = np.clip(probs, 0.0, 1.0)  # a float32 softmax may round a hair past 1
  if binary:
    return [r['name'] for r in rows], labels, probs[:, 0]
  return [r['name'] for r in rows], *metrics.referable(probs, labels)


def average_by_name(runs: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray]],
                    sources: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(names in sorted order, labels, mean P(RDR)) of runs that scored the same photographs.

  Args:
    runs: (names, labels, P(RDR)) per run, as `read_referable` returns them, in any order.
    sources: A name per run (its folder), for the error messages.

  Raises:
    ValueError: A run scored other photographs than the first, or labels one differently.
  """
  tables = [dict(zip(names, zip(labels, probs))) for names, labels, probs in runs]
  names = sorted(tables[0])
  for table, source in zip(tables[1:], sources[1:]):
    if sorted(table) != names:
      raise ValueError(f'{source} scored other photographs than {sources[0]}')
    wrong = [n for n in names if int(table[n][0]) != int(tables[0][n][0])]
    if wrong:
      raise ValueError(f'{source} labels {wrong[0]} differently from {sources[0]}')
  labels = np.array([int(tables[0][n][0]) for n in names])
  probs = np.mean([[t[n][1] for n in names] for t in tables], axis=0)
  return names, labels, probs


def threshold_setting(metrics_json: dict) -> tuple[str, float]:
  """(rule, min_sensitivity) a run's threshold was chosen with, from its metrics.json.

  Files without them (older runs) read as the defaults: Youden, target 0.9.
  """
  return (metrics_json.get('threshold_rule', 'youden'),
          float(metrics_json.get('min_sensitivity', 0.9)))


def agreed_threshold_setting(settings: Sequence[tuple[str, float]], what: str = 'runs'
                             ) -> tuple[str, float]:
  """The one (rule, min_sensitivity) of several runs' `threshold_setting`s.

  Raises:
    ValueError: The runs disagree (the message calls them `what`).
  """
  settings = set(settings)
  if len(settings) > 1:
    raise ValueError(f'the {what} were evaluated with different threshold rules: '
                     + ', '.join(describe_rule(*s) for s in sorted(settings)))
  return settings.pop()


def common_threshold_setting(run_dirs: Sequence[str]) -> tuple[str, float]:
  """The (rule, min_sensitivity) of the runs (their metrics.json); all must agree.

  Raises:
    FileNotFoundError: A run has no metrics.json.
    ValueError: A metrics.json is not one, or the runs disagree.
  """
  settings = []
  for d in run_dirs:
    file = os.path.join(d, rd.METRICS)
    if not os.path.isfile(file):
      raise FileNotFoundError(f'{file}: not found; run evaluate.py first')
    try:
      settings.append(threshold_setting(rd.read_json(file)))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
      raise ValueError(f'{file}: not a metrics file ({type(e).__name__})') from None
  return agreed_threshold_setting(settings)


def describe_rule(rule: str, min_sensitivity: float) -> str:
  """'youden', or 'sensitivity >= 0.95' for the sensitivity rule."""
  return f'{rule} >= {min_sensitivity:g}' if rule == 'sensitivity' else rule


def ensemble(run_dirs: Sequence[str], rule: str = 'youden', min_sensitivity: float = 0.9
             ) -> tuple[list[str], np.ndarray, np.ndarray, float]:
  """Runs' P(RDR) averaged on test, with a threshold from their averaged validation P.

  Returns:
    (test names, labels, mean P(RDR), threshold chosen with `rule` (and its
    `min_sensitivity`) on the validation predictions averaged the same way). One run gives
    its own predictions.
  """
  averaged = {split: average_by_name([read_referable(d, split) for d in run_dirs], run_dirs)
              for split in ('val', 'test')}
  threshold = metrics.choose_threshold(*averaged['val'][1:], rule, min_sensitivity)
  return (*averaged['test'], threshold)

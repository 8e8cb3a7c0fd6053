"""How much a test score can move with the photographs drawn: bootstrap intervals.

  python -m evaluation.bootstrap results/idrid_binary_cv5/seed_*/ [--resamples=2000] [--seed=0]

The runs' test P(RDR) are averaged (one run: its own), and the decision threshold is chosen
on their averaged validation predictions with the runs' rule, as in the ensemble rows of
results/make_table.py. The test photographs are then resampled with replacement within each
class (so every resample keeps the split's NRDR and RDR counts), and each metric's interval
is the central `level` share of its values over the resamples. The threshold stays fixed:
the interval covers the drawing of test photographs, not the randomness of training (which
the spread over seeds shows). Nothing is written.
"""

from __future__ import annotations

from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from evaluation import metrics
from evaluation import predictions
from utils import checks
from utils import entry


def intervals(labels: np.ndarray, probs: np.ndarray, threshold: float,
              resamples: int = 2000, seed: int = 0, level: float = 0.95
              ) -> dict[str, tuple[float, float, float]]:
  """{metric: (value, low, high)}: stratified percentile bootstrap at a fixed threshold.

  Raises:
    ValueError: Without both classes, or with fewer than 2 resamples.
  """
  labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
  by_class = [np.flatnonzero(labels == c) for c in (0, 1)]
  if any(len(ix) == 0 for ix in by_class):
    raise ValueError('a bootstrap interval needs both classes among the photographs')
  if resamples < 2:
    raise ValueError(f'resamples must be at least 2, got {resamples}')
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(resamples):
    idx = np.concatenate([rng.choice(ix, size=len(ix), replace=True) for ix in by_class])
    m = metrics.binary_metrics(labels[idx], probs[idx], threshold)
    values.append([m[k] for k in metrics.REPORTED])
  low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)], axis=0)
  point = metrics.binary_metrics(labels, probs, threshold)
  return {k: (point[k], float(lo), float(hi))
          for k, lo, hi in zip(metrics.REPORTED, low, high)}


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('give one or more run folders')
  run_dirs = argv[1:]
  checks.check_number('--resamples', FLAGS.resamples, low=1, whole=True)
  checks.check_number('--seed', FLAGS.seed, low=0, high=2**32 - 1, whole=True)
  checks.check_number('--level', FLAGS.level, low=0, high=1, low_open=True, high_open=True)
  rule, min_sensitivity = predictions.common_threshold_setting(run_dirs)
  _, labels, probs, threshold = predictions.ensemble(run_dirs, rule, min_sensitivity)
  table = intervals(labels, probs, threshold, FLAGS.resamples, FLAGS.seed, FLAGS.level)
  what = f'ensemble of {len(run_dirs)} runs' if len(run_dirs) > 1 else run_dirs[0]
  print(f'test split, {what}: {len(labels)} photographs ({int(np.sum(labels == 0))} NRDR, '
        f'{int(np.sum(labels == 1))} RDR), threshold {threshold:.2f} '
        f'({predictions.describe_rule(rule, min_sensitivity)} on validation)')
  print(f'{FLAGS.level:.0%} interval over {FLAGS.resamples} resamples within each class '
        f'(seed {FLAGS.seed}), threshold fixed')
  for key, (value, low, high) in table.items():
    print(f'{key:18s} {value:.3f}  [{low:.3f}, {high:.3f}]')


if __name__ == '__main__':
  flags.DEFINE_integer('resamples', 2000, 'Bootstrap resamples of the test photographs.')
  flags.DEFINE_integer('seed', 0, 'Seed of the resampling.')
  flags.DEFINE_float('level', 0.95, 'Share of the resampled values inside the interval.')
  entry.run(main)

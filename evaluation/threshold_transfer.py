"""How well a threshold rule transfers to unseen photographs, on validation data only.

    python -m evaluation.threshold_transfer runs/tune_idrid_monitor/*/ [--rules=youden,argmax]

For each run, the validation predictions (predictions_val.csv, written by evaluate.py) are
split in stratified halves many times; the threshold is chosen on one half by each rule
and applied to the other. The mean balanced accuracy on the held-out halves estimates what
the rule gives on new photographs, without touching the test split. The in-sample figure
(threshold chosen and scored on all of validation) is printed beside it.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
import numpy as np
from sklearn import model_selection

from evaluation import metrics
from evaluation import predictions
from utils import checks
from utils import entry

flags.DEFINE_list('rules', ['youden', 'argmax'], 'Threshold rules to compare.')
flags.DEFINE_integer('splits', 200, 'Random stratified half splits per run.')
flags.DEFINE_integer('seed', 0, 'Seed of the splits.')
FLAGS = flags.FLAGS


def transfer(labels: np.ndarray, probs: np.ndarray, rule: str, splits: int = 200,
             seed: int = 0) -> dict[str, float]:
  """Held-out balanced accuracy of `rule` over stratified half splits (mean, sd), and the
  spread of the thresholds it chose."""
  splitter = model_selection.StratifiedShuffleSplit(n_splits=splits, test_size=0.5,
                                                    random_state=seed)
  scores, thresholds = [], []
  for fit, held_out in splitter.split(probs, labels):
    t = metrics.choose_threshold(labels[fit], probs[fit], rule)
    thresholds.append(t)
    scores.append(metrics.binary_metrics(labels[held_out], probs[held_out], t)
                  ['balanced_accuracy'])
  return dict(mean=float(np.mean(scores)), sd=float(np.std(scores, ddof=1)),
              threshold_low=float(np.percentile(thresholds, 10)),
              threshold_high=float(np.percentile(thresholds, 90)))


def main(argv):
  run_dirs = argv[1:]
  if not run_dirs:
    raise app.UsageError('name one or more run directories')
  if not FLAGS.rules:
    raise app.UsageError('--rules is empty; name one or more of '
                         f'{", ".join(metrics.THRESHOLD_RULES)}')
  checks.check_number('--splits', FLAGS.splits, low=1, whole=True)
  checks.check_number('--seed', FLAGS.seed, low=0, high=2**32 - 1, whole=True)
  for rule in FLAGS.rules:
    if rule not in metrics.THRESHOLD_RULES:
      raise app.UsageError(f'unknown rule {rule!r} in --rules; choose from '
                           f'{", ".join(metrics.THRESHOLD_RULES)}')
  print(f'held-out balanced accuracy over {FLAGS.splits} stratified half splits of '
        'validation (mean +- sd; threshold 10th-90th percentile); in-sample in brackets')
  for run_dir in run_dirs:
    _, labels, probs = predictions.read_referable(run_dir, 'val')
    parts = []
    for rule in FLAGS.rules:
      r = transfer(labels, probs, rule, FLAGS.splits, FLAGS.seed)
      whole = metrics.binary_metrics(labels, probs, metrics.choose_threshold(labels, probs,
                                                                              rule))
      parts.append(f'{rule} {r["mean"]:.3f} +- {r["sd"]:.3f} '
                   f'(t {r["threshold_low"]:.2f}-{r["threshold_high"]:.2f}) '
                   f'[{whole["balanced_accuracy"]:.3f}]')
    print(f'{os.path.basename(os.path.normpath(run_dir))}: ' + '; '.join(parts))


if __name__ == '__main__':
  entry.run(main)

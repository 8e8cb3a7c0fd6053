"""evaluation.threshold_transfer: threshold rules scored on held-out halves of validation."""

import subprocess
import sys

import numpy as np

from evaluation import threshold_transfer
from tests.conftest import REPO_ROOT


def _shifted_predictions(n=60, seed=0):
  """Well-ranked but miscalibrated P(RDR): every photograph between 0.8 and 0.95."""
  rng = np.random.default_rng(seed)
  labels = np.array([0] * (n // 2) + [1] * (n // 2))
  probs = 0.8 + 0.1 * labels + rng.uniform(0, 0.05, size=n)
  return labels, probs


def test_youden_transfers_where_the_softmax_threshold_does_not():
  labels, probs = _shifted_predictions()
  youden = threshold_transfer.transfer(labels, probs, 'youden', splits=50)
  argmax = threshold_transfer.transfer(labels, probs, 'argmax', splits=50)
  assert youden['mean'] > 0.9 and 0.85 < youden['threshold_low'] <= youden['threshold_high']
  assert argmax['mean'] == 0.5  # everything called RDR


def test_overlapping_scores_lose_accuracy_out_of_sample():
  rng = np.random.default_rng(1)
  labels = np.array([0] * 40 + [1] * 40)
  probs = np.clip(0.5 + 0.15 * (labels - 0.5) + rng.normal(0, 0.15, size=80), 0, 1)
  result = threshold_transfer.transfer(labels, probs, 'youden', splits=100)
  from evaluation import metrics
  in_sample = metrics.binary_metrics(labels, probs, metrics.choose_threshold(labels, probs))
  assert result['mean'] < in_sample['balanced_accuracy']
  assert result['sd'] > 0


def test_cli_prints_one_line_per_run_and_names_a_missing_file(tmp_path):
  run = tmp_path / 'run_a'
  run.mkdir()
  labels, probs = _shifted_predictions()
  lines = ['name,label,p_NRDR,p_RDR'] + [f'x{i},{l},{1 - p:.6f},{p:.6f}'
                                          for i, (l, p) in enumerate(zip(labels, probs))]
  (run / 'predictions_val.csv').write_text('\n'.join(lines) + '\n')
  proc = subprocess.run([sys.executable, '-m', 'evaluation.threshold_transfer', str(run),
                         '--splits=20'], cwd=REPO_ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = proc.stdout.splitlines()[-1]
  assert line.startswith('run_a: youden 0.9') and '[1.000]' in line  # in-sample: perfect
  assert 'argmax 0.500 +- 0.000 (t 0.50-0.50) [0.500]' in line
  missing = tmp_path / 'run_b'
  missing.mkdir()
  proc = subprocess.run([sys.executable, '-m', 'evaluation.threshold_transfer', str(missing)],
                        cwd=REPO_ROOT, capture_output=True, text=True)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      f'error: {missing / "predictions_val.csv"}: no validation predictions; '
      'run evaluate.py first')
  # Bad flags: one line each (--splits=0 was an IndexError, --rules= printed nothing).
  for flag, message in (('--splits=0', '--splits must be a whole number >= 1, got 0'),
                        ('--rules=', '--rules is empty')):
    proc = subprocess.run([sys.executable, '-m', 'evaluation.threshold_transfer', str(run),
                           flag], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr.strip().splitlines()[-1]
    assert 'Traceback' not in proc.stderr

"""Bootstrap intervals of test metrics (evaluation/bootstrap.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evaluation import bootstrap
from evaluation import metrics
from evaluation import predictions
from tests.conftest import REPO_ROOT


def _scores(n, seed=0, separation=1.0):
  rng = np.random.default_rng(seed)
  labels = np.array([0] * (n // 3) + [1] * (n - n // 3))
  logits = rng.normal(size=n) + separation * (2 * labels - 1)
  return labels, 1 / (1 + np.exp(-logits))


def test_interval_holds_the_value_and_narrows_with_more_photographs():
  labels, probs = _scores(90)
  small = bootstrap.intervals(labels, probs, 0.5, resamples=400, seed=1)
  assert small == bootstrap.intervals(labels, probs, 0.5, resamples=400, seed=1)
  for value, low, high in small.values():
    assert low <= value <= high and low < high
  assert small['roc_auc'][0] == pytest.approx(roc_auc_score(labels, probs))
  big = bootstrap.intervals(np.tile(labels, 9), np.tile(probs, 9), 0.5, resamples=400, seed=1)
  for key in small:
    assert big[key][2] - big[key][1] < 0.6 * (small[key][2] - small[key][1]), key


def test_separated_classes_leave_no_doubt_and_one_class_is_refused():
  labels = np.array([0, 0, 0, 1, 1, 1, 1])
  probs = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.95])
  table = bootstrap.intervals(labels, probs, 0.5, resamples=200)
  assert table['roc_auc'] == (1.0, 1.0, 1.0)
  assert table['balanced_accuracy'] == (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match='both classes'):
    bootstrap.intervals(np.ones(5), np.linspace(0, 1, 5), 0.5)


def _fake_run(folder, seed):
  folder.mkdir()
  for split, n in (('val', 30), ('test', 45)):
    labels, probs = _scores(n, seed=seed + (split == 'test'))
    predictions.write(str(folder / f'predictions_{split}.csv'),
                      [f'IDRiD_{i:03d}' for i in range(n)], labels,
                      np.stack([1 - probs, probs], 1), ['NRDR', 'RDR'])
  (folder / 'metrics.json').write_text(json.dumps({'threshold_rule': 'youden'}))


def test_command_scores_the_ensemble_of_the_runs(tmp_path):
  _fake_run(tmp_path / 'a', 0)
  _fake_run(tmp_path / 'b', 5)
  result = subprocess.run([sys.executable, '-m', 'evaluation.bootstrap', '--resamples=50',
                           str(tmp_path / 'a'), str(tmp_path / 'b')], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  names, labels, probs, _ = predictions.ensemble([str(tmp_path / 'a'), str(tmp_path / 'b')])
  auc_line = [l for l in result.stdout.splitlines() if l.startswith('roc_auc')][0]
  assert float(auc_line.split()[1]) == pytest.approx(roc_auc_score(labels, probs), abs=5e-4)
  assert 'ensemble of 2 runs: 45 photographs (15 NRDR, 30 RDR)' in result.stdout

  (tmp_path / 'b' / 'predictions_test.csv').unlink()
  missing = subprocess.run([sys.executable, '-m', 'evaluation.bootstrap', str(tmp_path / 'a'),
                            str(tmp_path / 'b')], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=300)
  assert missing.returncode == 1
  errors = [l for l in missing.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'predictions_test.csv' in errors[0]
  level = subprocess.run([sys.executable, '-m', 'evaluation.bootstrap', '--level=1.5',
                          str(tmp_path / 'a')], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
  assert level.returncode == 1 and level.stderr.strip().splitlines()[-1] == (
      'error: --level must be a number in (0, 1), got 1.5')


def test_ensemble_keeps_the_runs_sensitivity_target(tmp_path):
  runs = [str(tmp_path / 'a'), str(tmp_path / 'b')]
  for run, seed in zip(runs, (0, 5)):
    _fake_run(tmp_path / os.path.basename(run), seed)
    with open(os.path.join(run, 'metrics.json'), 'w') as f:
      json.dump({'threshold_rule': 'sensitivity', 'min_sensitivity': 0.5}, f)
  assert predictions.common_threshold_setting(runs) == ('sensitivity', 0.5)
  _, labels, probs = predictions.average_by_name(
      [predictions.read_referable(r, 'val') for r in runs], runs)
  result = subprocess.run([sys.executable, '-m', 'evaluation.bootstrap', '--resamples=20',
                           *runs], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  target = metrics.choose_threshold(labels, probs, 'sensitivity', 0.5)
  assert target != metrics.choose_threshold(labels, probs, 'sensitivity', 0.9)
  assert f'threshold {target:.2f} (sensitivity >= 0.5 on validation)' in result.stdout
  with open(os.path.join(runs[1], 'metrics.json'), 'w') as f:
    json.dump({'threshold_rule': 'youden'}, f)
  with pytest.raises(ValueError, match='different threshold rules: sensitivity >= 0.5, youden'):
    predictions.common_threshold_setting(runs)

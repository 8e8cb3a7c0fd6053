"""evaluation.compare_runs: binary and 5-grade runs scored on the photographs they share."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evaluation import compare_runs
from evaluation import predictions
from tests.conftest import REPO_ROOT

GRADE_NAMES = ['0 no DR', '1 mild', '2 moderate', '3 severe', '4 proliferative']


def _write_binary(run, names, labels, p_rdr):
  run.mkdir()
  predictions.write(str(run / 'predictions_val.csv'), names, labels,
                    np.stack([1 - p_rdr, p_rdr], axis=1), ['NRDR', 'RDR'])


def _write_grades(run, names, grades, probs):
  run.mkdir()
  predictions.write(str(run / 'predictions_val.csv'), names, grades, probs, GRADE_NAMES)


def test_a_five_grade_run_reads_as_referable_dr(tmp_path):
  grades = np.array([0, 1, 2, 3, 4, 1])
  probs = np.random.default_rng(0).dirichlet(np.ones(5), len(grades))
  _write_grades(tmp_path / 'g', [f'x{i}' for i in range(6)], grades, probs)
  names, labels, p_rdr = predictions.read_referable(str(tmp_path / 'g'), 'val')
  assert names == [f'x{i}' for i in range(6)]
  assert labels.tolist() == [0, 0, 1, 1, 1, 0]
  np.testing.assert_allclose(p_rdr, probs[:, 2:].sum(axis=1), atol=2e-6)
  (tmp_path / 'bad').mkdir()
  (tmp_path / 'bad' / 'predictions_val.csv').write_text('name,label,p_x\nx0,0,0.5\n')
  with pytest.raises(ValueError, match='predictions_val.csv: expected columns'):
    predictions.read_referable(str(tmp_path / 'bad'), 'val')
  (tmp_path / 'bad' / 'predictions_val.csv').write_text('label,p_RDR\n0,0.5\n')  # no names
  with pytest.raises(ValueError, match='predictions_val.csv: expected columns'):
    predictions.read_referable(str(tmp_path / 'bad'), 'val')


def test_runs_are_compared_on_the_photographs_they_share(tmp_path):
  rng = np.random.default_rng(1)
  names = [f'x{i}' for i in range(40)]
  grades = rng.integers(0, 5, 40)
  labels = (grades >= 2).astype(int)
  # Run a scored x0-x29 and ranks them perfectly; run b (grades) scored x10-x39.
  p_a = np.where(labels[:30] == 1, 0.6, 0.4) + rng.uniform(-0.05, 0.05, 30)
  _write_binary(tmp_path / 'a', names[:30], labels[:30], p_a)
  probs_b = rng.dirichlet(np.ones(5), 30)
  _write_grades(tmp_path / 'b', names[10:], grades[10:], probs_b)
  runs = {r: predictions.read_referable(str(tmp_path / r), 'val') for r in ('a', 'b')}
  shared, aucs = compare_runs.compare(runs)
  assert shared == sorted(names[10:30])
  assert aucs['a'] == (1.0, 1.0)
  own_b = roc_auc_score(labels[10:], probs_b[:, 2:].sum(axis=1))
  shared_b = roc_auc_score(labels[10:30], probs_b[:20, 2:].sum(axis=1))
  assert aucs['b'] == pytest.approx((own_b, shared_b), abs=1e-4)
  assert own_b != pytest.approx(shared_b, abs=1e-3)

  # The ensemble averages P(RDR) over the runs on the shared photographs.
  mean = (p_a[10:30] + probs_b[:20, 2:].sum(axis=1)) / 2
  assert compare_runs.ensemble_auc(runs, shared) == pytest.approx(
      roc_auc_score(labels[10:30], mean), abs=1e-4)

  flipped = labels[:30].copy()
  flipped[15] = 1 - flipped[15]
  _write_binary(tmp_path / 'c', names[:30], flipped, p_a)
  runs['c'] = predictions.read_referable(str(tmp_path / 'c'), 'val')
  with pytest.raises(ValueError, match='x15 has different labels'):
    compare_runs.compare(runs)


def test_cli_prints_each_run_and_names_a_missing_file(tmp_path):
  labels = np.array([0, 1] * 10)
  _write_binary(tmp_path / 'a', [f'x{i}' for i in range(20)], labels, 0.3 + 0.4 * labels)
  (tmp_path / 'b').mkdir()
  proc = subprocess.run([sys.executable, '-m', 'evaluation.compare_runs', str(tmp_path / 'a')],
                        cwd=REPO_ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.splitlines()[-1] == (
      f'{tmp_path / "a"}: ROC AUC 1.000 on its 20, 1.000 on the shared')
  # Two runs whose errors cancel: each misranks pairs, their average ranks all correctly.
  # Run e1 misranks x0-x9 a little and ranks x10-x19 by far; e2 the other way round.
  slight, far = np.where(labels == 1, 0.45, 0.55), np.where(labels == 1, 0.8, 0.2)
  first = np.arange(20) < 10
  _write_binary(tmp_path / 'e1', [f'x{i}' for i in range(20)], labels,
                np.where(first, slight, far))
  _write_binary(tmp_path / 'e2', [f'x{i}' for i in range(20)], labels,
                np.where(first, far, slight))
  proc = subprocess.run([sys.executable, '-m', 'evaluation.compare_runs', str(tmp_path / 'e1'),
                         str(tmp_path / 'e2')], cwd=REPO_ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert all('ROC AUC 0.750 on its 20' in line for line in lines[1:3])
  assert lines[-1] == 'ensemble (mean P(RDR) of the 2 runs): ROC AUC 1.000 on the shared'
  proc = subprocess.run([sys.executable, '-m', 'evaluation.compare_runs', str(tmp_path / 'a'),
                         str(tmp_path / 'b')], cwd=REPO_ROOT, capture_output=True, text=True)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      f'error: {tmp_path / "b" / "predictions_val.csv"}: no validation predictions; '
      'run evaluate.py first')

"""evaluation.cross_validation: out-of-fold threshold, score normalisation, fold ensemble."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evaluation import cross_validation
from evaluation import metrics
from evaluation import predictions
from results import make_table
from tests.conftest import REPO_ROOT

TEST_NAMES = [f'T{i:02d}' for i in range(10)]
TEST_LABELS = np.array([0, 1] * 5)


def _fold(d, k, held_out_names, labels, val_p, test_p, seed=0):
  """A fold run as evaluate.py leaves it: metrics.json, run.json, predictions."""
  d.mkdir(parents=True)
  for split, names, y, p in (('val', held_out_names, labels, val_p),
                             ('test', TEST_NAMES, TEST_LABELS, test_p)):
    predictions.write(predictions.path(str(d), split), names, y,
                      np.stack([1 - p, p], axis=1), ['NRDR', 'RDR'])
  threshold = metrics.choose_threshold(labels, val_p)
  m = dict(run_dir=str(d), checkpoint_epoch=k + 1, threshold=threshold,
           threshold_rule='youden',
           splits=dict(val=metrics.binary_metrics(labels, val_p, threshold),
                       test=metrics.binary_metrics(TEST_LABELS, test_p, threshold)))
  (d / 'metrics.json').write_text(json.dumps(m))
  (d / 'run.json').write_text(json.dumps({'seed': seed, 'train_seconds': 60.0 * (k + 1)}))
  return m


def _three_folds(root, seed=0):
  """Three fold models that each rank their fold perfectly, at very different levels."""
  rng = np.random.default_rng(seed)
  dirs = []
  for k, level in enumerate((0.1, 0.5, 0.9)):
    labels = np.array([0] * 8 + [1] * 12)
    logit = np.log(level / (1 - level)) + np.where(labels == 1, 1.0, -1.0) * 0.5
    val_p = 1 / (1 + np.exp(-(logit + rng.uniform(-0.2, 0.2, 20))))
    test_logit = np.log(level / (1 - level)) + np.where(TEST_LABELS == 1, 0.5, -0.5)
    test_p = 1 / (1 + np.exp(-(test_logit + rng.uniform(-0.2, 0.2, 10))))
    d = root / f'fold_{k}'
    _fold(d, k, [f'F{k}_{i:02d}' for i in range(20)], labels, val_p, test_p, seed)
    dirs.append(str(d))
  return dirs


def test_folds_pool_into_out_of_fold_predictions_and_a_test_ensemble(tmp_path):
  dirs = _three_folds(tmp_path)
  results, run, preds = cross_validation.combine(dirs, normalise='none')
  names, labels, oof = preds['val']
  assert len(names) == len(set(names)) == 60 and results['splits']['val']['n'] == 60
  assert results['threshold'] == metrics.choose_threshold(labels, oof, 'youden')
  tests = [predictions.read_referable(d, 'test')[2] for d in dirs]
  np.testing.assert_allclose(preds['test'][2], np.mean(tests, axis=0))
  assert results['splits']['test']['n'] == 10 and len(results['folds']) == 3
  assert run == {'seed': 0, 'train_seconds': 360.0, 'folds': [os.path.abspath(d) for d in dirs]}
  cross_validation.write(str(tmp_path / 'out'), results, run, preds)
  assert sorted(os.listdir(tmp_path / 'out')) == ['metrics.json', 'predictions_test.csv',
                                                  'predictions_val.csv', 'run.json']
  _, _, written = predictions.read_referable(str(tmp_path / 'out'), 'test')
  np.testing.assert_allclose(written, preds['test'][2], atol=1e-6)


def test_standardised_scores_fix_models_that_disagree_on_their_operating_point(tmp_path):
  dirs = _three_folds(tmp_path)
  raw, _, _ = cross_validation.combine(dirs, normalise='none')
  z, _, _ = cross_validation.combine(dirs)  # logit_z, the default
  # Pooled raw scores mix three levels: AUC and the carried-over threshold suffer.
  assert raw['splits']['val']['roc_auc'] < 0.9
  assert raw['splits']['val']['held_out']['balanced_accuracy'] < 0.8
  assert z['splits']['val']['roc_auc'] == 1.0
  assert z['splits']['val']['held_out']['balanced_accuracy'] > 0.95
  assert z['splits']['val']['without_normalisation']['held_out'] == \
      raw['splits']['val']['held_out']
  assert z['splits']['test']['balanced_accuracy'] > raw['splits']['test']['balanced_accuracy']
  assert z['cross_validation']['normalise'] == 'logit_z'


def test_runs_that_are_not_folds_of_one_partition_are_refused(tmp_path):
  dirs = _three_folds(tmp_path)
  with pytest.raises(ValueError, match='held out by both'):
    cross_validation.combine([dirs[0], dirs[1], dirs[0]])
  labels = np.array([0] * 8 + [1] * 12)
  other = tmp_path / 'other'
  _fold(other, 3, [f'G{i}' for i in range(20)], labels, np.linspace(0, 1, 20),
        np.linspace(0, 1, 10))
  (other / 'predictions_test.csv').write_text('name,label,p_NRDR,p_RDR\nX,1,0.5,0.5\n')
  with pytest.raises(ValueError, match='other test photographs'):
    cross_validation.combine(dirs + [str(other)])
  with pytest.raises(ValueError, match='at least 2 fold runs'):
    cross_validation.combine(dirs[:1])


def test_command_line_error_is_one_line_and_writes_nothing(tmp_path):
  dirs = _three_folds(tmp_path)
  os.remove(os.path.join(dirs[2], 'predictions_val.csv'))
  out = tmp_path / 'out'
  proc = subprocess.run([sys.executable, '-m', 'evaluation.cross_validation', f'--out={out}',
                         *dirs], cwd=REPO_ROOT, capture_output=True, text=True)
  assert proc.returncode == 1
  assert proc.stderr.strip().count('\n') == 0 and 'fold_2' in proc.stderr
  assert not out.exists() or not os.listdir(out)


def test_results_table_of_a_cross_validated_experiment(tmp_path):
  for seed in (0, 1):
    seed_dir = tmp_path / 'results' / 'exp' / f'seed_{seed}'
    dirs = _three_folds(seed_dir, seed)
    cross_validation.write(str(seed_dir), *cross_validation.combine(dirs))
  lines = make_table.build_table('exp', root=str(tmp_path)).splitlines()
  assert lines[2].startswith('| seed 0, 3 folds |') and '| 6.0 |' in lines[2]
  assert lines[5].startswith('| single fold models (6, ')
  assert lines[6].startswith('| ensemble of the 2 seeds (mean score')

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


def _fold(d, k, held_out_names, labels, val_p, test_p, seed=0, num_folds=3, split_seed=None):
  """A fold run as evaluate.py leaves it: metrics.json, run.json, predictions, config.

  The test rows are written in an order of their own per fold.
  """
  d.mkdir(parents=True)
  order = np.random.default_rng(100 + k).permutation(len(TEST_NAMES))
  for split, names, y, p in (('val', held_out_names, labels, val_p),
                             ('test', [TEST_NAMES[i] for i in order], TEST_LABELS[order],
                              np.asarray(test_p)[order])):
    predictions.write(predictions.path(str(d), split), names, y,
                      np.stack([1 - p, p], axis=1), ['NRDR', 'RDR'])
  threshold = metrics.choose_threshold(labels, val_p)
  m = dict(run_dir=str(d), checkpoint_epoch=k + 1, threshold=threshold,
           threshold_rule='youden',
           splits=dict(val=metrics.binary_metrics(labels, val_p, threshold),
                       test=metrics.binary_metrics(TEST_LABELS, test_p, threshold)))
  (d / 'metrics.json').write_text(json.dumps(m))
  (d / 'run.json').write_text(json.dumps({'seed': seed, 'train_seconds': 60.0 * (k + 1)}))
  (d / 'operative_config.gin').write_text(
      f'build_tfrecords.fold = {k}\nbuild_tfrecords.num_folds = {num_folds}\n'
      f'build_tfrecords.split_seed = {seed if split_seed is None else split_seed}\n')
  return m


def _three_folds(root, seed=0):
  """Three fold models that each rank their fold perfectly, at very different levels.

  The folds hold different class mixes (8, 9 and 10 NRDR of 20).
  """
  rng = np.random.default_rng(seed)
  dirs = []
  for k, level in enumerate((0.1, 0.5, 0.9)):
    labels = np.array([0] * (8 + k) + [1] * (12 - k))
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
  results, run, preds = cross_validation.combine(dirs[::-1], normalise='none')
  names, labels, oof = preds['val']
  assert len(names) == len(set(names)) == 60 and results['splits']['val']['n'] == 60
  for d in dirs:  # every photograph keeps its own label and its own fold model's score
    fold_names, fold_labels, fold_p = predictions.read_referable(d, 'val')
    index = [names.index(n) for n in fold_names]
    assert labels[index].tolist() == fold_labels.tolist()
    np.testing.assert_allclose(oof[index], fold_p)
  assert results['splits']['val']['sensitivity'] == np.mean(oof[labels == 1] >=
                                                            results['threshold'])
  # Test: each photograph's mean over the folds, matched by name, not by row.
  by_name = [dict(zip(*predictions.read_referable(d, 'test')[::2])) for d in dirs]
  assert preds['test'][0] == TEST_NAMES
  np.testing.assert_allclose(preds['test'][2], [np.mean([b[n] for b in by_name])
                                                for n in TEST_NAMES])
  assert preds['test'][1].tolist() == TEST_LABELS.tolist()
  assert [f['checkpoint_epoch'] for f in results['folds']] == [1, 2, 3]  # in fold order
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
  assert z['splits']['val']['held_out']['balanced_accuracy'] > 0.9
  assert z['splits']['val']['without_normalisation']['held_out'] == \
      raw['splits']['val']['held_out']
  assert z['splits']['test']['balanced_accuracy'] > raw['splits']['test']['balanced_accuracy']
  assert z['cross_validation']['normalise'] == 'logit_z'


def test_runs_that_are_not_one_complete_partition_are_refused(tmp_path):
  dirs = _three_folds(tmp_path)
  with pytest.raises(ValueError, match=r'folds 0..2 once each, got folds \[0, 1\] '
                                       r'\(missing \[2\]\)'):
    cross_validation.combine(dirs[:2])
  with pytest.raises(ValueError, match=r'got folds \[0, 0, 1\]'):
    cross_validation.combine([dirs[0], dirs[1], dirs[0]])
  other_seed = _three_folds(tmp_path / 'seed1', seed=1)
  with pytest.raises(ValueError, match='differ in split_seed'):
    cross_validation.combine([dirs[0], dirs[1], other_seed[2]])
  labels = np.array([0] * 8 + [1] * 12)
  other = tmp_path / 'other'
  _fold(other, 2, [f'G{i}' for i in range(20)], labels, np.linspace(0, 1, 20),
        np.linspace(0, 1, 10))
  (other / 'predictions_test.csv').write_text('name,label,p_NRDR,p_RDR\nX,1,0.5,0.5\n')
  with pytest.raises(ValueError, match='other/? scored other photographs'):
    cross_validation.combine(dirs[:2] + [str(other)])
  (tmp_path / 'plain').mkdir()
  (tmp_path / 'plain' / 'run.json').write_text('{"seed": 0}')
  (tmp_path / 'plain' / 'operative_config.gin').write_text('build_tfrecords.fold = None\n')
  with pytest.raises(ValueError, match='plain was not trained on a fold'):
    cross_validation.combine([dirs[0], str(tmp_path / 'plain')])


def test_command_line_errors_are_one_line_and_write_nothing(tmp_path):
  dirs = _three_folds(tmp_path)
  out = tmp_path / 'out'
  for broken in ('predictions_val.csv', 'metrics.json'):
    if broken == 'metrics.json':
      (tmp_path / 'fold_2' / 'metrics.json').write_text('{"splits": ')
    else:
      os.remove(os.path.join(dirs[2], broken))
    proc = subprocess.run([sys.executable, '-m', 'evaluation.cross_validation',
                           f'--out={out}', *dirs], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count('\n') == 0 and 'fold_2' in proc.stderr
    assert not out.exists() or not os.listdir(out)


def test_bad_probabilities_and_an_out_among_the_folds_are_refused(tmp_path):
  dirs = _three_folds(tmp_path)
  before = (tmp_path / 'fold_0' / 'predictions_val.csv').read_text()
  proc = subprocess.run([sys.executable, '-m', 'evaluation.cross_validation',
                         f'--out={dirs[0]}', *dirs], cwd=REPO_ROOT, capture_output=True,
                        text=True)
  assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
      f'error: --out={dirs[0]} is one of the fold runs: its predictions would be '
      'overwritten; choose another folder']
  assert (tmp_path / 'fold_0' / 'predictions_val.csv').read_text() == before
  lines = before.splitlines()
  row = lines[1].split(',')
  lines[1] = ','.join(row[:-1] + ['1.7'])  # P(RDR) above 1
  (tmp_path / 'fold_0' / 'predictions_val.csv').write_text('\n'.join(lines) + '\n')
  proc = subprocess.run([sys.executable, '-m', 'evaluation.cross_validation',
                         f'--out={tmp_path / "out"}', *dirs], cwd=REPO_ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 1 and proc.stderr.strip().count('\n') == 0
  assert 'fold_0' in proc.stderr and 'probabilities must lie in [0, 1]' in proc.stderr
  assert not (tmp_path / 'out').exists()


def test_oof_only_judges_folds_without_test_predictions_and_writes_nothing(tmp_path):
  """A change is judged on out-of-fold figures before any test score of it exists."""
  dirs = _three_folds(tmp_path)
  full, _, _ = cross_validation.combine(dirs)
  for d in dirs:  # e.g. folds re-evaluated on validation only
    os.remove(os.path.join(d, 'predictions_test.csv'))
  with pytest.raises(FileNotFoundError, match='no test predictions'):
    cross_validation.combine(dirs)
  oof, _, preds = cross_validation.combine(dirs, oof_only=True)
  assert oof['splits']['val'] == full['splits']['val'] and 'test' not in oof['splits']
  assert oof['threshold'] == full['threshold'] and list(preds) == ['val']
  proc = subprocess.run([sys.executable, '-m', 'evaluation.cross_validation', '--oof_only',
                         *dirs], cwd=REPO_ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert 'out-of-fold: AUC 1.000' in proc.stdout and 'test balanced' not in proc.stdout
  assert 'fold ensemble' not in proc.stdout
  assert sorted(os.listdir(tmp_path)) == ['fold_0', 'fold_1', 'fold_2']


def test_a_failed_write_leaves_no_result(tmp_path):
  results, run, preds = cross_validation.combine(_three_folds(tmp_path))
  run['unserialisable'] = object()
  with pytest.raises(TypeError):
    cross_validation.write(str(tmp_path / 'out'), results, run, preds)
  assert os.listdir(tmp_path / 'out') == []


def test_results_table_of_a_cross_validated_experiment(tmp_path):
  combined = []
  for seed in (0, 1):
    seed_dir = tmp_path / 'results' / 'exp' / f'seed_{seed}'
    combined.append(cross_validation.combine(_three_folds(seed_dir, seed)))
    cross_validation.write(str(seed_dir), *combined[-1])
  # An unfinished seed (folds still training) is left out, not an error.
  (tmp_path / 'results' / 'exp' / 'seed_2' / 'fold_0').mkdir(parents=True)
  lines = make_table.build_table('exp', root=str(tmp_path)).splitlines()
  test0 = combined[0][0]['splits']['test']
  assert lines[2] == ('| seed 0, 3 folds | ' + ' | '.join(f'{test0[k]:.3f}'
                                                          for k in make_table.KEYS) + ' | 6.0 |')
  fold_bal = [f['test']['balanced_accuracy'] for c in combined for f in c[0]['folds']]
  assert lines[5].startswith('| single fold models (6, ')
  assert f'{np.mean(fold_bal):.3f} +- {np.std(fold_bal, ddof=1):.3f}' in lines[5]
  assert lines[6].startswith('| ensemble of the 2 seeds (mean score')
  assert len(lines) == 7


def _set_rule(dirs, **setting):
  for d in dirs:
    path = os.path.join(d, 'metrics.json')
    m = json.loads(open(path).read())
    m.update(setting)
    with open(path, 'w') as f:
      json.dump(m, f)


def test_folds_keep_their_sensitivity_target(tmp_path):
  dirs = _three_folds(tmp_path)
  _set_rule(dirs, threshold_rule='sensitivity', min_sensitivity=0.5)
  results, _, preds = cross_validation.combine(dirs, normalise='none')
  _, labels, oof = preds['val']
  assert results['min_sensitivity'] == 0.5
  assert results['threshold'] == metrics.choose_threshold(labels, oof, 'sensitivity', 0.5)
  assert results['threshold'] > metrics.choose_threshold(labels, oof, 'sensitivity', 0.9)
  _set_rule(dirs[:1], min_sensitivity=0.95)
  with pytest.raises(ValueError, match=r'different threshold rules: sensitivity >= 0.5, '
                                       r'sensitivity >= 0.95'):
    cross_validation.combine(dirs, normalise='none')


def test_argmax_folds_need_raw_scores(tmp_path):
  dirs = _three_folds(tmp_path)
  _set_rule(dirs, threshold_rule='argmax')
  with pytest.raises(ValueError, match='argmax rule.*--normalise=none'):
    cross_validation.combine(dirs)
  assert cross_validation.combine(dirs, normalise='none')[0]['threshold'] == 0.5

"""results/make_table.py: per-seed rows, mean and sample sd, and the ensemble row."""

import json

import numpy as np
import pytest

from evaluation import metrics
from results import make_table


def _seed(root, seed, val, test):
  d = root / 'results' / 'exp' / f'seed_{seed}'
  d.mkdir(parents=True)
  out = {'threshold_rule': 'argmax', 'splits': {}}
  for split, (labels, probs) in (('val', val), ('test', test)):
    with open(d / f'predictions_{split}.csv', 'w') as f:
      f.write('name,label,p_NRDR,p_RDR\n')
      for i, (y, p) in enumerate(zip(labels, probs)):
        f.write(f'IDRiD_{i:03d},{y},{1 - p:.6f},{p:.6f}\n')
    out['splits'][split] = metrics.binary_metrics(labels, probs, 0.5)
  (d / 'metrics.json').write_text(json.dumps(out))
  (d / 'run.json').write_text(json.dumps({'seed': seed, 'train_seconds': 120.0 * (seed + 1)}))
  return out['splits']['test']


def test_table_mean_sd_and_ensemble(tmp_path):
  labels = np.array([0, 0, 1, 1, 1])
  a = _seed(tmp_path, 0, (labels, [0.2, 0.6, 0.7, 0.8, 0.4]), (labels, [0.1, 0.6, 0.9, 0.4, 0.8]))
  b = _seed(tmp_path, 1, (labels, [0.3, 0.2, 0.9, 0.6, 0.7]), (labels, [0.2, 0.3, 0.45, 0.4, 0.9]))
  table = make_table.build_table('exp', root=str(tmp_path))
  lines = table.splitlines()
  assert lines[2].startswith('| seed 0 |') and '| 2.0 |' in lines[2]
  mean = np.mean([a['balanced_accuracy'], b['balanced_accuracy']])
  sd = np.std([a['balanced_accuracy'], b['balanced_accuracy']], ddof=1)
  assert f'**{mean:.3f} +- {sd:.3f}**' in lines[4]
  ensemble = metrics.binary_metrics(labels, np.mean([[0.1, 0.6, 0.9, 0.4, 0.8],
                                                     [0.2, 0.3, 0.45, 0.4, 0.9]], axis=0), 0.5)
  assert lines[5].startswith('| ensemble of the 2 seeds')
  assert f'| {ensemble["roc_auc"]:.3f} |' in lines[5]


def test_tune_table_groups_seeds_into_mean_and_sd(tmp_path):
  d = tmp_path / 'results' / 'exp'
  d.mkdir(parents=True)
  rows = [('image_size=512,seed=0', 512, 0, 0.90, 'completed', 300),
          ('image_size=256,seed=1', 256, 1, 0.80, 'completed', 100),
          ('image_size=256,seed=0', 256, 0, 0.70, 'completed', 120),
          ('image_size=512,seed=1', 512, 1, 0.0, 'failed', 5)]
  with open(d / 'tune_sizes.csv', 'w') as f:
    f.write('trial,tfrecords.build_tfrecords.image_size,train.seed,val_roc_auc,status,error,'
            'seconds\n')
    for trial, size, seed, auc, status, seconds in rows:
      f.write(f'"{trial}",{size},{seed},{auc},{status},,{seconds}\n')
  (grid, table), = make_table.tune_tables('exp', root=str(tmp_path))
  lines = table.splitlines()
  assert grid == 'sizes' and len(lines) == 4
  assert lines[0].startswith('| image_size | seeds | val_roc_auc (mean +- sd) |')
  sd = np.std([0.80, 0.70], ddof=1)
  assert lines[2] == f'| 256 | 2 | 0.750 +- {sd:.3f} | 110 |'
  assert lines[3] == '| 512 | 1 | 0.900 +- 0.000 | 300 |'  # the failed trial is left out


def test_check_writes_nothing_and_names_stale_files(tmp_path, capsys):
  labels = np.array([0, 0, 1, 1, 1])
  _seed(tmp_path, 0, (labels, [0.2, 0.6, 0.7, 0.8, 0.4]), (labels, [0.1, 0.6, 0.9, 0.4, 0.8]))
  readme = tmp_path / 'README.md'
  readme.write_text('# r\n<!-- results:exp:start -->\nold\n<!-- results:exp:end -->\n')
  table_md = tmp_path / 'results' / 'exp' / 'table.md'

  assert make_table.main(['--check'], root=str(tmp_path)) == 1
  assert 'out of date: results/exp/table.md, README.md' in capsys.readouterr().err
  assert 'old' in readme.read_text() and not table_md.exists()  # --check wrote nothing

  assert make_table.main([], root=str(tmp_path)) == 0
  assert '| seed 0 |' in readme.read_text() and table_md.read_text() in readme.read_text()
  capsys.readouterr()
  assert make_table.main(['--check'], root=str(tmp_path)) == 0
  assert 'up to date' in capsys.readouterr().out

  table_md.write_text('edited by hand\n')
  assert make_table.main(['--check'], root=str(tmp_path)) == 1
  assert table_md.read_text() == 'edited by hand\n'
  assert 'out of date: results/exp/table.md' in capsys.readouterr().err


def test_seeds_with_different_threshold_rules_are_one_error(tmp_path, capsys):
  labels = np.array([0, 0, 1, 1, 1])
  _seed(tmp_path, 0, (labels, [0.2, 0.6, 0.7, 0.8, 0.4]), (labels, [0.1, 0.6, 0.9, 0.4, 0.8]))
  _seed(tmp_path, 1, (labels, [0.3, 0.2, 0.9, 0.6, 0.7]), (labels, [0.2, 0.3, 0.45, 0.4, 0.9]))
  m = tmp_path / 'results' / 'exp' / 'seed_1' / 'metrics.json'
  m.write_text(json.dumps(dict(json.loads(m.read_text()), threshold_rule='youden')))
  readme = tmp_path / 'README.md'
  readme.write_text('# r\n<!-- results:exp:start -->\nold\n<!-- results:exp:end -->\n')
  assert make_table.main([], root=str(tmp_path)) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ['error: results/exp: the runs were evaluated with different threshold rules: '
                 'argmax, youden']
  assert 'old' in readme.read_text()
  assert not (tmp_path / 'results' / 'exp' / 'table.md').exists()


@pytest.mark.parametrize('name, content, message', [
    ('metrics.json', '{}', 'seed_0: metrics.json or run.json is not that of an evaluated run'),
    ('metrics.json', '{"splits": {"te', 'seed_0/metrics.json: not a metrics file'),
    ('run.json', '{"seed', 'seed_0/run.json is not valid JSON'),
])
def test_unreadable_results_are_one_error_naming_the_file(tmp_path, capsys, name, content,
                                                          message):
  labels = np.array([0, 0, 1, 1, 1])
  _seed(tmp_path, 0, (labels, [0.2, 0.6, 0.7, 0.8, 0.4]), (labels, [0.1, 0.6, 0.9, 0.4, 0.8]))
  (tmp_path / 'results' / 'exp' / 'seed_0' / name).write_text(content)
  readme = tmp_path / 'README.md'
  readme.write_text('# r\n<!-- results:exp:start -->\nold\n<!-- results:exp:end -->\n')
  assert make_table.main([], root=str(tmp_path)) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: results/exp: ') and message in err[0]
  assert 'old' in readme.read_text()


def test_a_misspelt_flag_rewrites_nothing(tmp_path, capsys):
  readme = tmp_path / 'README.md'
  readme.write_text('# r\n<!-- results:exp:start -->\nold\n<!-- results:exp:end -->\n')
  assert make_table.main(['--chek'], root=str(tmp_path)) == 1
  assert capsys.readouterr().err == (
      "error: unknown argument '--chek'; use [--experiment=NAME] [--check]\n")
  assert 'old' in readme.read_text()

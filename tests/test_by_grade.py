"""evaluation.by_grade: which grades a referable-DR run calls wrongly or ranks badly."""

import json
import subprocess
import sys

import numpy as np
import pytest

from evaluation import by_grade
from evaluation import predictions
from tests.conftest import REPO_ROOT


def test_grade_table_hand_computed():
  names = ['a', 'b', 'c', 'd', 'e', 'f', 'g']
  grades = np.array([0, 0, 1, 2, 2, 3, 4])
  labels = (grades >= 2).astype(int)
  probs = np.array([0.1, 0.6, 0.3, 0.2, 0.7, 0.8, 0.9])
  table = by_grade.grade_table(names, grades, labels, probs, threshold=0.5)
  # Grade 0 ('a' 0.1, 'b' 0.6) against the RDR photographs (0.2, 0.7, 0.8, 0.9): 'a' is
  # below all four, 'b' below three: 7 of 8 pairs ranked correctly. 'b' is called RDR.
  assert table[0] == dict(n=2, called_rdr=0.5, auc=pytest.approx(7 / 8), wrong=['b'])
  # Grade 2 ('d' 0.2, 'e' 0.7) against the NRDR photographs (0.1, 0.6, 0.3): 'd' above one,
  # 'e' above all three: 4 of 6. 'd' is missed.
  assert table[2] == dict(n=2, called_rdr=0.5, auc=pytest.approx(4 / 6), wrong=['d'])
  # Grade 1 ('c' 0.3) is below three of the four RDR photographs and not called RDR.
  assert table[1] == dict(n=1, called_rdr=0.0, auc=pytest.approx(3 / 4), wrong=[])
  assert table[4]['called_rdr'] == 1.0 and table[4]['wrong'] == []


def _idrid_folder(root, train_rows, test_rows):
  header = 'Image name,Retinopathy grade,Risk of macular edema \n'
  for split, rows in (('train', train_rows), ('test', test_rows)):
    (root / 'images' / split).mkdir(parents=True)
    (root / 'labels').mkdir(exist_ok=True)
    (root / 'labels' / f'{split}.csv').write_text(
        header + ''.join(f'{n},{g},0\n' for n, g in rows))
  return root


def _run_folder(path, split, rows, threshold):
  """A run folder with predictions of (name, label, P(RDR)) rows."""
  path.mkdir()
  names, labels, probs = zip(*rows)
  predictions.write(predictions.path(str(path), split), names, labels,
                    [(1 - p, p) for p in probs], ['NRDR', 'RDR'])
  (path / 'metrics.json').write_text(json.dumps({'threshold': threshold}))
  return path


def _by_grade(*args):
  return subprocess.run([sys.executable, '-m', 'evaluation.by_grade', *map(str, args)],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_grades_come_from_the_label_file_of_the_split(tmp_path):
  # IDRiD reuses names across its two label files: the same name is grade 2 in training
  # (where validation photographs come from) and grade 0 in test.
  data = _idrid_folder(tmp_path / 'idrid', [('P1', 2), ('P2', 0)], [('P1', 0), ('P2', 3)])
  val_runs = [_run_folder(tmp_path / f'v{i}', 'val', [('P1', 1, 0.2), ('P2', 0, 0.1)], 0.5)
              for i in range(2)]
  test_run = _run_folder(tmp_path / 't', 'test', [('P1', 0, 0.2), ('P2', 1, 0.9)], 0.5)
  result = _by_grade(f'--data_dir={data}', '--split=val', *val_runs)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = {line.split('|')[1].strip(): line for line in result.stdout.splitlines()
          if line.startswith('| ') and line.split('|')[1].strip().isdigit()}
  assert set(rows) == {'0', '2'}
  assert '| 2 | RDR | 1 | 0.000 +- 0.000 | 1.000 +- 0.000 | P1 |' in rows['2']
  result = _by_grade(f'--data_dir={data}', '--split=test', test_run)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '| 3 | RDR | 1 | 1.000 | 1.000 | - |' in result.stdout
  # A label that disagrees with the grade (test predictions read against training grades)
  # is a one-line error naming the predictions file.
  wrong = _run_folder(tmp_path / 'w', 'val', [('P1', 0, 0.2), ('P2', 1, 0.9)], 0.5)
  result = _by_grade(f'--data_dir={data}', '--split=val', wrong)
  assert result.returncode == 1
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'predictions_val.csv' in errors[0] and 'P1' in errors[0]
  # A metrics.json without a threshold, or not JSON at all, is named in one line too.
  for text in ('{"splits": {}}', '{not json'):
    (val_runs[0] / 'metrics.json').write_text(text)
    result = _by_grade(f'--data_dir={data}', '--split=val', *val_runs)
    errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    assert 'metrics.json' in errors[0] and 'threshold' in errors[0]

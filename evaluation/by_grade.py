"""Where a referable-DR model errs, grade by grade.

  python -m evaluation.by_grade --data_dir=../shared/datasets/idrid-800 --split=test \
      results/idrid_binary_cv5/seed_*/

For each run folder (its predictions_<split>.csv and, for the threshold, metrics.json) and
each grade 0-4 among the split's photographs: the share called RDR at the run's threshold,
the ROC AUC of that grade against every photograph of the other class (grades 0-1 against
all RDR photographs, grades 2-4 against all NRDR ones), which says which grades the ranking
mixes up, and the photographs that every run misclassifies. Prints mean +- sd over the
runs. Grades come from the IDRiD label file of the split (the training file for
validation); nothing is written.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np
from sklearn import metrics as sk_metrics

from evaluation import predictions
from input_pipeline import idrid
from training import run_dir as rd
from utils import entry

REFERABLE = idrid.label_fn('binary')  # grade -> 0 (NRDR) or 1 (RDR)
NRDR_GRADES = tuple(g for g in idrid.GRADES if REFERABLE(g) == 0)


def grade_table(names: Sequence[str], grades: np.ndarray, labels: np.ndarray,
                probs: np.ndarray, threshold: float) -> dict[int, dict[str, Any]]:
  """{grade: {'n', 'called_rdr', 'auc', 'wrong'}} for each grade present.

  `auc` is that grade's photographs against all photographs of the other class (None
  when the other class is absent); `wrong` the names of the grade's misclassified ones.
  """
  names = np.asarray(names)
  table = {}
  for g in sorted(set(int(x) for x in grades)):
    mine = grades == g
    other = labels != (0 if g in NRDR_GRADES else 1)
    auc = None
    if other.any():
      y = np.concatenate([np.ones(mine.sum()), np.zeros(other.sum())])
      if g in NRDR_GRADES:  # an NRDR photograph is ranked well when it scores low
        y = 1 - y
      auc = float(sk_metrics.roc_auc_score(y, np.concatenate([probs[mine], probs[other]])))
    called = probs[mine] >= threshold
    wrong = names[mine][called != (g not in NRDR_GRADES)]
    table[g] = dict(n=int(mine.sum()), called_rdr=float(np.mean(called)), auc=auc,
                    wrong=sorted(str(n) for n in wrong))
  return table


def grades_of(data_dir: str, split: str) -> dict[str, int]:
  """Photograph name -> grade from the IDRiD label file of `split` ('val' or 'test').

  Validation photographs come from the training label file. The two files reuse names
  (training IDRiD_038 is another photograph than test IDRiD_038), so they are not merged.
  """
  _, csv_path = idrid.find_layout(data_dir)['test' if split == 'test' else 'train']
  return {name: grade for name, grade, _ in idrid.read_labels(csv_path)}


def run_table(run_dir: str, split: str, grades: dict[str, int]) -> dict[int, dict[str, Any]]:
  """`grade_table` of one run folder at the threshold in its metrics.json."""
  names, labels, probs = predictions.read_referable(run_dir, split)
  metrics_path = os.path.join(run_dir, rd.METRICS)
  if not os.path.isfile(metrics_path):
    raise FileNotFoundError(f'{metrics_path}: not found; run evaluate.py first')
  try:
    threshold = float(rd.read_json(metrics_path)['threshold'])
  except (ValueError, KeyError, TypeError) as e:  # ValueError: not JSON
    raise ValueError(f'{metrics_path}: no decision threshold in it ({type(e).__name__}: {e}); '
                     'run evaluate.py again') from None
  missing = [n for n in names if n not in grades]
  if missing:
    raise ValueError(f'{predictions.path(run_dir, split)}: {len(missing)} photographs are '
                     f'not in the {split} label file, e.g. {missing[0]}')
  graded = np.array([grades[n] for n in names])
  wrong = [n for n, g, y in zip(names, graded, labels) if REFERABLE(int(g)) != int(y)]
  if wrong:
    raise ValueError(f'{predictions.path(run_dir, split)}: label of {wrong[0]} disagrees '
                     'with its grade in the label file')
  return grade_table(names, graded, labels, probs, threshold)


def _cell(values: Sequence[float | None]) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return '-'
  if len(values) == 1:
    return f'{values[0]:.3f}'
  return f'{np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}'


def summary(tables: Sequence[dict[int, dict[str, Any]]]) -> str:
  """Markdown table: one row per grade, mean +- sd over the runs, and the photographs that
  every run misclassifies."""
  lines = ['| grade | class | photographs | called RDR | AUC against the other class | '
           'wrong in every run |', '|---|---|---|---|---|---|']
  for g in sorted({g for t in tables for g in t}):
    rows = [t[g] for t in tables if g in t]
    n = sorted({r['n'] for r in rows})
    always_wrong = sorted(set.intersection(*(set(r['wrong']) for r in rows)))
    lines.append(f"| {g} | {'NRDR' if g in NRDR_GRADES else 'RDR'} | "
                 f"{'/'.join(map(str, n))} | {_cell([r['called_rdr'] for r in rows])} | "
                 f"{_cell([r['auc'] for r in rows])} | "
                 f"{', '.join(always_wrong) or '-'} |")
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def main(argv):
  run_dirs = argv[1:]
  if not run_dirs:
    raise app.UsageError('give one or more run folders')
  grades = grades_of(FLAGS.data_dir, FLAGS.split)
  tables = [run_table(d, FLAGS.split, grades) for d in run_dirs]
  print(f'{FLAGS.split} split, {len(run_dirs)} run(s); mean +- sd over runs')
  print(summary(tables))


if __name__ == '__main__':
  # Defined here, not on import, so the module can be imported beside other tools that
  # define --split (evaluation.compare_runs).
  flags.DEFINE_string('data_dir', None, 'IDRiD folder whose label files give the grades.')
  flags.DEFINE_enum('split', 'test', ['val', 'test'], 'Predictions to read.')
  flags.mark_flag_as_required('data_dir')
  entry.run(main)

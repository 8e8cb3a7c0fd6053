"""Referable-DR ROC AUC of several runs on the photographs they all scored.

    python -m evaluation.compare_runs RUN_DIR... [--split=val]

Runs built with other record parameters can hold different validation photographs (the
grade mapping drops byte-identical copies whose grades conflict, which reshuffles that
grade's split), so their own AUCs are not measured on the same photographs. This prints
each run's AUC on all of its photographs and on the ones every named run scored, and, for
two or more runs, the AUC of their ensemble (P(RDR) averaged over the runs) on the shared
photographs. Binary and 5-grade runs mix: a 5-grade run is scored on P(grades 2-4)
(`predictions.read_referable`).
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
import numpy as np
from sklearn import metrics as sk

from evaluation import predictions
from utils import entry

flags.DEFINE_string('split', 'val', 'Split whose predictions_<split>.csv to compare.')
FLAGS = flags.FLAGS


def compare(runs: dict[str, tuple[list[str], np.ndarray, np.ndarray]]
            ) -> tuple[list[str], dict[str, tuple[float, float]]]:
  """The shared photographs and, per run, (AUC on all its photographs, AUC on the shared).

  Args:
    runs: Run name -> (names, labels, P(RDR)) as `predictions.read_referable` returns them.

  Raises:
    ValueError: The runs share no photograph, or give one photograph different labels.
  """
  tables = {run: dict(zip(names, zip(labels, probs))) for run, (names, labels, probs)
            in runs.items()}
  shared = sorted(set.intersection(*(set(t) for t in tables.values())))
  if not shared:
    raise ValueError('the runs share no photograph')
  for name in shared:
    if len({int(t[name][0]) for t in tables.values()}) > 1:
      raise ValueError(f'{name} has different labels in the runs')
  out = {}
  for run, (names, labels, probs) in runs.items():
    common = [tables[run][n] for n in shared]
    out[run] = (float(sk.roc_auc_score(labels, probs)),
                float(sk.roc_auc_score([c[0] for c in common], [c[1] for c in common])))
  return shared, out


def ensemble_auc(runs: dict[str, tuple[list[str], np.ndarray, np.ndarray]],
                 shared: list[str]) -> float:
  """ROC AUC of P(RDR) averaged over the runs, on the shared photographs (`compare`)."""
  on_shared = []
  for names, labels, probs in runs.values():
    keep = np.isin(names, shared)
    on_shared.append((np.asarray(names)[keep].tolist(), labels[keep], probs[keep]))
  _, labels, mean = predictions.average_by_name(on_shared, list(runs))
  return float(sk.roc_auc_score(labels, mean))


def main(argv):
  run_dirs = argv[1:]
  if not run_dirs:
    raise app.UsageError('name one or more run directories')
  runs = {os.path.normpath(d): predictions.read_referable(d, FLAGS.split) for d in run_dirs}
  shared, aucs = compare(runs)
  print(f'{FLAGS.split}: {len(shared)} photographs shared by all {len(runs)} runs')
  for run, (own, common) in aucs.items():
    print(f'{run}: ROC AUC {own:.3f} on its {len(runs[run][0])}, {common:.3f} on the shared')
  if len(runs) > 1:
    print(f'ensemble (mean P(RDR) of the {len(runs)} runs): ROC AUC '
          f'{ensemble_auc(runs, shared):.3f} on the shared')


if __name__ == '__main__':
  entry.run(main)

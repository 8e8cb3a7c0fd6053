"""The per-photograph predictions file (predictions_<split>.csv) of a run: write and read.

Columns: name, label, then p_<class> for each class (six decimals).
"""

from __future__ import annotations

import csv
import os

import numpy as np


def path(run_dir: str, split: str) -> str:
  """The predictions file of one split of a run."""
  return os.path.join(run_dir, f'predictions_{split}.csv')


def write(file: str, names, labels, probs, class_names) -> None:
  """Writes one row per photograph."""
  with open(file, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['name', 'label'] + [f'p_{c}' for c in class_names])
    for name, label, p in zip(names, labels, probs):
      writer.writerow([name, int(label)] + [f'{v:.6f}' for v in p])


def read_binary(run_dir: str, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(names, labels, P(RDR)) of one split of a binary run, in file order."""
  file = path(run_dir, split)
  if not os.path.isfile(file):
    split_name = {'val': 'validation'}.get(split, split)
    raise FileNotFoundError(f'{file}: no {split_name} predictions; run evaluate.py first')
  with open(file, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows or not {'name', 'label', 'p_RDR'} <= set(rows[0]):
    raise ValueError(f'{file}: expected columns name, label and p_RDR (a binary run)')
  return ([r['name'] for r in rows], np.array([int(r['label']) for r in rows]),
          np.array([float(r['p_RDR']) for r in rows]))

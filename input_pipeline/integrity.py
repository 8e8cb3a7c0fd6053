"""Duplicate detection and the validation split.

Every photograph is hashed (SHA-256 of the file bytes). Then:
- a training photograph byte-identical to a test photograph is dropped (leakage);
- byte-identical training photographs form one group that stays on one side of the
  train/validation split; a group whose labels conflict under the active label
  mapping is dropped whole.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from typing import Callable, Sequence

from absl import logging
import numpy as np

from input_pipeline.idrid import Record
from utils import checks


@dataclasses.dataclass(frozen=True)
class Dropped:
  """A record removed from training, with the reason."""
  split: str
  name: str
  path: str
  reason: str


def file_hash(path: str) -> str:
  """SHA-256 hex digest of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _label(path: str) -> str:
  return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def deduplicate(records: Sequence[Record], hashes: dict[str, str],
                label_fn: Callable[[int], int]
                ) -> tuple[list[list[Record]], list[Record], list[Dropped]]:
  """Removes leakage and conflicting copies.

  Args:
    records: Train and test records.
    hashes: Record path -> content hash.
    label_fn: Grade -> class under the active label mapping.

  Returns:
    (train groups, test records, dropped). Each train group is a list of byte-identical
    records (usually one) with one class.
  """
  test = [r for r in records if r.split == 'test']
  test_by_hash = {hashes[r.path]: r for r in test}
  dropped = []
  by_hash = collections.defaultdict(list)
  for r in records:
    if r.split != 'test':
      by_hash[hashes[r.path]].append(r)
  groups = []
  for digest, group in by_hash.items():
    if digest in test_by_hash:
      twin = test_by_hash[digest]
      for r in group:
        reason = (f'byte-identical to test image {twin.name} ({_label(twin.path)}): '
                  'removed from training to avoid test leakage')
        logging.warning('%s (%s) %s', r.name, r.path, reason)
        dropped.append(Dropped(r.split, r.name, r.path, reason))
      continue
    classes = {label_fn(r.grade) for r in group}
    if len(classes) > 1:
      names = ', '.join(f'{r.name} (grade {r.grade})' for r in group)
      for r in group:
        reason = f'byte-identical copies with conflicting labels: {names}'
        logging.warning('%s (%s) %s', r.name, r.path, reason)
        dropped.append(Dropped(r.split, r.name, r.path, reason))
      continue
    if len(group) > 1:
      logging.info('byte-identical training images kept together: %s',
                   ', '.join(r.name for r in group))
    groups.append(sorted(group, key=lambda r: r.name))
  groups.sort(key=lambda g: g[0].name)
  return groups, sorted(test, key=lambda r: r.name), dropped


def _by_grade(groups: Sequence[Sequence[Record]]) -> dict[int, list[Sequence[Record]]]:
  """Groups by the grade of their first member (the stratum of both splits)."""
  by_grade = collections.defaultdict(list)
  for group in groups:
    by_grade[group[0].grade].append(group)
  return by_grade


def split_train_val(groups: Sequence[Sequence[Record]], val_fraction: float,
                    seed: int) -> tuple[list[Record], list[Record]]:
  """Stratified, seeded split of training groups into train and validation.

  Groups are stratified by the grade of their first member; each grade contributes
  round(val_fraction * n) groups to validation (at least one when it has two or more
  and val_fraction > 0). Byte-identical copies never straddle the split.

  Returns:
    (train records, validation records), each sorted by name.
  """
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
  rng = np.random.default_rng(seed)
  by_grade = _by_grade(groups)
  train, val = [], []
  for grade in sorted(by_grade):
    members = by_grade[grade]
    order = rng.permutation(len(members))
    n_val = int(round(val_fraction * len(members)))
    if val_fraction > 0 and n_val == 0 and len(members) >= 2:
      n_val = 1
    for rank, index in enumerate(order):
      (val if rank < n_val else train).extend(members[index])
  return sorted(train, key=lambda r: r.name), sorted(val, key=lambda r: r.name)


def check_fold(num_folds: int, fold: int) -> None:
  """Raises ValueError naming the parameter unless 0 <= fold < num_folds and num_folds >= 2."""
  checks.check_number('tfrecords.build_tfrecords.num_folds', num_folds, low=2, whole=True)
  checks.check_number('tfrecords.build_tfrecords.fold', fold, low=0, high=num_folds - 1,
                      whole=True)


def split_fold(groups: Sequence[Sequence[Record]], num_folds: int, fold: int,
               seed: int) -> tuple[list[Record], list[Record]]:
  """Fold `fold` of a stratified, seeded k-fold partition of the training groups.

  Groups are ordered grade by grade (a seeded permutation within each grade) and dealt
  to the folds in turn, so every fold gets about 1/num_folds of each grade and the fold
  sizes differ by at most one group. Over fold = 0 .. num_folds - 1 every group is held
  out exactly once, and byte-identical copies never straddle a fold.

  Returns:
    (train records, held-out records of the fold), each sorted by name.
  """
  check_fold(num_folds, fold)
  rng = np.random.default_rng(seed)
  by_grade = _by_grade(groups)
  dealt = [by_grade[g][i] for g in sorted(by_grade) for i in rng.permutation(len(by_grade[g]))]
  train, held_out = [], []
  for rank, group in enumerate(dealt):
    (held_out if rank % num_folds == fold else train).extend(group)
  return sorted(train, key=lambda r: r.name), sorted(held_out, key=lambda r: r.name)

"""Duplicate handling and the validation split."""

import collections

import pytest

from input_pipeline import idrid
from input_pipeline import integrity


def _rec(split, name, grade, path=None):
  return idrid.Record(split, name, path or f'/{split}/{name}.jpg', grade, 0)


def test_leak_and_conflict_are_dropped_and_agreeing_copies_grouped():
  records = [_rec('train', 'A', 0), _rec('train', 'B', 1), _rec('train', 'C', 2),
             _rec('train', 'D', 3), _rec('train', 'E', 4), _rec('test', 'T', 3),
             _rec('train', 'F', 0)]
  hashes = {r.path: h for r, h in zip(records, ['leak', 'x', 'x', 'y', 'y', 'leak', 'z'])}
  groups, test, dropped = integrity.deduplicate(records, hashes, idrid.label_fn('binary'))
  assert sorted((d.name, 'test leakage' in d.reason) for d in dropped) == [
      ('A', True), ('B', False), ('C', False)]
  assert [[r.name for r in g] for g in groups] == [['D', 'E'], ['F']]
  assert [r.name for r in test] == ['T']
  # Under the 5-grade mapping D (3) and E (4) conflict as well.
  groups, _, dropped = integrity.deduplicate(records, hashes, idrid.label_fn('grades'))
  assert {d.name for d in dropped} == {'A', 'B', 'C', 'D', 'E'}


def test_real_idrid_duplicates(idrid_800):
  records, _ = idrid.load_records(str(idrid_800))
  hashes = {r.path: integrity.file_hash(r.path) for r in records}
  groups, test, dropped = integrity.deduplicate(records, hashes, idrid.label_fn('binary'))
  reasons = {d.name: d.reason for d in dropped}
  assert set(reasons) == {'IDRiD_118', 'IDRiD_021', 'IDRiD_391'}
  assert 'test image IDRiD_064' in reasons['IDRiD_118']
  assert 'conflicting labels' in reasons['IDRiD_021']
  together = [sorted(r.name for r in g) for g in groups if len(g) > 1]
  assert ['IDRiD_028', 'IDRiD_327'] in together and len(together) == 4
  assert len(test) == 103 and sum(len(g) for g in groups) == 410


def test_split_is_stratified_seeded_and_keeps_groups_together():
  groups = [[_rec('train', f'g{g}_{i}', g)] for g in range(5) for i in range(20)]
  groups.append([_rec('train', 'dupA', 2), _rec('train', 'dupB', 2)])
  train, val = integrity.split_train_val(groups, 0.2, seed=3)
  per_grade = collections.Counter(r.grade for r in val)
  assert all(per_grade[g] in (4, 5, 6) for g in range(5))
  names_val = {r.name for r in val}
  assert ('dupA' in names_val) == ('dupB' in names_val)
  assert not names_val & {r.name for r in train}
  again = integrity.split_train_val(groups, 0.2, seed=3)
  other = integrity.split_train_val(groups, 0.2, seed=4)
  assert again == (train, val) and other != (train, val)


def test_bad_fraction():
  with pytest.raises(ValueError, match='val_fraction'):
    integrity.split_train_val([], 1.5, 0)


def test_folds_partition_the_training_groups_stratified_and_seeded():
  groups = [[_rec('train', f'g{g}_{i}', g)] for g in range(5) for i in range(13)]
  groups.append([_rec('train', 'dupA', 2), _rec('train', 'dupB', 2)])
  every = [r.name for g in groups for r in g]
  held_out = []
  for fold in range(4):
    train, val = integrity.split_fold(groups, 4, fold, seed=3)
    assert sorted(r.name for r in train + val) == sorted(every)
    per_grade = collections.Counter(r.grade for r in val)
    assert all(per_grade[g] in (3, 4, 5) for g in range(5))
    names_val = {r.name for r in val}
    assert ('dupA' in names_val) == ('dupB' in names_val)
    held_out += [r.name for r in val]
  assert sorted(held_out) == sorted(every)  # each photograph held out exactly once
  assert integrity.split_fold(groups, 4, 1, seed=3) == integrity.split_fold(groups, 4, 1, 3)
  assert integrity.split_fold(groups, 4, 1, seed=4) != integrity.split_fold(groups, 4, 1, 3)


@pytest.mark.parametrize('num_folds, fold, message', [(1, 0, 'num_folds'), (5, 5, 'fold'),
                                                      (5, -1, 'fold')])
def test_bad_fold(num_folds, fold, message):
  with pytest.raises(ValueError, match=f'build_tfrecords.{message}'):
    integrity.split_fold([], num_folds, fold, 0)

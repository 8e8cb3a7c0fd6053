"""Reading IDRiD folders and label files, including the official quirks and bad input."""

import shutil
from unittest import mock

import pytest

from input_pipeline import idrid

OFFICIAL_TRAIN_HEADER = 'Image name,Retinopathy grade,Risk of macular edema ,,,,,,,,,\n'


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def test_official_training_csv_quirks(tmp_path):
  csv = _write(tmp_path / 'a.csv', OFFICIAL_TRAIN_HEADER +
               'IDRiD_001,3,2,,,,,,,,,\nIDRiD_002.jpg,0,0,,,,,,,,,\n\n')
  assert idrid.read_labels(str(csv)) == [('IDRiD_001', 3, 2), ('IDRiD_002', 0, 0)]


def test_real_label_files(idrid_800):
  layout = idrid.find_layout(str(idrid_800))
  train = idrid.read_labels(layout['train'][1])
  test = idrid.read_labels(layout['test'][1])
  assert (len(train), len(test)) == (413, 103)
  assert sum(1 for _, g, _ in test if g <= 1) == 39
  assert train[0] == ('IDRiD_001', 3, 2)


@pytest.mark.parametrize('level', ['parent', 'root'])
def test_official_layout_from_parent_or_root(synthetic_dir, level):
  folder = synthetic_dir if level == 'parent' else synthetic_dir / 'B. Disease Grading'
  records, rejects = idrid.load_records(str(folder))
  assert {r.split for r in records} == {'train', 'test'}
  assert len(records) == 48 and not rejects
  assert all(r.path.endswith(r.name + '.jpg') for r in records)


def test_simple_layout(tmp_path, synthetic_dir):
  root = synthetic_dir / 'B. Disease Grading'
  for split, sub, csv in (('train', 'a. Training Set', 'a. IDRiD_Disease Grading_Training Labels.csv'),
                          ('test', 'b. Testing Set', 'b. IDRiD_Disease Grading_Testing Labels.csv')):
    shutil.copytree(root / '1. Original Images' / sub, tmp_path / 'images' / split)
    (tmp_path / 'labels').mkdir(exist_ok=True)
    shutil.copy(root / '2. Groundtruths' / csv, tmp_path / 'labels' / f'{split}.csv')
  records, _ = idrid.load_records(str(tmp_path))
  assert len(records) == 48


def test_label_mappings():
  binary = idrid.label_fn('binary')
  assert [binary(g) for g in range(5)] == [0, 0, 1, 1, 1]
  assert [idrid.label_fn('grades')(g) for g in range(5)] == [0, 1, 2, 3, 4]
  with pytest.raises(ValueError, match='label_mapping'):
    idrid.label_fn('ternary')


def test_missing_folder_names_it(tmp_path):
  with pytest.raises(idrid.DataError, match='not found: .*nowhere'):
    idrid.load_records(str(tmp_path / 'nowhere'))


def test_unrecognised_folder(tmp_path):
  with pytest.raises(idrid.DataError, match='not an IDRiD folder'):
    idrid.load_records(str(tmp_path))


def test_wrong_columns_names_file(tmp_path):
  csv = _write(tmp_path / 'labels.csv', 'file,level\nIDRiD_001,3\n')
  with pytest.raises(idrid.DataError, match=r'labels\.csv.*expected columns'):
    idrid.read_labels(str(csv))


def test_label_file_that_is_not_text_names_file(tmp_path):
  path = tmp_path / 'labels.csv'
  path.write_bytes(b'Image name,Retinopathy grade\nIDRiD_001,2\n\xff\xfe\x00\x9c,1\n')
  with pytest.raises(idrid.DataError, match=r'labels\.csv: not a UTF-8 text file'):
    idrid.read_labels(str(path))


@pytest.mark.parametrize('grade, reason', [('5', 'unknown grade 5'), ('-1', 'unknown grade -1'),
                                           ('x', "'x' of IDRiD_001 is not a whole number"),
                                           ('2.0', "'2.0' of IDRiD_001 is not a whole number")])
def test_bad_grade_names_file_and_line(tmp_path, grade, reason):
  csv = _write(tmp_path / 'labels.csv', OFFICIAL_TRAIN_HEADER + f'IDRiD_001,{grade},0\n')
  with pytest.raises(idrid.DataError, match=r'labels\.csv:2:.*IDRiD_001') as info:
    idrid.read_labels(str(csv))
  assert reason in str(info.value) and 'expected 0-4' in str(info.value)


def test_duplicate_row(tmp_path):
  csv = _write(tmp_path / 'labels.csv', OFFICIAL_TRAIN_HEADER + 'A,1,0\nA,2,0\n')
  with pytest.raises(idrid.DataError, match='listed twice'):
    idrid.read_labels(str(csv))


def test_label_row_without_image_is_rejected_with_a_warning(tmp_path, synthetic_dir):
  from absl import logging  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  shutil.copytree(synthetic_dir, data)
  (data / 'B. Disease Grading/1. Original Images/a. Training Set/IDRiD_003.jpg').unlink()
  warnings = []
  with mock.patch.object(logging, 'warning', lambda msg, *a: warnings.append(msg % a)):
    records, rejects = idrid.load_records(str(data))
  assert len(records) == 47
  assert [(r.split, r.name) for r in rejects] == [('train', 'IDRiD_003')]
  assert 'has no image' in rejects[0].reason
  assert len(warnings) == 1 and '1 row(s) of' in warnings[0]
  assert 'have no photograph' in warnings[0] and 'IDRiD_003' in warnings[0]


def test_photograph_without_label_row_is_left_out_with_a_warning(tmp_path, synthetic_dir):
  from absl import logging  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  shutil.copytree(synthetic_dir, data)
  train = data / 'B. Disease Grading/1. Original Images/a. Training Set'
  shutil.copy(train / 'IDRiD_003.jpg', train / 'IDRiD_999.jpg')
  warnings = []
  with mock.patch.object(logging, 'warning', lambda msg, *a: warnings.append(msg % a)):
    records, rejects = idrid.load_records(str(data))
  assert 'IDRiD_999' not in {r.name for r in records} and not rejects
  assert len(warnings) == 1 and 'IDRiD_999' in warnings[0] and 'no row in' in warnings[0]


def test_empty_split_is_an_error(tmp_path, synthetic_dir):
  data = tmp_path / 'data'
  shutil.copytree(synthetic_dir, data)
  for jpg in (data / 'B. Disease Grading/1. Original Images/b. Testing Set').glob('*.jpg'):
    jpg.unlink()
  with pytest.raises(idrid.DataError, match='split test is empty'):
    idrid.load_records(str(data))

"""Reads an IDRiD disease-grading folder into records.

Two layouts are accepted:

    <data_dir>/B. Disease Grading/            (or <data_dir> is that folder itself)
      1. Original Images/a. Training Set/IDRiD_001.jpg ...
      1. Original Images/b. Testing Set/IDRiD_001.jpg ...
      2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv
      2. Groundtruths/b. IDRiD_Disease Grading_Testing Labels.csv

    <data_dir>/
      images/train/*.jpg   images/test/*.jpg
      labels/train.csv     labels/test.csv

Label files have the columns `Image name, Retinopathy grade, Risk of macular edema`
(header spacing, trailing empty columns and a missing `.jpg` are tolerated, as in the
official release).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Callable

from absl import logging

from utils import checks

SPLITS = ('train', 'test')
GRADES = (0, 1, 2, 3, 4)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.tif', '.tiff')

_OFFICIAL_ROOT = 'B. Disease Grading'
_OFFICIAL_IMAGES = {'train': ('1. Original Images', 'a. Training Set'),
                    'test': ('1. Original Images', 'b. Testing Set')}
_OFFICIAL_LABELS = {
    'train': ('2. Groundtruths', 'a. IDRiD_Disease Grading_Training Labels.csv'),
    'test': ('2. Groundtruths', 'b. IDRiD_Disease Grading_Testing Labels.csv')}

# Column names after normalisation (lower case, single spaces, stripped).
NAME_COLUMN = 'image name'
GRADE_COLUMN = 'retinopathy grade'
DME_COLUMN = 'risk of macular edema'

# Label mappings: grade 0-4 -> class index.
LABEL_MAPPINGS: dict[str, Callable[[int], int]] = {
    'binary': lambda grade: 0 if grade <= 1 else 1,
    'grades': lambda grade: grade,
}
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    'binary': ('NRDR', 'RDR'),
    'grades': ('0 no DR', '1 mild', '2 moderate', '3 severe', '4 proliferative'),
}


class DataError(ValueError):
  """The dataset folder or a label file cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One labelled photograph. `split` and `name` together identify it."""
  split: str
  name: str
  path: str
  grade: int
  dme: int


@dataclasses.dataclass(frozen=True)
class Reject:
  """A label row or file that could not be used, with the reason."""
  split: str
  name: str
  path: str
  reason: str


def label_fn(mapping: str, parameter: str = 'label_mapping') -> Callable[[int], int]:
  """Returns the grade -> class function for a mapping name; ValueError names `parameter`."""
  checks.check_choice(parameter, mapping, sorted(LABEL_MAPPINGS))
  return LABEL_MAPPINGS[mapping]


def find_layout(data_dir: str) -> dict[str, tuple[str, str]]:
  """Finds the image folder and label file of each split.

  Returns:
    {split: (image_dir, label_csv)} for 'train' and 'test'.

  Raises:
    DataError: If the folder is missing or matches neither layout.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f'data folder not found: {data_dir}')
  root = data_dir
  if os.path.isdir(os.path.join(data_dir, _OFFICIAL_ROOT)):
    root = os.path.join(data_dir, _OFFICIAL_ROOT)
  if os.path.isdir(os.path.join(root, _OFFICIAL_IMAGES['train'][0])):
    layout = {s: (os.path.join(root, *_OFFICIAL_IMAGES[s]),
                  os.path.join(root, *_OFFICIAL_LABELS[s])) for s in SPLITS}
  elif os.path.isdir(os.path.join(data_dir, 'images')):
    layout = {s: (os.path.join(data_dir, 'images', s),
                  os.path.join(data_dir, 'labels', f'{s}.csv')) for s in SPLITS}
  else:
    raise DataError(
        f'{data_dir}: not an IDRiD folder (expected "{_OFFICIAL_ROOT}/" in the official '
        'layout, or images/{train,test}/ with labels/{train,test}.csv)')
  for split, (image_dir, csv_path) in layout.items():
    if not os.path.isdir(image_dir):
      raise DataError(f'image folder of split {split} not found: {image_dir}')
    if not os.path.isfile(csv_path):
      raise DataError(f'label file of split {split} not found: {csv_path}')
  return layout


def _normalise(column: str) -> str:
  return ' '.join(column.strip().lower().split())


def read_labels(csv_path: str) -> list[tuple[str, int, int]]:
  """Parses a label file into (name, grade, dme) rows.

  Raises:
    DataError: On missing columns, a grade outside 0-4, a malformed row or a
      duplicated name; the message names the file (and line).
  """
  try:
    with open(csv_path, newline='', encoding='utf-8-sig') as f:
      rows = list(csv.reader(f))
  except UnicodeDecodeError as e:
    raise DataError(f'{csv_path}: not a UTF-8 text file (byte {e.start}); save the label '
                    'file as UTF-8 CSV') from None
  except csv.Error as e:
    raise DataError(f'{csv_path}: not a readable CSV file ({e})') from None
  rows = [r for r in rows if any(cell.strip() for cell in r)]
  if not rows:
    raise DataError(f'{csv_path}: label file is empty')
  header = [_normalise(c) for c in rows[0]]
  if NAME_COLUMN not in header or GRADE_COLUMN not in header:
    found = [c for c in header if c]
    raise DataError(f'{csv_path}: expected columns "Image name" and "Retinopathy grade"'
                    f' (and "Risk of macular edema"), found {found}')
  i_name, i_grade = header.index(NAME_COLUMN), header.index(GRADE_COLUMN)
  i_dme = header.index(DME_COLUMN) if DME_COLUMN in header else None
  out, seen = [], set()
  for line_no, row in enumerate(rows[1:], start=2):
    try:
      name = row[i_name].strip()
      grade_text = row[i_grade].strip()
      dme_text = row[i_dme].strip() if i_dme is not None else ''
    except IndexError:
      raise DataError(f'{csv_path}:{line_no}: row has too few columns: {row}') from None
    name = os.path.splitext(name)[0] if name.lower().endswith(IMAGE_EXTENSIONS) else name
    try:
      grade = int(grade_text)
    except ValueError:
      raise DataError(f'{csv_path}:{line_no}: grade {grade_text!r} of {name} '
                      'is not a whole number (expected 0-4)') from None
    if grade not in GRADES:
      raise DataError(f'{csv_path}:{line_no}: unknown grade {grade} for {name} '
                      '(expected 0-4)')
    try:
      dme = int(dme_text) if dme_text else -1
    except ValueError:
      raise DataError(f'{csv_path}:{line_no}: macular-edema risk {dme_text!r} of '
                      f'{name} is not a whole number') from None
    if not name:
      raise DataError(f'{csv_path}:{line_no}: empty image name')
    if name in seen:
      raise DataError(f'{csv_path}:{line_no}: image {name} is listed twice')
    seen.add(name)
    out.append((name, grade, dme))
  return out


def _image_index(image_dir: str) -> dict[str, str]:
  index = {}
  for entry in sorted(os.listdir(image_dir)):
    stem, ext = os.path.splitext(entry)
    if ext.lower() in IMAGE_EXTENSIONS:
      index.setdefault(stem, os.path.join(image_dir, entry))
  return index


def load_records(data_dir: str) -> tuple[list[Record], list[Reject]]:
  """Reads both splits of an IDRiD folder.

  A label row whose photograph is missing becomes a `Reject`; photographs that have
  no label row are left out. Both are logged as warnings that name them.

  Returns:
    (records sorted by split and name, rejects).

  Raises:
    DataError: See `find_layout` and `read_labels`; also when a split has no
      usable record.
  """
  records, rejects = [], []
  for split, (image_dir, csv_path) in find_layout(data_dir).items():
    images = _image_index(image_dir)
    split_records, missing = [], []
    for name, grade, dme in read_labels(csv_path):
      if name not in images:
        missing.append(name)
        rejects.append(Reject(split, name, os.path.join(image_dir, name + '.jpg'),
                              f'label row in {os.path.basename(csv_path)} has no image'))
        continue
      split_records.append(Record(split, name, images[name], grade, dme))
    if missing:
      logging.warning('%d row(s) of %s have no photograph in %s and are left out: %s%s',
                      len(missing), csv_path, image_dir, ', '.join(missing[:5]),
                      ', ...' if len(missing) > 5 else '')
    unlabelled = sorted(set(images) - {r.name for r in split_records})
    if unlabelled:
      logging.warning('%d photograph(s) in %s have no row in %s and are left out: %s%s',
                      len(unlabelled), image_dir, os.path.basename(csv_path),
                      ', '.join(unlabelled[:5]), ', ...' if len(unlabelled) > 5 else '')
    if not split_records:
      raise DataError(f'split {split} is empty: no labelled photograph in {image_dir}')
    records.extend(split_records)
  return records, rejects

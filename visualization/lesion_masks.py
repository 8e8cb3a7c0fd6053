"""Lesion masks in the model's geometry, for scoring explanations.

A mask is drawn on the photograph, so it goes through exactly the geometry the photograph
goes through in `preprocessing.preprocess_image`:

    photograph --find_retina_bbox--> bbox
    mask (same size as the photograph) --crop to bbox--> --pad_to_square--> --resize-->
         coverage in [0, 1] (size, size): the fraction of each output pixel that is lesion

Coverage rather than a thresholded mask, so that microaneurysms of a pixel or two at 800
px survive the shrink to 256 px (they would vanish under a 0.5 threshold).

Two sources of photographs with masks:
  IDRiD segmentation (idrid-seg-800):  images/{train,test}/IDRiD_NN.jpg,
                                        masks/{train,test}/IDRiD_NN_{MA,HE,EX,SE,OD}.png
  synthetic (input_pipeline.synthetic): masks/{split}/IDRiD_NNN_{EX,MA,HE,OD}.png
Lesions are the union of MA, HE, EX and SE; the optic disc (OD) is not a lesion.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import cv2
import numpy as np

from input_pipeline import idrid
from input_pipeline import preprocessing
from input_pipeline import synthetic
from input_pipeline import tfrecords

LESIONS = ('MA', 'HE', 'EX', 'SE')
OPTIC_DISC = 'OD'
SEG_MAP = 'seg_to_grading_map.csv'
# Groups of photographs: whether the model may have trained on them.
TRAINED_ON = 'trained_on'
NOT_TRAINED_ON = 'not_trained_on'


@dataclasses.dataclass(frozen=True)
class Sample:
  """A photograph with its mask files (absent lesions have no file)."""
  name: str
  image_path: str
  masks: dict[str, str]
  group: str = NOT_TRAINED_ON


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A sample in the model's geometry: image in [0, 1], coverages in [0, 1]."""
  sample: Sample
  image: np.ndarray            # (size, size, 3) float32
  lesions: np.ndarray          # (size, size) float32 coverage of the lesion union
  optic_disc: np.ndarray | None  # (size, size) float32 coverage, None without OD mask
  retina: np.ndarray           # (size, size) bool


def transform_mask(mask: np.ndarray, bbox: preprocessing.BBox, size: int) -> np.ndarray:
  """Crops, pads and resizes a mask like `preprocess_image` does the photograph.

  Args:
    mask: (height, width) boolean or 0/1 mask, the size of the photograph.
    bbox: (x0, y0, x1, y1) from `preprocessing.find_retina_bbox` on the photograph.
    size: Side of the model input.

  Returns:
    float32 (size, size) coverage in [0, 1].
  """
  x0, y0, x1, y1 = bbox
  square = preprocessing.pad_to_square(
      np.asarray(mask, dtype=np.float32)[y0:y1, x0:x1])
  shrink = square.shape[0] >= size
  out = cv2.resize(square, (size, size),
                   interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
  return np.clip(out, 0.0, 1.0)


def read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
  """A mask file as a boolean array of `shape` (nearest-neighbour resize if it differs).

  Raises:
    preprocessing.ImageError: The file is missing or not an image, or its aspect ratio is
      not the photograph's (more than 2 % apart): the mask of another photograph.
  """
  mask = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE)
  if mask is None:
    raise preprocessing.ImageError(f'{path}: not a readable mask image')
  aspect, photo_aspect = mask.shape[1] / mask.shape[0], shape[1] / shape[0]
  if abs(aspect / photo_aspect - 1) > 0.02:
    raise preprocessing.ImageError(
        f'{path}: a {mask.shape[1]}x{mask.shape[0]} mask for a {shape[1]}x{shape[0]} '
        'photograph (another aspect ratio): not its mask')
  if mask.shape != tuple(shape):
    mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
  return mask > 127


def prepare(sample: Sample, size: int, contrast: str | None = None) -> Prepared:
  """Loads a sample and brings the photograph and its masks to the model's geometry."""
  photo = preprocessing.load_image(sample.image_path)
  bbox = preprocessing.find_retina_bbox(photo)
  image = preprocessing.preprocess_image(photo, size, contrast,
                                         bbox=bbox).astype(np.float32) / 255.0
  shape = photo.shape[:2]
  union = np.zeros(shape, dtype=bool)
  for key in LESIONS:
    if key in sample.masks:
      union |= read_mask(sample.masks[key], shape)
  disc = None
  if OPTIC_DISC in sample.masks:
    disc = transform_mask(read_mask(sample.masks[OPTIC_DISC], shape), bbox, size)
  retina = transform_mask(preprocessing.retina_mask(photo), bbox, size) >= 0.5
  return Prepared(sample, image, transform_mask(union, bbox, size), disc, retina)


def _mask_files(mask_dir: str, stem: str) -> dict[str, str]:
  paths = {key: os.path.join(mask_dir, f'{stem}_{key}.png') for key in LESIONS + (OPTIC_DISC,)}
  return {key: path for key, path in paths.items() if os.path.isfile(path)}


def trained_names(records_dir: str) -> set[str]:
  """Names of the photographs in the records' train split (splits.csv)."""
  path = os.path.join(records_dir, tfrecords.SPLITS_CSV)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no {tfrecords.SPLITS_CSV} in {records_dir}: cannot tell '
                            'which photographs the model trained on')
  with open(path, newline='') as f:
    return {row['name'] for row in csv.DictReader(f) if row['split'] == 'train'}


def _seg_group(row: dict[str, str], trained: set[str]) -> str:
  """TRAINED_ON when the photograph (or a byte-identical twin) was in the train split.

  A segmentation photograph matched to a grading *train* image was trained on when that
  image (or the twin in `also_matches`) is in the records' train split; a grading-train
  image held out for validation, a grading-test image or no match is NOT_TRAINED_ON.
  'same_eye_different_capture' counts as trained on: the model saw that eye.
  """
  matches = []
  if row.get('grading_split') == 'train' and row.get('grading_image'):
    matches.append(row['grading_image'])
  for twin in (row.get('also_matches') or '').split(';'):
    split, _, name = twin.strip().partition('/')
    if split == 'train' and name:
      matches.append(name)
  return TRAINED_ON if any(m in trained for m in matches) else NOT_TRAINED_ON


def seg_samples(seg_dir: str, trained: set[str] | None = None) -> list[Sample]:
  """The photographs of an idrid-seg folder with their masks and groups.

  Args:
    seg_dir: Folder with images/{train,test}, masks/{train,test} and seg_to_grading_map.csv.
    trained: Grading-train names the model trained on (`trained_names`); None counts
      every photograph as not trained on.

  Raises:
    FileNotFoundError: The folder or its mapping file is missing.
  """
  map_path = os.path.join(seg_dir, SEG_MAP)
  if not os.path.isfile(map_path):
    raise FileNotFoundError(f'{seg_dir} is not an IDRiD segmentation folder '
                            f'(missing {SEG_MAP})')
  with open(map_path, newline='') as f:
    reader = csv.DictReader(f)
    missing = {'seg_split', 'seg_image'} - set(reader.fieldnames or [])
    if missing:
      raise ValueError(f'{map_path}: no column {", ".join(sorted(missing))} (columns: '
                       f'{reader.fieldnames})')
    rows = {(r['seg_split'], r['seg_image']): r for r in reader}
  samples = []
  for split in ('train', 'test'):
    image_dir = os.path.join(seg_dir, 'images', split)
    for entry in sorted(os.listdir(image_dir)) if os.path.isdir(image_dir) else []:
      stem, ext = os.path.splitext(entry)
      if ext.lower() not in idrid.IMAGE_EXTENSIONS:
        continue
      row = rows.get((split, stem), {})
      samples.append(Sample(
          f'{split}/{stem}', os.path.join(image_dir, entry),
          _mask_files(os.path.join(seg_dir, 'masks', split), stem),
          _seg_group(row, trained or set())))
  if not samples:
    raise FileNotFoundError(f'no photographs under {os.path.join(seg_dir, "images")}')
  return samples


def synthetic_samples(data_dir: str, split: str = 'test', min_grade: int = 2) -> list[Sample]:
  """Photographs of a synthetic dataset with grade >= min_grade, and their masks.

  Raises:
    FileNotFoundError: data_dir holds no synthetic masks.
  """
  mask_dir = os.path.join(data_dir, synthetic.MASKS_DIR, split)
  if not os.path.isdir(mask_dir):
    raise FileNotFoundError(f'{data_dir} has no lesion masks (missing {mask_dir}); '
                            'is it a synthetic dataset?')
  records, _ = idrid.load_records(data_dir)
  return [Sample(f'{r.split}/{r.name}', r.path, _mask_files(mask_dir, r.name))
          for r in records if r.split == split and r.grade >= min_grade]

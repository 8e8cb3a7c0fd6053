"""Seeded fundus-like photographs in the official IDRiD disease-grading layout.

`generate(out_dir)` writes a dataset that the rest of the pipeline reads exactly as it
reads the real download, plus lesion masks for checking Grad-CAM:

    out_dir/
      B. Disease Grading/
        1. Original Images/a. Training Set/IDRiD_001.jpg ...
        1. Original Images/b. Testing Set/IDRiD_001.jpg ...
        2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv
        2. Groundtruths/b. IDRiD_Disease Grading_Testing Labels.csv
      masks/{train,test}/IDRiD_001_{EX,MA,HE,OD}.png   uint8 0/255; OD always,
                                                        lesions only when present
      synthetic.json                                    parameters, seed, counts

Grade 0 has no lesions, grade 1 a few microaneurysms (MA), grades 2-4 growing numbers
of hard exudates (EX), microaneurysms and haemorrhages (HE). The pixels are drawn by
input_pipeline/synthetic_render.py; this module writes, caches and runs the CLI.

    python -m input_pipeline.synthetic --out_dir=/tmp/synthetic [--num_train=120 ...]
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import cv2
import gin
import numpy as np

# Re-exported: callers use synthetic.render_fundus, synthetic.GRADE_PROBS, ...
from input_pipeline.synthetic_render import draw_fundus
from input_pipeline.synthetic_render import edema_risk
from input_pipeline.synthetic_render import check_grade_probs
from input_pipeline.synthetic_render import GRADE_PROBS
from input_pipeline.synthetic_render import Layout
from input_pipeline.synthetic_render import Lesion
from input_pipeline.synthetic_render import LESIONS
from input_pipeline.synthetic_render import MASK_KEYS
from input_pipeline.synthetic_render import render_fundus
from input_pipeline.synthetic_render import sample_grades
from input_pipeline.synthetic_render import sample_layout

from utils import checks
from utils import entry
from utils import gin_utils
from utils import staging

GRADING_DIR = 'B. Disease Grading'
IMAGE_DIRS = {'train': os.path.join('1. Original Images', 'a. Training Set'),
              'test': os.path.join('1. Original Images', 'b. Testing Set')}
LABEL_FILES = {
    'train': os.path.join('2. Groundtruths', 'a. IDRiD_Disease Grading_Training Labels.csv'),
    'test': os.path.join('2. Groundtruths', 'b. IDRiD_Disease Grading_Testing Labels.csv')}
MASKS_DIR = 'masks'
MANIFEST = 'synthetic.json'
CSV_HEADER = 'Image name,Retinopathy grade,Risk of macular edema '
TRAIN_CSV_PADDING = ',' * 9  # the official training CSV carries nine empty columns
GENERATOR_VERSION = 1  # bump when the rendering changes, so caches are regenerated
JPEG_QUALITY = 92


def _params(num_train: int, num_test: int, width: int, height: int, seed: int,
            grade_probs: Sequence[float]) -> dict[str, Any]:
  """The record of what was generated, as stored in synthetic.json."""
  check_grade_probs(grade_probs, 'synthetic.generate.grade_probs')
  return dict(num_train=int(num_train), num_test=int(num_test), width=int(width),
              height=int(height), seed=int(seed),
              grade_probs=[float(p) for p in grade_probs],
              generator_version=GENERATOR_VERSION, jpeg_quality=JPEG_QUALITY)


def _encode(ext: str, image: np.ndarray, path: str, *params: int) -> None:
  ok, data = cv2.imencode(ext, image, list(params))
  if not ok:
    raise IOError(f'could not encode {path}')
  with open(path, 'wb') as f:
    f.write(data.tobytes())


def _write_split(root: str, split: str, grades: Sequence[int], p: dict[str, Any]) -> None:
  """Writes one split's photographs, masks and label file under root."""
  image_dir = os.path.join(root, GRADING_DIR, IMAGE_DIRS[split])
  mask_dir = os.path.join(root, MASKS_DIR, split)
  for d in (image_dir, mask_dir, os.path.dirname(os.path.join(root, GRADING_DIR,
                                                               LABEL_FILES[split]))):
    os.makedirs(d, exist_ok=True)
  pad = TRAIN_CSV_PADDING if split == 'train' else ''
  lines = [CSV_HEADER + pad]
  for i, grade in enumerate(grades, start=1):
    rng = np.random.default_rng([p['seed'], 0 if split == 'train' else 1, i])
    layout = sample_layout(rng, grade, p['width'], p['height'])
    image, masks = draw_fundus(rng, layout)
    name = f'IDRiD_{i:03d}'
    _encode('.jpg', image[..., ::-1], os.path.join(image_dir, name + '.jpg'),
            cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY)
    for key, mask in masks.items():
      if key == 'OD' or mask.any():
        _encode('.png', mask.astype(np.uint8) * 255,
                os.path.join(mask_dir, f'{name}_{key}.png'))
    lines.append(f'{name},{grade},{edema_risk(layout)}{pad}')
    if i % 50 == 0 or i == len(grades):
      logging.info('synthetic %s: %d/%d images', split, i, len(grades))
  with open(os.path.join(root, GRADING_DIR, LABEL_FILES[split]), 'w', newline='\n') as f:
    f.write('\n'.join(lines) + '\n')


def check_params(prefix: str, num_train: int, num_test: int, width: int, height: int,
                 seed: int) -> None:
  """Raises ValueError naming `prefix`<parameter> for a count, size or seed out of range.

  `prefix` is how the caller's user sets them: 'synthetic.generate.' or '--'.
  """
  # Each split needs a photograph (the records refuse an empty one); IDRiD's own
  # photographs are 4288x2848, and far larger ones would exhaust memory.
  for name, value, low, high in (('num_train', num_train, 1, None),
                                 ('num_test', num_test, 1, None),
                                 ('width', width, 32, 8192), ('height', height, 32, 8192),
                                 ('seed', seed, 0, None)):
    checks.check_number(f'{prefix}{name}', value, low=low, high=high, whole=True)


@gin.configurable(module='synthetic', denylist=['out_dir'])
def generate(out_dir: str, num_train: int = 120, num_test: int = 40, width: int = 400,
             height: int = 266, seed: int = 0, grade_probs: Sequence[float] = GRADE_PROBS,
             overwrite: bool = False) -> str:
  """Writes a synthetic dataset in the official IDRiD layout (see the module docstring).

  The files are written into a temporary sibling folder that is renamed into place at
  the end, so an interrupted run leaves nothing that looks finished.

  Args:
    out_dir: Folder to create.
    num_train: Number of training photographs.
    num_test: Number of test photographs.
    width: Image width in pixels.
    height: Image height in pixels.
    seed: Non-negative seed; the same parameters give byte-identical files.
    grade_probs: Relative frequency of grades 0-4.
    overwrite: Replace a synthetic dataset already in out_dir.

  Returns:
    out_dir.

  Raises:
    FileExistsError: out_dir is non-empty and overwrite is False, or it is non-empty
      and does not hold a synthetic dataset (never deleted, even with overwrite).
    ValueError: A parameter is out of range.
  """
  check_params('synthetic.generate.', num_train, num_test, width, height, seed)
  target = os.path.abspath(out_dir)
  if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
    if not overwrite:
      raise FileExistsError(f'{target} exists and is not empty (overwrite replaces it)')
    if not os.path.isfile(os.path.join(target, MANIFEST)):
      raise FileExistsError(f'{target} does not hold a synthetic dataset; not replacing it')
  p = _params(num_train, num_test, width, height, seed, grade_probs)
  with staging.staged(target) as tmp:
    counts = {}
    for index, split in enumerate(('train', 'test')):
      grades = sample_grades(np.random.default_rng([seed, index]), p[f'num_{split}'],
                             grade_probs)
      _write_split(tmp, split, grades, p)
      counts[split] = {str(g): grades.count(g) for g in range(5)}
    with open(os.path.join(tmp, MANIFEST), 'w') as f:
      json.dump({'params': p, 'counts': counts}, f, indent=2, sort_keys=True)
      f.write('\n')
  logging.info('synthetic dataset written to %s: %s', target, counts)
  return out_dir


def _generate_params(kwargs: dict[str, Any]) -> dict[str, Any]:
  """The parameters generate(**kwargs) would use: defaults, then gin, then kwargs."""
  values = gin_utils.configured_arguments(generate)
  values.update(kwargs)
  values.pop('overwrite', None)
  return _params(**values)


def is_complete(out_dir: str, params: dict[str, Any]) -> bool:
  """Whether out_dir holds a finished dataset generated with these parameters."""
  try:
    with open(os.path.join(out_dir, MANIFEST)) as f:
      if json.load(f)['params'] != params:
        return False
  except (OSError, ValueError, KeyError, TypeError):
    return False
  for split in ('train', 'test'):
    image_dir = os.path.join(out_dir, GRADING_DIR, IMAGE_DIRS[split])
    if (not os.path.isfile(os.path.join(out_dir, GRADING_DIR, LABEL_FILES[split]))
        or not os.path.isdir(image_dir)
        or len([n for n in os.listdir(image_dir) if n.endswith('.jpg')])
        != params[f'num_{split}']):
      return False
  return True


def ensure_synthetic(cache_dir: str, **kwargs: Any) -> str:
  """Returns cache_dir, generating (and replacing) the dataset unless it already matches.

  Args:
    cache_dir: Folder that holds, or will hold, the dataset.
    **kwargs: Arguments of `generate` (gin bindings of `synthetic.generate` apply too).

  Returns:
    cache_dir.

  Raises:
    FileExistsError: cache_dir is non-empty and holds no synthetic dataset.
  """
  kwargs.pop('overwrite', None)
  if is_complete(cache_dir, _generate_params(kwargs)):
    logging.info('reusing synthetic dataset in %s', cache_dir)
    return cache_dir
  return generate(cache_dir, overwrite=True, **kwargs)


def summary(out_dir: str) -> str:
  """One line: images per grade in each split, and the path."""
  with open(os.path.join(out_dir, MANIFEST)) as f:
    counts = json.load(f)['counts']
  parts = [f'{split} {sum(counts[split].values())} ('
           + ' '.join(f'{g}:{n}' for g, n in counts[split].items()) + ')'
           for split in ('train', 'test')]
  return f'synthetic IDRiD: {", ".join(parts)} -> {out_dir}'


def _define_flags() -> None:
  flags.DEFINE_string('out_dir', None, 'Folder to write the dataset into.', required=True)
  flags.DEFINE_integer('num_train', 120, 'Training photographs.')
  flags.DEFINE_integer('num_test', 40, 'Test photographs.')
  flags.DEFINE_integer('width', 400, 'Image width in pixels.')
  flags.DEFINE_integer('height', 266, 'Image height in pixels.')
  flags.DEFINE_integer('seed', 0, 'Random seed (>= 0).')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing synthetic dataset.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  check_params('--', f.num_train, f.num_test, f.width, f.height, f.seed)
  out = generate(f.out_dir, num_train=f.num_train, num_test=f.num_test, width=f.width,
                 height=f.height, seed=f.seed, overwrite=f.overwrite)
  print(summary(out))


if __name__ == '__main__':
  _define_flags()
  entry.run(main)

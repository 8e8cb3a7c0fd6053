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
of hard exudates (EX), microaneurysms and haemorrhages (HE).

    python -m input_pipeline.synthetic --out_dir=/tmp/synthetic [--num_train=120 ...]
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import cv2
import gin
import numpy as np

GRADING_DIR = 'B. Disease Grading'
IMAGE_DIRS = {'train': os.path.join('1. Original Images', 'a. Training Set'),
              'test': os.path.join('1. Original Images', 'b. Testing Set')}
LABEL_FILES = {
    'train': os.path.join('2. Groundtruths', 'a. IDRiD_Disease Grading_Training Labels.csv'),
    'test': os.path.join('2. Groundtruths', 'b. IDRiD_Disease Grading_Testing Labels.csv')}
MASKS_DIR = 'masks'
MANIFEST = 'synthetic.json'
LESIONS = ('EX', 'MA', 'HE')
MASK_KEYS = LESIONS + ('OD',)
CSV_HEADER = 'Image name,Retinopathy grade,Risk of macular edema '
TRAIN_CSV_PADDING = ',' * 9  # the official training CSV carries nine empty columns
GENERATOR_VERSION = 1  # bump when the rendering changes, so caches are regenerated
JPEG_QUALITY = 92
GRADE_PROBS = (0.33, 0.05, 0.33, 0.18, 0.11)  # grades 0-4, close to IDRiD's

# grade -> lesion kind -> (min, max) count; radii as fractions of the retina diameter.
LESION_COUNTS = {
    0: {},
    1: {'MA': (2, 5)},
    2: {'EX': (4, 8), 'MA': (4, 10), 'HE': (1, 4)},
    3: {'EX': (6, 12), 'MA': (8, 16), 'HE': (4, 9)},
    4: {'EX': (8, 16), 'MA': (10, 20), 'HE': (6, 12)},
}
LESION_RADII = {'EX': (0.015, 0.03), 'MA': (0.004, 0.008), 'HE': (0.012, 0.03)}
LESION_RGB = {'EX': (250, 232, 105), 'MA': (120, 18, 12), 'HE': (110, 16, 10)}
LESION_OPACITY = {'EX': 0.92, 'MA': 0.9, 'HE': 0.85}


@dataclasses.dataclass(frozen=True)
class Lesion:
  """One filled ellipse of a lesion, in pixels."""
  kind: str
  x: float
  y: float
  rx: float
  ry: float
  angle: float


@dataclasses.dataclass(frozen=True)
class Layout:
  """Everything random about one photograph except its pixel noise."""
  width: int
  height: int
  centre: tuple[float, float]
  radius: float
  od: tuple[float, float]
  od_radius: float
  fovea: tuple[float, float]
  base_rgb: tuple[float, float, float]
  vessels: tuple[tuple[np.ndarray, float], ...]  # (points (N, 2), thickness in px)
  lesions: tuple[Lesion, ...]


def _vessel_tree(rng: np.random.Generator, start: Sequence[float], angle: float, length: float,
                 width: float, bend: float, step: float) -> list[tuple[np.ndarray, float]]:
  """Grows one vessel as a random walk that branches into thinner, shorter children."""
  paths, stack = [], [(start, angle, length, width, bend)]
  while stack and len(paths) < 40:
    (x, y), a, ln, w, bd = stack.pop()
    n = max(2, int(ln / step))
    pts = [(x, y)]
    for k in range(n):
      a += bd * step + rng.normal(0.0, 0.05)
      x, y = x + step * np.cos(a), y + step * np.sin(a)
      pts.append((x, y))
      if w > 1.0 and 2 < k < n - 3 and rng.random() < 0.07:
        child = a + rng.choice((-1.0, 1.0)) * rng.uniform(0.4, 0.9)
        stack.append(((x, y), child, (ln - k * step) * rng.uniform(0.4, 0.8), w * 0.65, 0.0))
    paths.append((np.asarray(pts, np.float32), w))
  return paths


def _vessels(rng: np.random.Generator, od: np.ndarray, side: int, radius: float,
             grade: int) -> list[tuple[np.ndarray, float]]:
  """Temporal arcades around the fovea, nasal vessels and, at grade 4, new vessels."""
  step, w0, k = 0.04 * radius, max(1.5, 0.02 * radius), 1.3 / radius
  temporal = np.pi if side > 0 else 0.0
  paths = []
  for up in (-1.0, 1.0):  # superior / inferior arcade, a vein and an artery each
    for scale in (1.0, 0.7):
      start = up * np.pi / 2 + side * up * rng.uniform(0.1, 0.4)
      paths += _vessel_tree(rng, od, start, radius * rng.uniform(1.2, 1.5), w0 * scale,
                            up * side * k * rng.uniform(0.8, 1.2), step)
  for _ in range(int(rng.integers(2, 4))):  # nasal
    paths += _vessel_tree(rng, od, np.pi - temporal + rng.uniform(-1.0, 1.0),
                          radius * rng.uniform(0.5, 0.9), w0 * 0.6, 0.0, step)
  for _ in range(2):  # thin macular branches
    paths += _vessel_tree(rng, od, temporal + rng.uniform(-0.3, 0.3),
                          radius * rng.uniform(0.3, 0.5), w0 * 0.4, 0.0, step)
  if grade == 4:  # tortuous new vessels on the disc
    for _ in range(int(rng.integers(3, 7))):
      paths += _vessel_tree(rng, od, rng.uniform(0, 2 * np.pi), radius * 0.25, 1.0,
                            rng.choice((-1.0, 1.0)) * 8 / radius, step * 0.5)
  return paths


def _inside(g: dict[str, Any], x: float, y: float, r: float) -> bool:
  """Whether a lesion of radius r at (x, y) lies on visible retina, off the optic disc."""
  return (np.hypot(x - g['centre'][0], y - g['centre'][1]) < 0.85 * g['radius'] - r
          and r + 2 <= y <= g['height'] - r - 3 and r + 2 <= x <= g['width'] - r - 3
          and np.hypot(x - g['od'][0], y - g['od'][1]) > 1.3 * g['od_radius'] + r)


def _lesions(rng: np.random.Generator, grade: int, geom: dict[str, Any]) -> list[Lesion]:
  """Places the lesions a grade calls for; exudates cluster around the macula."""
  lesions, diameter, radius = [], 2 * geom['radius'], geom['radius']
  clusters = [geom['fovea'] + radius * rng.uniform(0.15, 0.6) * np.array(
      [np.cos(t), np.sin(t)]) for t in rng.uniform(0, 2 * np.pi, size=3)]
  for kind, (low, high) in LESION_COUNTS[grade].items():
    for _ in range(int(rng.integers(low, high + 1))):
      r = max(1.0, diameter * rng.uniform(*LESION_RADII[kind]))
      for attempt in range(50):
        if kind == 'EX' and attempt < 25:
          x, y = clusters[int(rng.integers(len(clusters)))] + rng.normal(0, 0.08 * radius, 2)
        else:
          x, y = geom['centre'] + radius * rng.uniform(-0.85, 0.85, 2)
        if _inside(geom, x, y, r):
          break
      else:
        continue
      lobes = int(rng.integers(1, 4)) if kind == 'EX' else 1
      for j in range(lobes):
        dx, dy = (0.0, 0.0) if j == 0 else rng.normal(0, 0.6 * r, 2)
        s = 1.0 if j == 0 else rng.uniform(0.5, 0.8)
        lesions.append(Lesion(kind, x + dx, y + dy, r * s, r * s * rng.uniform(0.55, 1.0),
                              rng.uniform(0, 180)))
  return lesions


def sample_layout(rng: np.random.Generator, grade: int, width: int, height: int) -> Layout:
  """Draws the geometry, colours, vessels and lesions of one photograph."""
  radius = min(0.4 * width, 0.6 * height) * rng.uniform(0.97, 1.03)
  centre = np.array([width * (0.5 + rng.uniform(-0.04, 0.04)),
                     height * (0.5 + rng.uniform(-0.02, 0.02))])
  side = int(rng.choice((-1, 1)))  # optic disc right (+1) or left (-1) of the centre
  od_radius = 0.14 * radius * rng.uniform(0.9, 1.1)
  od = centre + radius * np.array([side * rng.uniform(0.42, 0.52), rng.normal(0, 0.04)])
  fovea = od + radius * np.array([-side * rng.uniform(0.72, 0.82), rng.uniform(0.0, 0.08)])
  base_rgb = (rng.uniform(190, 230), rng.uniform(80, 112), rng.uniform(8, 35))
  vessels = _vessels(rng, od, side, radius, grade)
  geom = dict(centre=centre, radius=radius, od=od, od_radius=od_radius, fovea=fovea,
              width=width, height=height)
  return Layout(width, height, tuple(centre), radius, tuple(od), od_radius, tuple(fovea),
                base_rgb, tuple(vessels), tuple(_lesions(rng, grade, geom)))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
  """Low-frequency noise in [-1, 1]-ish, upsampled from a coarse grid."""
  coarse = rng.normal(0.0, 1.0, (cells, max(2, cells * shape[1] // shape[0]))).astype(np.float32)
  return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _ellipse_layer(lesions: Sequence[Lesion], shape: tuple[int, int]) -> np.ndarray:
  """Anti-aliased filled ellipses as a uint8 layer (255 inside)."""
  layer = np.zeros(shape, np.uint8)
  for les in lesions:
    cv2.ellipse(layer, (int(les.x * 16), int(les.y * 16)),
                (max(16, int(les.rx * 16)), max(16, int(les.ry * 16))), les.angle, 0, 360, 255,
                -1, cv2.LINE_AA, 4)
  return layer


def draw_fundus(rng: np.random.Generator,
                layout: Layout) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Paints a layout; returns an RGB uint8 image and boolean masks keyed by MASK_KEYS."""
  h, w, rad = layout.height, layout.width, layout.radius
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  r = np.hypot(xx - layout.centre[0], yy - layout.centre[1]) / rad
  texture = 1 + 0.05 * _smooth_noise(rng, (h, w), 5) + 0.03 * _smooth_noise(rng, (h, w), 20)
  img = np.asarray(layout.base_rgb, np.float32) * texture[..., None]
  d_od = np.hypot(xx - layout.od[0], (yy - layout.od[1]) / 1.1) / layout.od_radius
  od_alpha = 0.85 / (1 + np.exp((d_od - 1) / 0.12))
  img += od_alpha[..., None] * (np.array([255, 228, 125], np.float32) - img)
  d_fov = np.hypot(xx - layout.fovea[0], yy - layout.fovea[1]) / rad
  img *= (1 - 0.3 * np.exp(-(d_fov / 0.1) ** 2) - 0.1 * np.exp(-(d_fov / 0.3) ** 2))[..., None]
  veins = np.zeros((h, w), np.uint8)
  for pts, width in layout.vessels:
    value = int(255 * min(1.0, width))
    for j in range(0, len(pts) - 1, 4):
      t = max(1, int(round(width * (1 - 0.4 * j / len(pts)))))
      cv2.polylines(veins, [np.round(pts[j:j + 5] * 16).astype(np.int32)], False, value, t,
                    cv2.LINE_AA, 4)
  v = cv2.GaussianBlur(veins, (3, 3), 0).astype(np.float32)[..., None] / 255
  img *= 1 - v * np.array([0.3, 0.55, 0.55], np.float32)
  masks = {'OD': d_od <= 1}
  for kind in ('HE', 'MA', 'EX'):
    layer = _ellipse_layer([les for les in layout.lesions if les.kind == kind], (h, w))
    masks[kind] = layer >= 128
    alpha = LESION_OPACITY[kind] * layer.astype(np.float32)[..., None] / 255
    img += alpha * (np.asarray(LESION_RGB[kind], np.float32) - img)
  img *= (1 - 0.55 * np.clip(r, 0, 1) ** 4)[..., None]
  img += rng.normal(0.0, 2.0, img.shape).astype(np.float32)
  edge = np.clip((1 - r) * rad + 0.5, 0, 1)[..., None]
  surround = rng.uniform(1, 6) + rng.normal(0.0, 1.5, img.shape).astype(np.float32)
  img = img * edge + surround * (1 - edge)
  return np.clip(img + 0.5, 0, 255).astype(np.uint8), {k: masks[k] for k in MASK_KEYS}


def render_fundus(rng: np.random.Generator, grade: int, width: int,
                  height: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Renders one fundus-like photograph of a DR grade.

  Args:
    rng: Source of all randomness; the same state gives the same pixels.
    grade: Retinopathy grade 0-4; decides which lesions are drawn.
    width: Image width in pixels.
    height: Image height in pixels.

  Returns:
    An RGB uint8 image (height, width, 3) and boolean masks {'EX', 'MA', 'HE', 'OD'}
    of shape (height, width).
  """
  return draw_fundus(rng, sample_layout(rng, grade, width, height))


def edema_risk(layout: Layout) -> int:
  """Risk of macular edema: 0 no exudates, 2 within one disc diameter of the fovea, else 1."""
  d = [np.hypot(les.x - layout.fovea[0], les.y - layout.fovea[1])
       for les in layout.lesions if les.kind == 'EX']
  if not d:
    return 0
  return 2 if min(d) <= 2 * layout.od_radius else 1


def sample_grades(rng: np.random.Generator, count: int,
                  grade_probs: Sequence[float] = GRADE_PROBS) -> list[int]:
  """Stratified grades: counts follow the probabilities (largest remainder), shuffled.

  When both NRDR (0-1) and RDR (2-4) have positive probability and count >= 2, each
  binary class gets at least one image, so tiny splits still hold both classes.
  """
  p = np.asarray(grade_probs, np.float64)
  if p.shape != (5,) or (p < 0).any() or p.sum() <= 0:
    raise ValueError(f'grade_probs must be 5 non-negative numbers, got {grade_probs}')
  exact = count * p / p.sum()
  counts = np.floor(exact).astype(int)
  counts[np.argsort(-(exact - counts), kind='stable')[:count - counts.sum()]] += 1
  for need, give in ((slice(0, 2), slice(2, 5)), (slice(2, 5), slice(0, 2))):
    if count >= 2 and p[need].sum() > 0 and p[give].sum() > 0 and counts[need].sum() == 0:
      counts[need.start + int(np.argmax(p[need]))] += 1
      counts[give.start + int(np.argmax(counts[give]))] -= 1
  grades = np.repeat(np.arange(5), counts)
  return [int(g) for g in rng.permutation(grades)]


def _params(num_train: int, num_test: int, width: int, height: int, seed: int,
            grade_probs: Sequence[float]) -> dict[str, Any]:
  """The record of what was generated, as stored in synthetic.json."""
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
  if min(num_train, num_test, seed) < 0 or min(width, height) < 32:
    raise ValueError('counts and seed must be >= 0, width and height >= 32')
  target = os.path.abspath(out_dir)
  if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
    if not overwrite:
      raise FileExistsError(f'{target} exists and is not empty (overwrite replaces it)')
    if not os.path.isfile(os.path.join(target, MANIFEST)):
      raise FileExistsError(f'{target} does not hold a synthetic dataset; not replacing it')
  p = _params(num_train, num_test, width, height, seed, grade_probs)
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.', suffix='.tmp', dir=parent)
  try:
    counts = {}
    for index, split in enumerate(('train', 'test')):
      grades = sample_grades(np.random.default_rng([seed, index]), p[f'num_{split}'],
                             grade_probs)
      _write_split(tmp, split, grades, p)
      counts[split] = {str(g): grades.count(g) for g in range(5)}
    with open(os.path.join(tmp, MANIFEST), 'w') as f:
      json.dump({'params': p, 'counts': counts}, f, indent=2, sort_keys=True)
      f.write('\n')
    os.chmod(tmp, 0o755)
    if os.path.isdir(target):
      shutil.rmtree(target)
    os.replace(tmp, target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info('synthetic dataset written to %s: %s', target, counts)
  return out_dir


def _generate_params(kwargs: dict[str, Any]) -> dict[str, Any]:
  """The parameters generate(**kwargs) would use: defaults, then gin, then kwargs."""
  values = {name: param.default for name, param in
            inspect.signature(generate).parameters.items()
            if param.default is not inspect.Parameter.empty}
  values.update(gin.get_bindings(generate))
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
  try:
    out = generate(f.out_dir, num_train=f.num_train, num_test=f.num_test, width=f.width,
                   height=f.height, seed=f.seed, overwrite=f.overwrite)
  except (FileExistsError, ValueError) as e:  # gin appends lines; keep the first
    sys.exit(f'error: {str(e).splitlines()[0]}')
  print(summary(out))


if __name__ == '__main__':
  _define_flags()
  app.run(main)

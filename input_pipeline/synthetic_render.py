"""Pure drawing of seeded fundus-like photographs of a DR grade; writes no files.

`render_fundus(rng, grade, width, height)` is `draw_fundus(rng, sample_layout(...))`:
`sample_layout` draws everything random about a photograph (retina, optic disc, fovea,
vessel tree, lesions) as a `Layout`, and `draw_fundus` paints it with pixel noise and
returns the image and the lesion masks. `sample_grades` draws the grades of a split.

Grade 0 has no lesions, grade 1 a few microaneurysms (MA), grades 2-4 growing numbers
of hard exudates (EX), microaneurysms and haemorrhages (HE). Any change to what these
functions draw for a given rng must bump `synthetic.GENERATOR_VERSION`, so cached
datasets are regenerated (see input_pipeline/synthetic.py, which writes the files).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import numpy as np

from utils import checks

LESIONS = ('EX', 'MA', 'HE')
MASK_KEYS = LESIONS + ('OD',)
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


def check_grade_probs(grade_probs: Sequence[float], parameter: str = 'grade_probs') -> None:
  """Raises ValueError naming `parameter` unless it holds 5 frequencies >= 0, not all 0."""
  if isinstance(grade_probs, str) or not hasattr(grade_probs, '__len__') or len(
      grade_probs) != 5:
    raise ValueError(f'{parameter} must list 5 frequencies (grades 0-4), got {grade_probs!r}')
  for i, p in enumerate(grade_probs):
    checks.check_number(f'{parameter}[{i}]', p, low=0)
  if not sum(grade_probs) > 0:
    raise ValueError(f'{parameter} must not be all 0, got {grade_probs!r}')


def sample_grades(rng: np.random.Generator, count: int,
                  grade_probs: Sequence[float] = GRADE_PROBS) -> list[int]:
  """Stratified grades: counts follow the probabilities (largest remainder), shuffled.

  When both NRDR (0-1) and RDR (2-4) have positive probability and count >= 2, each
  binary class gets at least one image, so tiny splits still hold both classes.
  """
  check_grade_probs(grade_probs)
  p = np.asarray(grade_probs, np.float64)
  exact = count * p / p.sum()
  counts = np.floor(exact).astype(int)
  counts[np.argsort(-(exact - counts), kind='stable')[:count - counts.sum()]] += 1
  for need, give in ((slice(0, 2), slice(2, 5)), (slice(2, 5), slice(0, 2))):
    if count >= 2 and p[need].sum() > 0 and p[give].sum() > 0 and counts[need].sum() == 0:
      counts[need.start + int(np.argmax(p[need]))] += 1
      counts[give.start + int(np.argmax(counts[give]))] -= 1
  grades = np.repeat(np.arange(5), counts)
  return [int(g) for g in rng.permutation(grades)]

"""Does an explanation point at the lesions? Scores against expert (or synthetic) masks.

Two scores per photograph and heatmap, averaged per method and per group of photographs:

  pointing    the pointing game (Zhang et al. 2016): 1 when the heatmap's maximum lies
              within `tolerance` pixels of a lesion pixel (15 px at 256 px, scaled with
              the side; 8x8 Grad-CAM cells are 32 px wide). When several pixels share the
              maximum, the fraction of them that hit, so a flat map scores the chance level.
  mass_share  the share of the heatmap's mass on lesions: sum(h * coverage) / sum(h),
              with the lesion coverage of each pixel in [0, 1] (`lesion_masks`).

Lesions are the union of MA, HE, EX and SE; the optic disc is not a lesion. An all-zero
heatmap counts as flat. The model's maps are set against baselines that ignore the model:

  centre_gaussian  a Gaussian centred on the image, sigma = 1/4 of the side
  optic_disc       the optic-disc mask (an explanation that points at the disc)
  uniform_retina   flat over the retina: pointing = chance of a random point on the
                   retina, mass_share = lesion area / retina area

    python -m visualization.localisation --run_dir=R --seg_dir=../shared/datasets/idrid-seg-800
    python -m visualization.localisation --run_dir=R --synthetic   # the run's synthetic set
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import cv2
import keras
import numpy as np

from evaluation import evaluator
from input_pipeline import tfrecords
from training import run_dir as rd
from utils import checks
from utils import entry
import visualization
from visualization import lesion_masks as lm
from visualization import registry

TOLERANCE_AT_256 = 15.0  # pixels at a 256-pixel side
GAUSSIAN_SIGMA_FRACTION = 0.25
POSITIVE_CLASS = 'RDR'
GROUPS = ('all', lm.NOT_TRAINED_ON, lm.TRAINED_ON)
SCORES = ('pointing', 'mass_share')

BASELINES: dict[str, Callable[[lm.Prepared], np.ndarray | None]] = {}


def _baseline(name: str):
  def decorator(fn):
    BASELINES[name] = fn
    return fn
  return decorator


@_baseline('centre_gaussian')
def _centre_gaussian(p: lm.Prepared) -> np.ndarray:
  size = p.lesions.shape[0]
  r = np.arange(size, dtype=np.float32) - (size - 1) / 2
  g = np.exp(-0.5 * (r / (GAUSSIAN_SIGMA_FRACTION * size)) ** 2)
  return np.outer(g, g)


@_baseline('optic_disc')
def _optic_disc(p: lm.Prepared) -> np.ndarray | None:
  return p.optic_disc


@_baseline('uniform_retina')
def _uniform_retina(p: lm.Prepared) -> np.ndarray:
  return p.retina.astype(np.float32)


def tolerance_pixels(size: int, tolerance_at_256: float = TOLERANCE_AT_256) -> float:
  """The pointing tolerance at a side of `size` pixels."""
  return tolerance_at_256 * size / 256.0


def _near(lesions: np.ndarray, tolerance: float) -> np.ndarray:
  """Pixels within `tolerance` (Euclidean) of a lesion pixel (coverage > 0)."""
  radius = int(np.floor(tolerance))
  on = (lesions > 0).astype(np.uint8)
  if radius < 1:
    return on.astype(bool)
  disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
  return cv2.dilate(on, disc).astype(bool)


def pointing(heatmap: np.ndarray, lesions: np.ndarray, tolerance: float) -> float:
  """Pointing game: share of the heatmap's maximal pixels within tolerance of a lesion."""
  h = np.asarray(heatmap, dtype=np.float64)
  peak = h >= h.max() - 1e-6 * max(abs(h.max()), 1e-12)
  return float(_near(lesions, tolerance)[peak].mean())


def mass_share(heatmap: np.ndarray, lesions: np.ndarray) -> float:
  """Share of the heatmap's mass on lesion pixels (weighted by their coverage)."""
  h = np.maximum(np.asarray(heatmap, dtype=np.float64), 0.0)
  if h.sum() <= 0:
    h = np.ones_like(h)  # An all-zero map points nowhere in particular: flat.
  return float((h * lesions).sum() / h.sum())


def _scores(heatmap: np.ndarray | None, p: lm.Prepared, tolerance: float) -> dict[str, float]:
  if heatmap is None:
    return {}
  return dict(pointing=pointing(heatmap, p.lesions, tolerance),
              mass_share=mass_share(heatmap, p.lesions))


def _explained_class(class_names: Sequence[str], class_index: int | None) -> int | None:
  if class_index is not None:
    return class_index
  return list(class_names).index(POSITIVE_CLASS) if POSITIVE_CLASS in class_names else None


def score_samples(model: keras.Model, samples: Sequence[lm.Sample], size: int,
                  contrast: str | None, class_names: Sequence[str],
                  methods: Sequence[str] | None = None, class_index: int | None = None,
                  tolerance_at_256: float = TOLERANCE_AT_256, batch_size: int = 8,
                  method_options: dict[str, dict[str, Any]] | None = None
                  ) -> list[dict[str, Any]]:
  """Per-photograph scores of each attribution method and baseline.

  Args:
    model: The classifier.
    samples: Photographs with masks (`lesion_masks.seg_samples`, `synthetic_samples`).
    size: Model input side; contrast: the records' contrast method.
    class_names: The run's classes.
    methods: Registered attribution methods; None for all.
    class_index: Class explained; None for 'RDR' when the model has it, else the
      predicted class.
    tolerance_at_256: Pointing tolerance in pixels at 256 px.
    batch_size: Photographs per batch.
    method_options: Keyword options per method, e.g. {'integrated_gradients': {'steps': 16}}.

  Returns:
    One dict per photograph with a usable lesion mask: name, group, probabilities, and
    {method or baseline: {'pointing': ..., 'mass_share': ...}} under 'scores'.
  """
  methods = list(methods or visualization.available_methods())
  for m in methods:
    registry.get(m)  # An unknown name fails before any work is done.
  target = _explained_class(class_names, class_index)
  tolerance = tolerance_pixels(size, tolerance_at_256)
  rows = []
  for start in range(0, len(samples), batch_size):
    prepared = [lm.prepare(s, size, contrast) for s in samples[start:start + batch_size]]
    for p in prepared:
      if not (p.lesions > 0).any():
        logging.warning('%s: no lesion inside the retina crop; skipped', p.sample.name)
    prepared = [p for p in prepared if (p.lesions > 0).any()]
    if not prepared:
      continue
    images = np.stack([p.image for p in prepared])
    probs = np.asarray(model(images, training=False))
    maps = {m: visualization.attribute(m, model, images, class_index=target,
                                       **(method_options or {}).get(m, {}))
            for m in methods}
    for i, p in enumerate(prepared):
      scores = {m: _scores(maps[m][i], p, tolerance) for m in methods}
      scores.update({b: _scores(fn(p), p, tolerance) for b, fn in BASELINES.items()})
      rows.append(dict(name=p.sample.name, group=p.sample.group,
                       probabilities=[float(v) for v in probs[i]],
                       lesion_share_of_retina=float(p.lesions[p.retina].sum()
                                                    / max(1, p.retina.sum())),
                       scores={k: v for k, v in scores.items() if v}))
    logging.info('localisation: %d/%d photographs', start + len(prepared), len(samples))
  return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
  """Mean scores per method (or baseline) and group: {name: {group: {score, 'n'}}}."""
  names = list(dict.fromkeys(k for r in rows for k in r['scores']))
  out: dict[str, dict[str, dict[str, float]]] = {}
  for name in names:
    out[name] = {}
    for group in GROUPS:
      chosen = [r['scores'][name] for r in rows
                if name in r['scores'] and group in ('all', r['group'])]
      out[name][group] = dict(n=len(chosen), **{
          s: float(np.mean([c[s] for c in chosen])) if chosen else float('nan')
          for s in SCORES})
  return out


def format_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
  """A markdown table: a row per method or baseline, pointing and mass share per group.

  Groups without photographs (e.g. 'trained_on' on a synthetic test set) are left out.
  """
  first = next(iter(summary.values()))
  groups = [g for g in GROUPS if first[g]['n']]
  head = ['method'] + [f'{s} ({g}, n={first[g]["n"]})' for s in SCORES for g in groups]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name, scores in summary.items():
    cells = [name if name not in BASELINES else f'{name} (baseline)']
    cells += ['-' if not scores[g]['n'] else f'{scores[g][s]:.3f}'
              for s in SCORES for g in groups]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def localise(run_dir: str, seg_dir: str | None = None, use_synthetic: bool = False,
             out: str | None = None, **kwargs: Any) -> dict[str, Any]:
  """Scores a run's explanations against lesion masks; writes and returns the JSON.

  Args:
    run_dir: A trained run directory.
    seg_dir: An idrid-seg-800 folder; or
    use_synthetic: the masks of the run's own synthetic data (test split, grades 2-4).
    out: JSON path; default run_dir/localisation.json.
    **kwargs: Passed to `score_samples` (methods, class_index, tolerance_at_256, ...).

  Raises:
    ValueError: Neither or both of seg_dir and use_synthetic.
    FileNotFoundError: Missing run, records or masks.
  """
  if bool(seg_dir) == bool(use_synthetic):
    raise ValueError('give exactly one of --seg_dir and --synthetic')
  info_path = os.path.join(run_dir, rd.RUN_INFO)
  if not os.path.isfile(info_path):
    raise FileNotFoundError(f'{run_dir} is not a trained run (missing {info_path})')
  info = rd.read_json(info_path)
  registry.check_class_index(kwargs.get('class_index'), info['class_names'])
  params = tfrecords.read_manifest(info['records_dir'])['params']
  if use_synthetic:
    samples = lm.synthetic_samples(info['data_dir'])
  else:
    samples = lm.seg_samples(seg_dir, lm.trained_names(info['records_dir']))
  model = evaluator.load_best_model(run_dir)
  rows = score_samples(model, samples, params['image_size'], params.get('contrast'),
                       info['class_names'], **kwargs)
  if not rows:
    raise ValueError(f'no photograph with lesions in {seg_dir or info["data_dir"]}')
  size = params['image_size']
  result = dict(run_dir=os.path.abspath(run_dir),
                masks=os.path.abspath(seg_dir) if seg_dir else f'synthetic:{info["data_dir"]}',
                image_size=size, contrast=params.get('contrast'),
                tolerance_px=tolerance_pixels(size, kwargs.get('tolerance_at_256',
                                                               TOLERANCE_AT_256)),
                explained_class=_explained_class(info['class_names'],
                                                 kwargs.get('class_index')),
                summary=summarise(rows), per_image=rows)
  out = out or os.path.join(run_dir, 'localisation.json')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  rd.write_json(out, result)
  return result


def _define_flags() -> None:
  flags.DEFINE_string('run_dir', None, 'Run directory written by train.py.', required=True)
  flags.DEFINE_string('seg_dir', None, 'IDRiD segmentation folder (idrid-seg-800).')
  flags.DEFINE_bool('synthetic', False, "Use the masks of the run's synthetic test set.")
  flags.DEFINE_string('out', None, 'JSON output; default RUN_DIR/localisation.json.')
  flags.DEFINE_list('methods', None, 'Attribution methods; default all registered.')
  flags.DEFINE_integer('class_index', None, "Class explained; default 'RDR'.")
  flags.DEFINE_float('tolerance', TOLERANCE_AT_256, 'Pointing tolerance, pixels at 256.')
  flags.DEFINE_integer('ig_steps', 32, 'Steps of integrated gradients.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  checks.check_number('--tolerance', f.tolerance, low=0, note='pixels at 256')
  checks.check_number('--ig_steps', f.ig_steps, low=1, whole=True)
  entry.check_output_file('--out', f.out, '.json')
  result = localise(f.run_dir, f.seg_dir, f.synthetic, f.out, methods=f.methods,
                    class_index=f.class_index, tolerance_at_256=f.tolerance,
                    method_options={'integrated_gradients': {'steps': f.ig_steps}})
  print(format_table(result['summary']))
  print(f'tolerance {result["tolerance_px"]:.1f} px at {result["image_size"]} px; '
        f'wrote {f.out or os.path.join(f.run_dir, "localisation.json")}')


if __name__ == '__main__':
  _define_flags()
  entry.run(main)

"""Explains one fundus photograph with a trained run: prediction and heatmap overlay.

    python -m visualization.explain --run_dir=runs/x --image=PHOTO.jpg \
        [--out=FILE.png] [--method=grad_cam] [--class_index=1]

Any resolution works (IDRiD's 4288x2848 originals too): the photograph goes through the
preprocessing the run's records used (border crop, square, resize to the records'
image_size, their contrast method), so the model sees what it saw in training. Once
evaluate.py has run, the photograph is called as it would be there: with the decision
threshold on P(RDR) chosen on validation and the same test-time augmentation (metrics.json);
before that, by the most probable class. Writes the photograph and its overlay side by
side (default RUN_DIR/figures/explain_<name>.png, with _<method> appended for methods
other than grad_cam) and prints the prediction.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from evaluation import evaluator
from input_pipeline import preprocessing
from input_pipeline import tfrecords
from training import run_dir as rd
from utils import entry
import visualization
from visualization import overlays
from visualization import registry

DEFAULT_METHOD = 'grad_cam'
# Below this fraction of dark surround (preprocessing.locate_retina) a picture is
# flagged as probably not a fundus photograph; a round retina leaves 21 % in the corners.
MIN_SURROUND = 0.03


def run_preprocessing(run_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """The run's run.json and the preprocessing parameters of its records.

  Raises:
    FileNotFoundError: run_dir is not a trained run, or its records are gone.
  """
  info_path = os.path.join(run_dir, rd.RUN_INFO)
  if not os.path.isfile(info_path):
    raise FileNotFoundError(f'{run_dir} is not a trained run (missing {info_path})')
  info = rd.read_json(info_path)
  return info, tfrecords.read_manifest(info['records_dir'])['params']


def default_output(run_dir: str, image_path: str, method: str = DEFAULT_METHOD) -> str:
  """RUN_DIR/figures/explain_<name>[_<method>].png."""
  stem = os.path.splitext(os.path.basename(image_path))[0]
  suffix = '' if method == DEFAULT_METHOD else f'_{method}'
  return os.path.join(run_dir, rd.FIGURES_DIR, f'explain_{stem}{suffix}.png')


def decision_rule(run_dir: str) -> tuple[float | None, int]:
  """(threshold on P(class 1) or None for argmax, test-time views) of evaluate.py's run."""
  path = os.path.join(run_dir, rd.METRICS)
  if not os.path.isfile(path):
    return None, 1
  results = rd.read_json(path)
  return results.get('threshold'), int(results.get('tta', 1))


def explain_file(run_dir: str, image_path: str, out: str | None = None,
                 method: str = DEFAULT_METHOD,
                 class_index: int | None = None) -> dict[str, Any]:
  """Predicts one photograph and writes its explanation figure.

  Args:
    run_dir: A trained run directory (run.json, checkpoints/best.keras, its records).
    image_path: A fundus photograph of any size.
    out: PNG path; default `default_output(run_dir, image_path, method)`.
    method: A registered attribution method.
    class_index: Class to explain; None for the predicted class.

  Returns:
    {'image', 'predicted', 'probability', 'probabilities', 'threshold', 'explained',
    'method', 'out', 'surround'}; 'threshold' is None when the most probable class was
    taken; 'surround' is the photograph's surround (`preprocessing.locate_retina`).

  Raises:
    FileNotFoundError: Missing run, checkpoint or records.
    preprocessing.ImageError: The photograph cannot be used.
    ValueError: Unknown method or class index out of range.
  """
  registry.get(method)  # An unknown name fails before any work is done.
  info, params = run_preprocessing(run_dir)
  class_names = info['class_names']
  registry.check_class_index(class_index, class_names)
  photo = preprocessing.load_image(image_path)
  try:
    bbox, surround = preprocessing.locate_retina(photo)
    image = preprocessing.preprocess_image(photo, size=params['image_size'],
                                           contrast=params.get('contrast'), bbox=bbox)
  except preprocessing.ImageError as e:
    raise preprocessing.ImageError(f'{image_path}: {e}') from None
  if surround < MIN_SURROUND:
    logging.warning('%s: no dark surround around the retina (%.1f %% of the frame): not a '
                    'fundus photograph, or one cropped inside the retina? The model was '
                    'trained on whole fundus photographs', image_path, 100 * surround)
  image = image.astype(np.float32) / 255.0
  model = evaluator.load_best_model(run_dir)
  threshold, tta = decision_rule(run_dir)
  probs = evaluator.average_views(model, image[None], tta)[0]
  if threshold is not None and len(class_names) == 2:
    predicted = int(probs[1] >= threshold)
  else:
    threshold, predicted = None, int(np.argmax(probs))
  explained = predicted if class_index is None else class_index
  heatmap = visualization.attribute(method, model, image[None], class_index=explained)[0]
  fig = overlays.explanation_figure(
      image, heatmap, class_names[predicted], float(probs[predicted]),
      method=f'{method} for {class_names[explained]}', name=os.path.basename(image_path))
  out = overlays.save_figure(fig, out or default_output(run_dir, image_path, method))
  return dict(image=image_path, predicted=class_names[predicted],
              probability=float(probs[predicted]),
              probabilities={c: float(p) for c, p in zip(class_names, probs)},
              threshold=threshold, explained=class_names[explained], method=method, out=out,
              surround=surround)


def decision_text(result: dict[str, Any]) -> str:
  """The call and why it was made.

  E.g. 'NRDR (P(RDR) = 0.049 < 0.800, the threshold chosen on validation)'.
  """
  if result['threshold'] is None:
    return f'{result["predicted"]} (p={result["probability"]:.3f}, the most probable class)'
  positive, threshold = list(result['probabilities'])[1], result['threshold']
  p = result['probabilities'][positive]
  return (f'{result["predicted"]} (P({positive}) = {p:.3f} {">=" if p >= threshold else "<"} '
          f'{threshold:.3f}, the threshold chosen on validation)')


def _define_flags() -> None:
  flags.DEFINE_string('run_dir', None, 'Run directory written by train.py.', required=True)
  flags.DEFINE_string('image', None, 'Fundus photograph to explain.', required=True)
  flags.DEFINE_string('out', None, 'Output PNG; default RUN_DIR/figures/explain_<name>.png.')
  flags.DEFINE_string('method', DEFAULT_METHOD, 'Attribution method (grad_cam, '
                      'guided_grad_cam, integrated_gradients, saliency).')
  flags.DEFINE_integer('class_index', None, 'Class to explain; default the predicted one.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  entry.check_output_file('--out', f.out, '.png')
  result = explain_file(f.run_dir, f.image, f.out, f.method, f.class_index)
  print(f'{result["image"]}: predicted {decision_text(result)}; {result["method"]} for '
        f'{result["explained"]} -> {result["out"]}')


if __name__ == '__main__':
  _define_flags()
  entry.run(main)

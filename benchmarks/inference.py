"""Inference speed: batched images/s, and latency for one photograph end to end.

    python benchmarks/inference.py [--run_dir=runs/x] [--photo=PHOTO.jpg]

Batched: forward passes on 256x256 inputs. One photograph: read + border crop + resize
(`preprocessing.preprocess_file`), prediction, and a Grad-CAM heatmap, timed separately
(median of --repeats). Without --run_dir a freshly initialised default model is used
(speed does not depend on the weights).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags
import numpy as np
import tensorflow as tf

import models
from input_pipeline import preprocessing
from utils import checks
from utils import entry
from visualization import grad_cam

DEFAULT_PHOTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..',
                             'shared', 'datasets', 'idrid-fullres-sample', 'images',
                             'IDRiD_005.jpg')

flags.DEFINE_string('run_dir', None, 'Trained run (default: an untrained default model).')
flags.DEFINE_string('photo', DEFAULT_PHOTO, 'Photograph for the latency measurement.')
flags.DEFINE_integer('batch_size', 32, 'Batch size of the throughput measurement.')
flags.DEFINE_integer('repeats', 10, 'Repeats of each latency measurement.')
FLAGS = flags.FLAGS


def _median_seconds(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  for flag in ('batch_size', 'repeats'):
    checks.check_number(f'--{flag}', FLAGS[flag].value, low=1, whole=True)
  if FLAGS.photo != DEFAULT_PHOTO and not os.path.isfile(FLAGS.photo):
    raise FileNotFoundError(f'--photo: no file {FLAGS.photo}')
  if FLAGS.run_dir:
    from evaluation import evaluator  # pylint: disable=g-import-not-at-top
    model = evaluator.load_best_model(FLAGS.run_dir)
  else:
    model = models.build_model(input_shape=(256, 256, 3), num_classes=2)
  size = model.input_shape[1]
  forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
  batch = np.random.default_rng(0).random((FLAGS.batch_size, size, size, 3), np.float32)
  seconds = _median_seconds(lambda: forward(batch).numpy(), FLAGS.repeats)
  print(f'batched inference (batch {FLAGS.batch_size}, {size}x{size}, XLA): '
        f'{FLAGS.batch_size / seconds:.0f} images/s')
  plain = _median_seconds(lambda: model.predict_on_batch(batch), FLAGS.repeats)
  print(f'  model.predict_on_batch: {FLAGS.batch_size / plain:.0f} images/s')

  if not os.path.isfile(FLAGS.photo):
    print(f'no photograph at {FLAGS.photo}: latency not measured')
    return
  shape = preprocessing.load_image(FLAGS.photo).shape
  t_pre = _median_seconds(lambda: preprocessing.preprocess_file(FLAGS.photo, size=size),
                          FLAGS.repeats)
  image = preprocessing.preprocess_file(FLAGS.photo, size=size)[None].astype(np.float32) / 255
  t_pred = _median_seconds(lambda: forward(image).numpy(), FLAGS.repeats)
  t_cam = _median_seconds(lambda: grad_cam.grad_cam(model, image), FLAGS.repeats)
  total = t_pre + t_pred + t_cam
  print(f'one photograph ({shape[1]}x{shape[0]}): {1000 * total:.0f} ms = preprocessing '
        f'{1000 * t_pre:.0f} ms + prediction {1000 * t_pred:.1f} ms + Grad-CAM '
        f'{1000 * t_cam:.0f} ms (median of {FLAGS.repeats})')


if __name__ == '__main__':
  entry.run(main)

"""Training speed of a model: images/s, FLOP utilisation, peak memory.

    python benchmarks/train_step.py [--gin_file=configs/idrid_binary.gin] \
        [--records_dir=/tmp/idrid_tfr] [--steps=30] [--settings=default:32,bf16:32,xla:32]

Times `model.fit` steps on synthetic tensors (so the input pipeline is excluded) for
several settings (plain Keras, mixed bfloat16, XLA; batch size), each --repeats times,
measures a dense 2048x2048 float32 matmul as the machine's reachable FLOP rate, and
reports each setting's share of it. With --records_dir it also times real training epochs
from the records and prints seconds per epoch with and without the input pipeline.
Without --gin_file the model is the built-in default (stages 16-32-64).
"""

from __future__ import annotations

import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import models
from input_pipeline import tfrecords
from models import flops as flops_lib
from training import metrics as metrics_lib
from utils import checks
from utils import entry

flags.DEFINE_integer('steps', 30, 'Timed steps per setting (after warm-up).')
flags.DEFINE_integer('image_size', 256, 'Input side, pixels.')
flags.DEFINE_string('records_dir', None, 'Records to time a real epoch on (optional).')
flags.DEFINE_list('settings', ['default:16', 'default:32', 'xla:16', 'xla:32'],
                  'Settings to time, as mode:batch (mode: default, xla, or bf16 for '
                  'mixed bfloat16 precision).')
flags.DEFINE_multi_string('gin_file', [], 'Experiment whose model is timed (default: '
                          'the built-in default, stages 16-32-64).')
flags.DEFINE_integer('epoch_batch', 16, 'Batch size of the real-epoch measurement.')
flags.DEFINE_integer('epochs', 4, 'Epochs per real-epoch timing; epochs 2 onwards are timed.')
flags.DEFINE_integer('epoch_rounds', 1, 'Alternating pipeline / from-memory timings per '
                     'real-epoch mode; the median share and its range are printed.')
flags.DEFINE_list('epoch_modes', ['default', 'xla'], 'Real-epoch timings to run.')
flags.DEFINE_integer('augment_niceness', None, 'CPU priority (niceness) of the threads that '
                     'augment in the real-epoch timing; default augment.BACKGROUND_NICENESS; '
                     '0 leaves their priority unchanged.')
flags.DEFINE_integer('repeats', 3, 'Timings per setting; the median and range are printed.')
FLAGS = flags.FLAGS


def matmul_gflops(n: int = 2048, repeats: int = 20, rounds: int = 3) -> float:
  """Dense float32 matmul rate on this machine, GFLOP/s (best of `rounds`)."""
  a = tf.random.uniform((n, n))
  b = tf.random.uniform((n, n))
  tf.matmul(a, b).numpy()
  best = 0.0
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(repeats):
      c = tf.matmul(a, b)
    c.numpy()
    best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9)
  return best


def _compiled_model(size: int, jit: bool, policy: str = 'float32') -> keras.Model:
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = models.build_model(input_shape=(size, size, 3), num_classes=2)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=metrics_lib.training_metrics(2), jit_compile=jit)
  return model


class _BatchEnds(keras.callbacks.Callback):
  """Wall-clock time at the end of each training step."""

  def __init__(self):
    super().__init__()
    self.ends = []

  def on_train_batch_end(self, batch, logs=None):
    self.ends.append(time.perf_counter())


def time_steps(size: int, batch: int, jit: bool, steps: int, policy: str = 'float32',
               repeats: int = 3) -> tuple[list[float], list[float]]:
  """Training images/s of `fit` on in-memory tensors, and the seconds each `fit` call
  spends outside its steps, once per repeat.

  Each repeat is one `fit` of steps + 1 steps, timed from the end of its first step to
  the end of its last: the steady rate of the step. The rest of the `fit` call (its whole
  time less steps + 1 steady steps: setting up and closing the epoch) is left out of the
  rate, as it is paid once per epoch, not once per step, and returned on its own.
  """
  model = _compiled_model(size, jit, policy)
  rng = np.random.default_rng(0)
  x = rng.random((batch, size, size, 3), dtype=np.float32)
  y = rng.integers(0, 2, batch).astype(np.int32)
  ds = tf.data.Dataset.from_tensors((x, y)).repeat()
  model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # warm-up and compilation
  rates, rests = [], []
  for _ in range(repeats):
    ends = _BatchEnds()
    called = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[ends])
    total = time.perf_counter() - called
    step = (ends.ends[-1] - ends.ends[0]) / steps
    rates.append(batch / step)
    rests.append(total - (steps + 1) * step)
  return rates, rests


_Timing = tuple[float, float]  # (wall, CPU) seconds per epoch


class _EpochTimes(keras.callbacks.Callback):
  """Wall-clock and process CPU time at the end of each epoch."""

  def __init__(self):
    super().__init__()
    self.ends = []
    self.cpu_ends = []

  def on_epoch_end(self, epoch, logs=None):
    self.ends.append(time.perf_counter())
    self.cpu_ends.append(time.process_time())


def _seconds_per_epoch(model: keras.Model, ds: tf.data.Dataset, steps: int,
                       epochs: int) -> _Timing:
  """Mean wall and CPU seconds of epochs 2..epochs of one `fit` (epoch 1 is warm-up)."""
  times = _EpochTimes()
  model.fit(ds, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[times])
  return ((times.ends[-1] - times.ends[0]) / (epochs - 1),
          (times.cpu_ends[-1] - times.cpu_ends[0]) / (epochs - 1))


def time_epoch(records_dir: str, batch: int, jit: bool, epochs: int = 4,
               rounds: int = 1) -> tuple[list[_Timing], list[_Timing], int]:
  """Training epochs from the records, with the input pipeline and from memory.

  As in train.py, one `fit` runs several epochs over one iterator; epoch 1 (graph tracing,
  cache filling) is left out. "From memory" replays batches taken from the same pipeline
  and held in memory, so the difference is what decoding, oversampling and augmentation
  add to an epoch. With several rounds the two alternate (pipeline, memory, pipeline, ...),
  so that a drift in the machine's speed falls on both.

  Returns:
    (wall, CPU) seconds per epoch with the pipeline and from memory, one of each per
    round, and the images per epoch.
  """
  from input_pipeline import augment  # pylint: disable=g-import-not-at-top
  from input_pipeline import datasets  # pylint: disable=g-import-not-at-top
  if FLAGS.augment_niceness is not None:
    augment.BACKGROUND_NICENESS = FLAGS.augment_niceness
  manifest = tfrecords.read_manifest(records_dir)
  size = manifest['params']['image_size']
  steps = datasets.steps_per_epoch(manifest, batch, 1.0)
  ds = datasets.make_dataset(records_dir, 'train', batch_size=batch)
  in_memory = ds.take(steps).cache()
  for _ in in_memory:  # fills the cache
    pass
  with_model, memory_model = _compiled_model(size, jit), _compiled_model(size, jit)
  with_pipeline, from_memory = [], []
  for _ in range(rounds):
    with_pipeline.append(_seconds_per_epoch(with_model, ds, steps, epochs))
    from_memory.append(_seconds_per_epoch(memory_model, in_memory.repeat(), steps, epochs))
  return with_pipeline, from_memory, steps * batch


def _check_flags() -> None:
  """Usage errors before any timing starts (the timings take minutes)."""
  for setting in FLAGS.settings:
    mode, _, batch = setting.partition(':')
    if mode not in ('default', 'xla', 'bf16'):
      raise app.UsageError(f'unknown mode {mode!r} in --settings; use default, xla or bf16')
    if not (batch.isascii() and batch.isdigit() and int(batch) >= 1):
      raise app.UsageError(f'--settings takes mode:batch_size, e.g. default:32; got '
                           f'{setting!r}')
  for mode in FLAGS.epoch_modes:
    if mode not in ('default', 'xla'):
      raise app.UsageError(f'unknown mode {mode!r} in --epoch_modes; use default or xla')
  if FLAGS.records_dir and FLAGS.epochs < 2:
    raise app.UsageError('--epochs must be at least 2 (epoch 1 is warm-up, not timed)')
  if FLAGS.steps < 1:
    raise app.UsageError('--steps must be at least 1')
  if FLAGS.augment_niceness is not None and not 0 <= FLAGS.augment_niceness <= 19:
    raise app.UsageError('--augment_niceness must be in 0..19')
  if FLAGS.epoch_rounds < 1:
    raise app.UsageError('--epoch_rounds must be at least 1')
  for flag, least in (('repeats', 1), ('epoch_batch', 1), ('image_size', 32)):
    checks.check_number(f'--{flag}', FLAGS[flag].value, low=least, whole=True)
  if FLAGS.records_dir:
    tfrecords.read_manifest(FLAGS.records_dir)  # missing records: before the timings


def main(argv):
  del argv
  _check_flags()
  if FLAGS.gin_file:
    entry.parse_gin(FLAGS.gin_file, [])
  size = FLAGS.image_size
  model = models.build_model(input_shape=(size, size, 3), num_classes=2)
  print(f'model of {", ".join(FLAGS.gin_file) or "the built-in defaults"}')
  forward = flops_lib.count_flops(model)
  per_image = 3 * forward  # forward + backward (about twice the forward) per image
  peak = matmul_gflops()
  print(f'model: {model.count_params()} parameters, {forward / 1e6:.1f} MFLOP forward, '
        f'~{per_image / 1e6:.0f} MFLOP per training image at {size}x{size}')
  print(f'dense 2048x2048 matmul: {peak:.0f} GFLOP/s on {os.cpu_count()} cores')
  for setting in FLAGS.settings:
    mode, batch = setting.split(':')
    rates, rests = time_steps(size, int(batch), mode == 'xla', FLAGS.steps,
                               'mixed_bfloat16' if mode == 'bf16' else 'float32',
                               FLAGS.repeats)
    rate = float(np.median(rates))
    used = rate * per_image / 1e9
    print(f'  train step {mode:<7} batch {batch:>3}: {rate:6.1f} images/s '
          f'(median of {len(rates)}, {min(rates):.0f}-{max(rates):.0f}), '
          f'{used:5.1f} GFLOP/s = {100 * used / peak:4.1f}% of the matmul rate; '
          f'fit call outside its steps {np.median(rests):.2f} s (not in the rate)')
  if FLAGS.records_dir:
    for mode in FLAGS.epoch_modes:
      piped, memory, images = time_epoch(FLAGS.records_dir, FLAGS.epoch_batch,
                                         mode == 'xla', FLAGS.epochs, FLAGS.epoch_rounds)
      seconds, memory_seconds = [p[0] for p in piped], [m[0] for m in memory]
      shares = [100 * (s / m - 1) for s, m in zip(seconds, memory_seconds)]
      spread = (f'median of {len(shares)} rounds, {min(shares):.0f} to {max(shares):.0f}%; '
                if len(shares) > 1 else '')
      print(f'  real epoch ({mode}, batch {FLAGS.epoch_batch}, '
            f'{images} images, mean of epochs 2-{FLAGS.epochs}): '
            f'{np.median(seconds):.2f} s with the input pipeline = '
            f'{images / np.median(seconds):.1f} images/s; {np.median(memory_seconds):.2f} s '
            f'from memory; the pipeline adds {np.median(shares):.0f}% ({spread}'
            f'per round: {", ".join(f"{s:.0f}" for s in shares)})')
      print(f'    CPU per image (all threads): '
            f'{1e3 * np.median([p[1] for p in piped]) / images:.2f} ms with the pipeline, '
            f'{1e3 * np.median([m[1] for m in memory]) / images:.2f} ms from memory')
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f'peak resident memory of this process: {peak_mb:.0f} MiB')


if __name__ == '__main__':
  entry.run(main)

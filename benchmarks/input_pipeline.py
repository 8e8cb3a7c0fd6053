"""Training input pipeline throughput: records -> decoded, oversampled, augmented batches.

    python benchmarks/input_pipeline.py --records_dir=/tmp/idrid_tfr [--batches=100]

Builds the records first when --data_dir is given and --records_dir holds none. Prints
images per second of the project's pipeline (every augmentation on), the CPU time it spends
per image (all threads; the training step competes for the same cores) and, with
--compare_keras, of the same pipeline with seven chained Keras random layers instead.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags
import keras
import tensorflow as tf

from input_pipeline import datasets
from input_pipeline import tfrecords
from utils import checks
from utils import entry

flags.DEFINE_string('records_dir', '/tmp/idrid_tfr', 'TFRecords folder.')
flags.DEFINE_string('data_dir', None, 'IDRiD folder, to build the records if missing.')
flags.DEFINE_integer('batch_size', 32, 'Batch size.')
flags.DEFINE_integer('batches', 100, 'Batches to time (after 10 warm-up batches).')
flags.DEFINE_bool('compare_keras', False, 'Also time chained keras random layers.')
FLAGS = flags.FLAGS


def _time(ds: tf.data.Dataset, batches: int, batch_size: int) -> tuple[float, float]:
  """Images per second, and CPU milliseconds per image summed over all threads."""
  it = iter(ds)
  for _ in range(10):
    next(it)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(it)
  images = batches * batch_size
  return (images / (time.perf_counter() - start),
          1e3 * (time.process_time() - cpu_start) / images)


def _keras_chain(records_dir: str, batch_size: int) -> tf.data.Dataset:
  layers = keras.Sequential([
      keras.layers.RandomRotation(0.5, fill_mode='constant', seed=0),
      keras.layers.RandomTranslation(0.05, 0.05, fill_mode='constant', seed=1),
      keras.layers.RandomZoom(0.1, fill_mode='constant', seed=2),
      keras.layers.RandomShear(0.1, 0.1, fill_mode='constant', seed=3),
      keras.layers.RandomFlip('horizontal_and_vertical', seed=4),
      keras.layers.RandomBrightness(0.2, value_range=(0, 1), seed=5),
      keras.layers.RandomContrast(0.2, seed=6),
  ])
  ds = datasets.make_dataset(records_dir, 'train', batch_size=batch_size, augment=False)
  return ds.map(lambda x, y: (layers(x, training=True), y),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def main(argv):
  del argv
  for flag in ('batch_size', 'batches'):
    checks.check_number(f'--{flag}', FLAGS[flag].value, low=1, whole=True)
  if FLAGS.data_dir and not os.path.isfile(os.path.join(FLAGS.records_dir, tfrecords.MANIFEST)):
    tfrecords.build_tfrecords(FLAGS.data_dir, FLAGS.records_dir)
  size = tfrecords.read_manifest(FLAGS.records_dir)['params']['image_size']
  ds = datasets.make_dataset(FLAGS.records_dir, 'train', batch_size=FLAGS.batch_size)
  rate, cpu_ms = _time(ds, FLAGS.batches, FLAGS.batch_size)
  print(f'input pipeline (decode, oversample, all augmentations, {size}x{size}, '
        f'batch {FLAGS.batch_size}): {rate:.0f} images/s on {os.cpu_count()} cores, '
        f'{cpu_ms:.2f} ms of CPU per image')
  plain = datasets.make_dataset(FLAGS.records_dir, 'train', batch_size=FLAGS.batch_size,
                                augment=False)
  rate, cpu_ms = _time(plain, FLAGS.batches, FLAGS.batch_size)
  print(f'  without augmentation: {rate:.0f} images/s, {cpu_ms:.2f} ms of CPU per image')
  if FLAGS.compare_keras:
    rate, cpu_ms = _time(_keras_chain(FLAGS.records_dir, FLAGS.batch_size), FLAGS.batches // 4,
                         FLAGS.batch_size)
    print(f'  seven chained keras random layers instead: {rate:.0f} images/s, '
          f'{cpu_ms:.2f} ms of CPU per image')

if __name__ == '__main__':
  entry.run(main)

"""tf.data pipelines over the TFRecords written by `input_pipeline.tfrecords`.

Train: decode -> cache -> one shuffled, repeated stream per class (or per DR grade) -> mixed
by `sample_from_datasets` to the oversampling target -> batch -> augment (one Python call per
batch, one seed per photograph) -> scale to [0, 1] -> mixup (optional) -> prefetch.
Validation and test: decode -> batch -> scale (no shuffling, no oversampling, no dropped
remainder: every photograph is scored exactly once).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from input_pipeline import augment as augment_lib
from input_pipeline import tfrecords
from utils import checks

# Second part of the mixup seeds, so they differ from the augmentation seeds (seed, position).
_MIXUP_STREAM = 0x6D6978

FEATURES = {
    tfrecords.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    tfrecords.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    tfrecords.GRADE_KEY: tf.io.FixedLenFeature([], tf.int64),
    tfrecords.DME_KEY: tf.io.FixedLenFeature([], tf.int64),
    tfrecords.NAME_KEY: tf.io.FixedLenFeature([], tf.string),
    tfrecords.SPLIT_KEY: tf.io.FixedLenFeature([], tf.string),
    tfrecords.HASH_KEY: tf.io.FixedLenFeature([], tf.string),
}


def decode(serialized: tf.Tensor, image_size: int) -> dict[str, tf.Tensor]:
  """Parses one example into uint8 image (size, size, 3), label, grade and name."""
  ex = tf.io.parse_single_example(serialized, FEATURES)
  image = tf.io.decode_png(ex[tfrecords.IMAGE_KEY], channels=3)
  image.set_shape([image_size, image_size, 3])
  return dict(image=image, label=tf.cast(ex[tfrecords.LABEL_KEY], tf.int32),
              grade=tf.cast(ex[tfrecords.GRADE_KEY], tf.int32), name=ex[tfrecords.NAME_KEY])


def to_float(image: tf.Tensor) -> tf.Tensor:
  """uint8 [0, 255] -> float32 [0, 1], the model's input range."""
  return tf.cast(image, tf.float32) / 255.0


# What the training split is balanced over (`make_dataset`'s oversample_by).
OVERSAMPLE_BY = ('class', 'grade')


def check_oversample_by(value: str, parameter: str = 'oversample_by') -> None:
  """Raises ValueError naming `parameter` unless `value` is one of OVERSAMPLE_BY."""
  checks.check_choice(parameter, value, OVERSAMPLE_BY)


def class_weights(counts: list[int], oversample: float | None) -> list[float]:
  """Sampling weight of each group (class or grade) for a target mix.

  Args:
    counts: Training examples per group.
    oversample: None or 0 keeps the natural mix. r in (0, 1] samples every group as if
      it had at least r times the examples of the largest group: 1.0 is balanced.

  Returns:
    Weights summing to 1 (groups without examples get 0).
  """
  checks.check_number('oversample', oversample, low=0, high=1, none_ok=True)
  largest = max(counts)
  if oversample:
    sizes = [max(n, oversample * largest) if n else 0 for n in counts]
  else:
    sizes = [float(n) for n in counts]
  total = sum(sizes)
  return [s / total for s in sizes]


def _counts(manifest: dict[str, Any], split: str) -> list[int]:
  per_class = manifest['counts'][split]['per_class']
  return [per_class[c] for c in manifest['class_names']]


def _grade_counts(manifest: dict[str, Any], split: str) -> tuple[list[int], list[int]]:
  """(grades, examples per grade) for the grades the manifest lists, in grade order."""
  per_grade = {int(g): n for g, n in manifest['counts'][split]['per_grade'].items()}
  grades = sorted(per_grade)
  return grades, [per_grade[g] for g in grades]


def steps_per_epoch(manifest: dict[str, Any], batch_size: int,
                    oversample: float | None = 1.0, oversample_by: str = 'class') -> int:
  """Training steps that show as many examples as the oversampled training set holds.

  With oversample_by='grade' (and any oversampling) an epoch has the steps of a
  class-balanced epoch, so grade and class balancing compare at the same compute.
  """
  check_oversample_by(oversample_by)
  if oversample_by == 'grade' and oversample:
    oversample = 1.0
  counts = _counts(manifest, 'train')
  largest = max(counts)
  if oversample:
    total = sum(max(n, oversample * largest) for n in counts if n)
  else:
    total = sum(counts)
  return max(1, math.ceil(total / batch_size))


def _records(records_dir: str, split: str, image_size: int) -> tf.data.Dataset:
  files = tfrecords.shard_paths(records_dir, split)
  ds = tf.data.TFRecordDataset(files)
  return ds.map(lambda s: decode(s, image_size), num_parallel_calls=tf.data.AUTOTUNE)


def mix_up(image: tf.Tensor, label: tf.Tensor, num_classes: int, alpha: float,
           seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Mixup (Zhang et al., 2018) within one batch.

  Photograph i is blended with photograph n-1-i of the same batch (the batch in reverse
  order; batches are already shuffled and class-mixed), with its own weight
  lam ~ Beta(alpha, alpha); labels are blended with the same weights.

  Args:
    image: float32 (n, h, w, 3).
    label: int (n,) class indices.
    num_classes: Length of the label vectors returned.
    alpha: Beta parameter, > 0; small values (0.2) keep most blends close to one photograph.
      Where lam is 0.5 exactly, the soft label is a tie, which the metrics count as class 0
      (`training.metrics.hard_labels`).
    seed: Stateless seed, int (2,).

  Returns:
    Blended images (n, h, w, 3) and soft labels, float32 (n, num_classes).
  """
  n = tf.shape(image)[0]
  seeds = tf.random.experimental.stateless_split(seed, 3)
  g1 = tf.random.stateless_gamma([n], seeds[0], alpha=alpha)
  g2 = tf.random.stateless_gamma([n], seeds[1], alpha=alpha)
  # Beta(alpha, alpha) as g1 / (g1 + g2). For alpha below about 0.1 both draws can be held
  # at float32's smallest normal value, which would give exactly 0.5 where Beta puts its
  # mass near 0 and 1: those photographs get 0 or 1 at random instead.
  lam = g1 / (g1 + g2)
  floor = np.finfo(np.float32).tiny
  coin = tf.cast(tf.random.stateless_uniform([n], seeds[2]) < 0.5, tf.float32)
  lam = tf.where((g1 <= floor) & (g2 <= floor), coin, lam)
  onehot = tf.one_hot(label, num_classes, dtype=tf.float32)
  mixed_image = (lam[:, None, None, None] * image
                 + (1.0 - lam)[:, None, None, None] * tf.reverse(image, [0]))
  mixed_label = lam[:, None] * onehot + (1.0 - lam)[:, None] * tf.reverse(onehot, [0])
  return mixed_image, mixed_label


def make_dataset(records_dir: str, split: str, batch_size: int = 16,
                 oversample: float | None = 1.0, augment: bool = True,
                 augmentation: augment_lib.Augmentation | None = None, seed: int = 0,
                 mixup: float = 0.0, oversample_by: str = 'class',
                 with_info: bool = False) -> tf.data.Dataset:
  """Batched dataset of one split.

  Args:
    records_dir: Folder written by `tfrecords.build_tfrecords`.
    split: 'train' (infinite, shuffled, oversampled, augmented), 'val' or 'test'
      (one pass, in record order).
    batch_size: Examples per batch.
    oversample: Oversampling target of the training split (`class_weights`).
    augment: Augment training images.
    augmentation: Ranges of the augmentation; default `augment.Augmentation()`, whose
      fields gin sets (`augment.Augmentation.rotation = 90.0`).
    seed: Seed of shuffling, class sampling, augmentation and mixup.
    mixup: Beta parameter of mixup (`mix_up`) on the training split; 0 is off.
    oversample_by: 'class' applies `oversample` to the classes; 'grade' to the DR grades
      (1.0: every grade drawn equally often, whatever class it belongs to).
    with_info: Yield (image, label, info) with info = {'grade', 'name'}; else
      (image, label).

  Returns:
    The dataset; images are float32 in [0, 1], labels int32 class indices, or with mixup
    float32 class probabilities (batch, classes).
  """
  checks.check_number('mixup', mixup, low=0, note='0 is off')
  if mixup and split != 'train':
    raise ValueError(f'mixup is for the training split only, got {mixup!r} for {split!r}')
  check_oversample_by(oversample_by)
  manifest = tfrecords.read_manifest(records_dir)
  image_size = manifest['params']['image_size']
  ds = _records(records_dir, split, image_size)
  aug = None
  if split == 'train':
    if oversample_by == 'class':
      key, groups, counts = 'label', list(range(len(manifest['class_names']))), _counts(
          manifest, split)
    else:
      key, (groups, counts) = 'grade', _grade_counts(manifest, split)
    weights = class_weights(counts, oversample)
    streams, stream_weights = [], []
    for c, n, w in zip(groups, counts, weights):
      if n == 0:
        continue
      # Decoded photographs of each class (or grade) are cached in memory (about 200 kB
      # each at 256 px), so PNG decoding happens once per run, not once per epoch.
      stream = ds.filter(lambda ex, c=c: tf.equal(ex[key], c)).cache()
      streams.append(stream.shuffle(n, seed=seed + c, reshuffle_each_iteration=True)
                     .repeat())
      stream_weights.append(w)
    ds = tf.data.Dataset.sample_from_datasets(streams, stream_weights, seed=seed,
                                              stop_on_empty_dataset=False)
    if augment:
      aug = augmentation or augment_lib.Augmentation()
  elif split not in ('val', 'test'):
    raise ValueError(f'unknown split {split!r}; use train, val or test')

  def finish(index, ex):
    image = ex['image']
    if aug is not None:
      # Each photograph's augmentation seed is (seed, its position in the stream). The
      # training stream is infinite, so every batch is full and batch `index` holds
      # positions index * batch_size onwards, whatever the batch size.
      first = index * batch_size
      positions = tf.range(first, first + tf.shape(image, out_type=tf.int64)[0])
      seeds = tf.stack([tf.fill(tf.shape(positions), tf.cast(seed, tf.int64)), positions], 1)
      image = augment_lib.tf_augment_batch(image, seeds, aug)
    image, label = to_float(image), ex['label']
    if mixup:
      mix_seed = tf.random.experimental.stateless_fold_in(
          tf.constant([seed, _MIXUP_STREAM], tf.int64), index)
      image, label = mix_up(image, label, len(manifest['class_names']), mixup, mix_seed)
    if with_info:
      return image, label, dict(grade=ex['grade'], name=ex['name'])
    return image, label

  ds = ds.batch(batch_size, drop_remainder=False).enumerate()
  ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def split_hashes(records_dir: str, split: str) -> dict[str, str]:
  """{SHA-256 of the source file: photograph name} for one split, without decoding images."""
  keys = {k: FEATURES[k] for k in (tfrecords.HASH_KEY, tfrecords.NAME_KEY)}
  files = tfrecords.shard_paths(records_dir, split)
  if not files:
    return {}
  ds = tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, keys))
  return {ex[tfrecords.HASH_KEY].decode(): ex[tfrecords.NAME_KEY].decode()
          for ex in ds.as_numpy_iterator()}


def labels_of(records_dir: str, split: str) -> np.ndarray:
  """Labels of one split in record order (the order `make_dataset` yields)."""
  ds = _records(records_dir, split, tfrecords.read_manifest(records_dir)['params']['image_size'])
  return np.array([int(ex['label']) for ex in ds.as_numpy_iterator()], dtype=np.int32)

"""tf.data pipelines: oversampling, augmentation only on train, one pass over val/test."""

import os
import sys
import threading

import cv2
import numpy as np
import pytest

from input_pipeline import augment
from input_pipeline import datasets
from input_pipeline import tfrecords


def test_class_weights():
  assert datasets.class_weights([30, 70], 1.0) == pytest.approx([0.5, 0.5])
  assert datasets.class_weights([30, 70], None) == pytest.approx([0.3, 0.7])
  assert datasets.class_weights([30, 70], 0.5) == pytest.approx([35 / 105, 70 / 105])
  with pytest.raises(ValueError, match='oversample'):
    datasets.class_weights([1, 2], 2.0)


@pytest.mark.parametrize('oversample, target', [(1.0, 0.5), (0.6, None), (None, None)])
def test_oversampling_reaches_target_ratio(synthetic_records, oversample, target):
  manifest = tfrecords.read_manifest(str(synthetic_records))
  counts = [manifest['counts']['train']['per_class'][c] for c in manifest['class_names']]
  if target is None:
    target = datasets.class_weights(counts, oversample)[0]
  ds = datasets.make_dataset(str(synthetic_records), 'train', batch_size=32,
                             oversample=oversample, augment=False, seed=0)
  labels = np.concatenate([y.numpy() for _, y in ds.take(60)])
  assert abs(np.mean(labels == 0) - target) < 0.03
  natural = counts[0] / sum(counts)
  if oversample == 1.0:
    assert abs(natural - 0.5) > 0.05  # the synthetic set is not balanced by itself


@pytest.mark.parametrize('oversample', [1.0, 0.5])
def test_grade_sampling_reaches_grade_weights(synthetic_records, oversample):
  manifest = tfrecords.read_manifest(str(synthetic_records))
  per_grade = manifest['counts']['train']['per_grade']
  grades = sorted(int(g) for g in per_grade)
  counts = [per_grade[str(g)] for g in grades]
  target = datasets.class_weights(counts, oversample)
  ds = datasets.make_dataset(str(synthetic_records), 'train', batch_size=32,
                             oversample=oversample, augment=False, seed=0,
                             oversample_by='grade', with_info=True)
  drawn = np.concatenate([info['grade'].numpy() for _, _, info in ds.take(60)])
  share = [np.mean(drawn == g) for g in grades]
  assert share == pytest.approx(target, abs=0.03)
  # The rarest grade is drawn far more often than its share of the photographs.
  rarest = min((n, i) for i, n in enumerate(counts) if n)[1]
  assert share[rarest] > 2 * counts[rarest] / sum(counts)
  # An epoch has the steps of a class-balanced one, whatever the grade target.
  assert datasets.steps_per_epoch(manifest, 4, oversample, 'grade') == \
      datasets.steps_per_epoch(manifest, 4, 1.0)
  assert datasets.steps_per_epoch(manifest, 4, None, 'grade') == \
      datasets.steps_per_epoch(manifest, 4, None)
  with pytest.raises(ValueError, match='oversample_by'):
    datasets.make_dataset(str(synthetic_records), 'train', oversample_by='grades')


def test_eval_splits_in_order_each_photograph_once(synthetic_records):
  manifest = tfrecords.read_manifest(str(synthetic_records))
  n = manifest['counts']['test']['total']
  ds = datasets.make_dataset(str(synthetic_records), 'test', batch_size=5, with_info=True)
  names = [name for _, _, info in ds for name in info['name'].numpy()]
  assert len(names) == n == len(set(names))  # 12 with batch 5: no dropped remainder
  again = [name for _, _, info in ds for name in info['name'].numpy()]
  assert names == again
  images = np.concatenate([x.numpy() for x, _ in
                           datasets.make_dataset(str(synthetic_records), 'test')])
  assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
  np.testing.assert_array_equal(datasets.labels_of(str(synthetic_records), 'test'),
                                np.concatenate([y.numpy() for _, y in ds.map(
                                    lambda x, y, i: (x, y))]))


def test_augmentation_seeded_and_train_only(synthetic_records):
  def first_batch(**kwargs):
    ds = datasets.make_dataset(str(synthetic_records), 'train', batch_size=8, **kwargs)
    return next(iter(ds))[0].numpy()
  a, b = first_batch(seed=3), first_batch(seed=3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, first_batch(seed=4))
  plain = first_batch(seed=3, augment=False)
  assert not np.array_equal(a, plain)
  val = [x.numpy() for x, _ in datasets.make_dataset(str(synthetic_records), 'val')]
  val_again = [x.numpy() for x, _ in datasets.make_dataset(str(synthetic_records), 'val')]
  np.testing.assert_array_equal(np.concatenate(val), np.concatenate(val_again))


def test_each_photograph_gets_its_own_augmentation_whatever_the_batch_size(synthetic_records):
  # Augmentation runs on whole batches, but photograph i of the training stream is always
  # augmented with seed (seed, i): regrouping the stream changes nothing.
  def stream(batch_size, batches, **kwargs):
    ds = datasets.make_dataset(str(synthetic_records), 'train', batch_size=batch_size,
                               seed=5, **kwargs)
    return np.concatenate([x.numpy() for x, _ in ds.take(batches)])
  by_8, by_16 = stream(8, 4), stream(16, 2)
  np.testing.assert_array_equal(by_8, by_16)
  plain = np.round(stream(8, 4, augment=False) * 255).astype(np.uint8)
  expected = np.stack([augment.augment_image(image, np.array([5, i]), augment.Augmentation())
                       for i, image in enumerate(plain)]).astype(np.float32) / 255.0
  np.testing.assert_array_equal(by_8, expected)
  assert len({image.tobytes() for image in by_8}) == len(by_8)


def test_mixup_blends_each_photograph_with_its_mirror_in_the_batch(synthetic_records):
  def first_batch(**kwargs):
    ds = datasets.make_dataset(str(synthetic_records), 'train', batch_size=16, seed=2,
                               augment=False, **kwargs)
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()
  plain, labels = first_batch()
  assert labels.dtype == np.int32 and labels.shape == (16,)  # mixup off: class indices
  mixed, soft = first_batch(mixup=0.4)
  assert soft.shape == (16, 2) and soft.dtype == np.float32
  np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
  # Weight of each photograph's own label; where both photographs of a pair share a label,
  # the weight cannot be read back from the labels, and the label stays one-hot.
  differs = labels != labels[::-1]
  assert differs.any() and (~differs).any()
  lam = soft[np.arange(16), labels]
  assert 0.0 < lam[differs].min() and lam[differs].max() < 1.0
  assert len(np.unique(lam[differs])) > 1  # one weight per photograph, not per batch
  np.testing.assert_array_equal(soft[~differs], np.eye(2, dtype=np.float32)[labels[~differs]])
  expected = lam[:, None, None, None] * plain + (1 - lam)[:, None, None, None] * plain[::-1]
  np.testing.assert_allclose(mixed[differs], expected[differs], atol=1e-5)
  again, soft_again = first_batch(mixup=0.4)
  np.testing.assert_array_equal(mixed, again)
  np.testing.assert_array_equal(soft, soft_again)
  with pytest.raises(ValueError, match='mixup'):
    datasets.make_dataset(str(synthetic_records), 'val', mixup=0.4)


def test_mixup_with_a_tiny_alpha_keeps_photographs_nearly_whole():
  # Beta(0.01, 0.01) puts its mass near 0 and 1. Both gamma draws behind it are often held
  # at float32's smallest value; that must not turn into blends of exactly one half.
  import tensorflow as tf
  labels = tf.constant([0, 1] * 128)  # every photograph's partner has the other label
  images = tf.random.stateless_uniform([256, 4, 4, 3], seed=[1, 2])
  _, soft = datasets.mix_up(images, labels, 2, 0.01, tf.constant([3, 4], tf.int64))
  lam = soft.numpy()[np.arange(256), labels.numpy()]
  assert not np.any(lam == 0.5)
  assert np.mean(np.abs(lam - 0.5) > 0.45) > 0.9
  assert 0.2 < np.mean(lam > 0.5) < 0.8


def test_augment_image_transforms():
  image = np.zeros((64, 64, 3), np.uint8)
  image[10:20, 40:50] = 200  # a bright patch in the top-right quadrant
  only_hflip = augment.Augmentation(rotation=0, shift=0, zoom=0, shear=0,
                                    horizontal_flip=True, vertical_flip=False,
                                    brightness=0, contrast=0)
  outs = [augment.augment_image(image, np.array([0, i]), only_hflip) for i in range(20)]
  flipped = [o for o in outs if o[10:20, 14:24].mean() > 150]
  unchanged = [o for o in outs if np.array_equal(o, image)]
  assert flipped and unchanged and len(flipped) + len(unchanged) == 20
  nothing = augment.Augmentation(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False,
                                 vertical_flip=False, brightness=0, contrast=0)
  np.testing.assert_array_equal(augment.augment_image(image, np.array([0, 1]), nothing), image)
  rotated = augment.augment_image(image, np.array([0, 1]),
                                  augment.Augmentation(rotation=180, shift=0, zoom=0, shear=0,
                                                       horizontal_flip=False,
                                                       vertical_flip=False, brightness=0,
                                                       contrast=0))
  assert rotated.shape == image.shape and rotated.sum() > 0
  assert not np.array_equal(rotated, image)


def test_geometric_augmentation_is_one_bilinear_warp_of_the_rgb_image():
  # The four-channel warp is a speed-up only: every pixel must equal a plain 3-channel
  # bilinear warp with the same random matrix, so results do not depend on it.
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
  geometry = augment.Augmentation(brightness=0, contrast=0)
  for i in range(20):
    seed = np.array([4, i])
    matrix = augment.affine_matrix(np.random.default_rng(seed.tolist()), 96, geometry)
    expected = cv2.warpAffine(image, matrix, (96, 96), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    np.testing.assert_array_equal(augment.augment_image(image, seed, geometry), expected)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='per-thread priority: Linux')
def test_augmenting_threads_get_the_lowest_priority_but_not_the_callers_thread():
  before = os.getpriority(os.PRIO_PROCESS, 0)
  images = np.zeros((2, 16, 16, 3), np.uint8)
  augment.tf_augment_batch(images, np.array([[0, 0], [0, 1]]), augment.Augmentation())  # eager
  assert os.getpriority(os.PRIO_PROCESS, 0) == before
  seen = {}

  def worker():
    augment.lower_thread_priority()
    seen['niceness'] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

  thread = threading.Thread(target=worker)
  thread.start()
  thread.join()
  assert seen['niceness'] == augment.BACKGROUND_NICENESS


def test_cutout_paints_one_square_of_retina_and_changes_nothing_else():
  rng = np.random.default_rng(1)
  image = np.zeros((64, 64, 3), np.uint8)
  image[8:56, 8:56] = rng.integers(60, 200, (48, 48, 3), dtype=np.uint8)  # the "retina"
  image[8:56, 4:8] = 6  # a dim strip of surround (grey <= 10), left as it is
  retina = np.zeros((64, 64), bool)
  retina[8:56, 8:56] = True
  mean = image[retina].mean(axis=0)
  no_change = dict(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False,
                   vertical_flip=False, brightness=0, contrast=0)
  erased = 0
  for i in range(40):
    out = augment.augment_image(image, np.array([7, i]), augment.Augmentation(**no_change,
                                                                               erase=0.5))
    changed = np.any(out != image, axis=-1)
    assert not (changed & ~retina).any()  # the surround, dim strip included, is untouched
    if not changed.any():
      continue
    erased += 1
    rows, cols = np.nonzero(changed)
    assert rows.max() - rows.min() < 33 and cols.max() - cols.min() < 33  # side <= 0.5 * 64
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    np.testing.assert_allclose(out[box][retina[box]], np.broadcast_to(mean, (
        retina[box].sum(), 3)), atol=1)  # one square, all of it in the retina's colour
  assert 10 < erased < 30  # with probability 1/2
  # Cutout draws after everything else: with the default ranges, a photograph differs from
  # its cutout-free twin (same seed) inside one square only.
  for i in range(10):
    seed = np.array([8, i])
    plain = augment.augment_image(image, seed, augment.Augmentation())
    cut = augment.augment_image(image, seed, augment.Augmentation(erase=0.25))
    rows, cols = np.nonzero(np.any(plain != cut, axis=-1))
    if rows.size:
      assert rows.max() - rows.min() < 17 and cols.max() - cols.min() < 17
      assert len(np.unique(cut[rows, cols], axis=0)) == 1
  with pytest.raises(ValueError, match='erase'):
    augment.Augmentation(erase=1.5)


def test_brightness_keeps_surround_black():
  image = np.zeros((32, 32, 3), np.uint8)
  image[8:24, 8:24] = 100
  bright = augment.Augmentation(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False,
                                vertical_flip=False, brightness=0.5, contrast=0.5)
  outs = [augment.augment_image(image, np.array([1, i]), bright) for i in range(10)]
  assert all(o[:8].max() == 0 for o in outs)
  assert len({int(o[16, 16, 0]) for o in outs}) > 3


def test_contrast_is_monotonic_on_dark_pixels():
  image = np.zeros((32, 32, 3), np.uint8)
  image[4:28, 4:28] = np.linspace(12, 250, 24).astype(np.uint8)[None, :, None]
  strong = augment.Augmentation(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False,
                                vertical_flip=False, brightness=0.3, contrast=0.6)
  for i in range(10):
    row = augment.augment_image(image, np.array([2, i]), strong)[16, 4:28, 0].astype(int)
    assert np.all(np.diff(row) >= 0), row  # darker stays darker: no mirrored values


def test_contrast_pivots_on_the_retina_mean_not_the_surround():
  # Half the image is black surround; contrast alone must leave the retina's mean level
  # where it was (a pivot that counted the surround would darken the retina).
  image = np.zeros((32, 32, 3), np.uint8)
  image[:, 16:] = np.tile(np.array([60, 200], np.uint8), 256).reshape(32, 16, 1)
  contrast_only = augment.Augmentation(rotation=0, shift=0, zoom=0, shear=0,
                                       horizontal_flip=False, vertical_flip=False,
                                       brightness=0.0, contrast=0.5)
  factors = set()
  for i in range(10):
    out = augment.augment_image(image, np.array([3, i]), contrast_only)
    assert out[:, :16].max() == 0
    assert abs(out[:, 16:].mean() - 130.0) <= 0.5
    factors.add(int(out[0, 16, 0]))
  assert len(factors) > 3  # the contrast did change


def test_retina_mean_matches_opencv_masked_mean():
  rng = np.random.default_rng(0)
  for image in [np.zeros((16, 16, 3), np.uint8),
                *(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(20))]:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, mask = cv2.threshold(gray, 10, 255, cv2.THRESH_BINARY)
    retina = augment._retina_grey(image)
    np.testing.assert_array_equal(retina > 0, mask > 0)
    assert augment._mean_of_nonzero(retina) == cv2.mean(gray, mask=mask)[0]

"""Training-time augmentation, fused into one resampling per image.

Rotation, shift, zoom, shear and both flips are composed into a single affine matrix
and applied with one `cv2.warpAffine` (bilinear, black fill like the fundus surround,
on four channels: OpenCV's faster path); brightness and contrast are one saturating
`cv2.addWeighted` on the same pixels. Cutout (`erase`, off by default) comes last.
Chaining seven Keras random layers resamples the image once per geometric layer and
runs about four times slower on two CPU cores (see benchmarks/input_pipeline.py).

Randomness is seeded per image (`seed` is a pair of integers), so a pipeline with a
fixed seed yields the same augmented images on every run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading

import cv2
import gin
import numpy as np
import tensorflow as tf

from utils import checks


@gin.configurable(module='augment')
@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Ranges of the random transformations; zero switches one off.

  Attributes:
    rotation: Maximum rotation, degrees (uniform in [-rotation, rotation]).
    shift: Maximum shift, as a fraction of the image side, per axis.
    zoom: Maximum relative zoom (scale uniform in [1 - zoom, 1 + zoom]).
    shear: Maximum shear angle, degrees.
    horizontal_flip: Flip left-right with probability 1/2.
    vertical_flip: Flip top-bottom with probability 1/2.
    brightness: Maximum relative brightness change (gain in [1 - b, 1 + b]).
    contrast: Maximum relative contrast change (factor in [1 - c, 1 + c]).
    erase: Cutout (DeVries and Taylor, 2017): with probability 1/2, the retina pixels of
      one square are painted in the mean colour of the retina. Its side is round(u * image
      side) pixels, u uniform in [0, erase), at least 1; it lies wholly inside the image, at
      a uniform position. The surround stays black. 0 (the default) switches it off; at
      most 1.
  """
  rotation: float = 180.0
  shift: float = 0.05
  zoom: float = 0.1
  shear: float = 5.0
  horizontal_flip: bool = True
  vertical_flip: bool = True
  brightness: float = 0.2
  contrast: float = 0.2
  erase: float = 0.0

  def __post_init__(self):
    # Beyond these the transformations turn over or black out the retina: a half-side
    # shift moves it out of view, zoom or gain 1 shrinks it to a point or to black.
    # (name, low, high, whether high itself is allowed)
    for name, low, high, closed in (('rotation', 0.0, 180.0, True), ('shift', 0.0, 0.5, False),
                                    ('zoom', 0.0, 1.0, False), ('shear', 0.0, 90.0, False),
                                    ('brightness', 0.0, 1.0, False),
                                    ('contrast', 0.0, 1.0, False), ('erase', 0.0, 1.0, True)):
      checks.check_number(f'augment.Augmentation.{name}', getattr(self, name), low=low,
                          high=high, high_open=not closed, note='0 is off')


def affine_matrix(rng: np.random.Generator, size: int, aug: Augmentation) -> np.ndarray:
  """A random 2x3 matrix mapping input pixel coordinates to output coordinates."""
  angle = math.radians(rng.uniform(-aug.rotation, aug.rotation)) if aug.rotation else 0.0
  scale = rng.uniform(1 - aug.zoom, 1 + aug.zoom) if aug.zoom else 1.0
  shear = math.radians(rng.uniform(-aug.shear, aug.shear)) if aug.shear else 0.0
  flip_x = -1.0 if aug.horizontal_flip and rng.random() < 0.5 else 1.0
  flip_y = -1.0 if aug.vertical_flip and rng.random() < 0.5 else 1.0
  tx, ty = (rng.uniform(-aug.shift, aug.shift, size=2) * size if aug.shift
            else (0.0, 0.0))
  cos, sin = math.cos(angle), math.sin(angle)
  rotate = np.array([[cos, -sin], [sin, cos]])
  shear_m = np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
  linear = scale * rotate @ shear_m @ np.diag([flip_x, flip_y])
  centre = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
  offset = centre - linear @ centre + np.array([tx, ty])
  return np.hstack([linear, offset[:, None]]).astype(np.float32)


def augment_image(image: np.ndarray, seed: np.ndarray, aug: Augmentation) -> np.ndarray:
  """Augments one square uint8 RGB image; pure function of (image, seed, aug)."""
  rng = np.random.default_rng([int(s) for s in np.asarray(seed).ravel()])
  size = image.shape[0]
  matrix = affine_matrix(rng, size, aug)
  # Warped as four channels: OpenCV's vectorised bilinear path for 4-channel uint8 gives the
  # same pixels as the 3-channel one in about half the time, conversions included.
  out = cv2.warpAffine(cv2.cvtColor(image, cv2.COLOR_RGB2RGBA), matrix,
                       (image.shape[1], size), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
  out = cv2.cvtColor(out, cv2.COLOR_RGBA2RGB)
  gain = rng.uniform(1 - aug.brightness, 1 + aug.brightness) if aug.brightness else 1.0
  factor = rng.uniform(1 - aug.contrast, 1 + aug.contrast) if aug.contrast else 1.0
  retina = None
  if gain != 1.0 or factor != 1.0:
    # Contrast around the mean of the retina (non-black pixels), so the surround
    # stays black: out = (x * gain - m) * factor + m with m the retina mean * gain.
    retina = _retina_grey(out)
    mean = _mean_of_nonzero(retina) * gain
    # addWeighted saturates to [0, 255] (convertScaleAbs would mirror negatives).
    out = cv2.addWeighted(out, gain * factor, out, 0.0, mean * (1.0 - factor))
    out = cv2.copyTo(out, retina)  # the surround back to black
  if aug.erase and rng.random() < 0.5:
    side = max(1, int(round(rng.uniform(0.0, aug.erase) * size)))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    if retina is None:
      retina = _retina_grey(out)
    fill = np.round(cv2.mean(out, mask=retina)[:3]).astype(np.uint8)
    square = out[top:top + side, left:left + side]  # a view: painted in place
    square[retina[top:top + side, left:left + side] > 0] = fill
  return out


def _retina_grey(image: np.ndarray) -> np.ndarray:
  """Grey levels of an RGB image on its retina (grey above 10), 0 on the surround.

  Non-zero exactly where the retina is, so it also serves as the retina's mask.
  """
  gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  return cv2.threshold(gray, 10, 255, cv2.THRESH_TOZERO)[1]


def _mean_of_nonzero(gray: np.ndarray) -> float:
  """`cv2.mean(gray, mask=gray)` to the last bit (sum times the reciprocal of the count,
  0 for an empty mask), in a third of its time."""
  count = cv2.countNonZero(gray)
  return cv2.sumElems(gray)[0] * (1.0 / count) if count else 0.0


def augment_batch(images: np.ndarray, seeds: np.ndarray, aug: Augmentation) -> np.ndarray:
  """`augment_image` on each image of a uint8 batch; image i uses seeds[i].

  OpenCV runs on the calling thread only (process-wide setting): tf.data already augments
  batches in parallel, and OpenCV's own worker threads, on 256-pixel images, cost more CPU
  than they save and compete with the training step for the cores.
  """
  cv2.setNumThreads(1)
  out = np.empty_like(images)
  for i, (image, seed) in enumerate(zip(images, seeds)):
    out[i] = augment_image(image, seed, aug)
  return out


# Niceness of the tf.data threads that augment (Linux): the lowest priority.
BACKGROUND_NICENESS = 19


def lower_thread_priority() -> bool:
  """Gives the calling thread the lowest CPU priority; not the main thread; Linux only.

  On a machine with few cores the training step's kernels split their work evenly over
  all cores, so an augmentation thread that takes a core from them stalls the whole step.
  At the lowest priority it runs when a core is idle instead; with idle cores to spare it
  runs as before. Images do not change (each is a pure function of its seed). Returns
  whether the priority was changed (not when it is already that low).
  """
  if not sys.platform.startswith('linux'):
    return False  # elsewhere the id of a thread is not a target of setpriority
  if threading.current_thread() is threading.main_thread():
    return False  # eager calls from user code: leave the caller's priority alone
  tid = threading.get_native_id()
  try:
    if os.getpriority(os.PRIO_PROCESS, tid) >= BACKGROUND_NICENESS:
      return False
    os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICENESS)  # per thread on Linux
  except OSError:
    return False
  return True


def _augment_in_pipeline(images: np.ndarray, seeds: np.ndarray,
                         aug: Augmentation) -> np.ndarray:
  lower_thread_priority()
  return augment_batch(images, seeds, aug)


def tf_augment_batch(images: tf.Tensor, seeds: tf.Tensor, aug: Augmentation) -> tf.Tensor:
  """`augment_batch` as a TensorFlow op on a uint8 batch (batch, size, size, 3).

  One Python call per batch rather than per image: the call's fixed cost (the GIL, copying
  tensors to NumPy and back) is paid once for the batch, and each image still gets the
  augmentation its own seed gives it, so batching does not change the images. The tf.data
  threads that run it get the lowest CPU priority (`lower_thread_priority`).
  """
  out = tf.numpy_function(lambda x, s: _augment_in_pipeline(x, s, aug), [images, seeds],
                          tf.uint8, stateful=False)
  out.set_shape(images.shape)
  return out

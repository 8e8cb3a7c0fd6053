"""Grad-CAM (Selvaraju et al. 2017) with `tf.GradientTape`, and the helpers methods share.

    heatmap = ReLU(sum_k alpha_k A_k),  alpha_k = mean_{i,j} d score_c / d A_k[i, j]

A is the output of the explained layer (default `models.LAST_CONV_LAYER`, 8x8 at 256 px
for the simplified ResNetV2) and score_c the pre-softmax logit of class c (the layer
'logits'; the model output when there is none). The map is upsampled bilinearly to the
input size and divided by its maximum. The gradient model is built by calling the
layers again (`visualization.capture`), so models that nest a backbone work too.

  heatmaps = grad_cam(model, images)                 # (batch, H, W) in [0, 1]
  heatmaps = grad_cam(model, images, class_index=1)  # explain RDR whatever the prediction
"""

from __future__ import annotations

from typing import Any, Iterator

import cv2
import keras
import numpy as np
import tensorflow as tf

from visualization import capture
from visualization import registry

DEFAULT_BATCH_SIZE = 16


def as_batch(images: Any) -> np.ndarray:
  """float32 (batch, height, width, channels) from a batch or a single image.

  Raises:
    ValueError: Not an image or a batch of images.
  """
  array = np.asarray(images, dtype=np.float32)
  if array.ndim == 3:
    array = array[None]
  if array.ndim != 4 or array.shape[0] == 0:
    raise ValueError(f'images must have shape (batch, height, width, channels), '
                     f'got {array.shape}')
  return array


def class_indices(class_index: int | np.ndarray | None, scores: np.ndarray) -> np.ndarray:
  """The class to explain for each image.

  Args:
    class_index: None (the predicted class, argmax of `scores`), an int, or one int per
      image.
    scores: (batch, num_classes) scores of the images.

  Returns:
    int32 array of shape (batch,).

  Raises:
    ValueError: Wrong number of indices, or an index outside [0, num_classes).
  """
  batch, num_classes = scores.shape
  if class_index is None:
    return np.argmax(scores, axis=-1).astype(np.int32)
  index = np.asarray(class_index)
  if index.ndim == 0:
    index = np.full(batch, int(index))
  if index.shape != (batch,):
    raise ValueError(f'class_index must be an int or {batch} ints, got shape {index.shape}')
  if index.min() < 0 or index.max() >= num_classes:
    raise ValueError(f'class_index {index.tolist()} out of range for {num_classes} classes')
  return index.astype(np.int32)


def normalise(maps: np.ndarray) -> np.ndarray:
  """Divides each non-negative map by its maximum; an all-zero map stays zero."""
  maps = np.maximum(np.asarray(maps, dtype=np.float32), 0.0)
  peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
  return np.where(peak > 0, maps / np.maximum(peak, 1e-12), 0.0).astype(np.float32)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of each map with `sigma` pixels (none when sigma <= 0)."""
  if sigma <= 0:
    return maps
  return np.stack([cv2.GaussianBlur(m, (0, 0), sigmaX=sigma) for m in maps])


def chunks(count: int, size: int) -> Iterator[slice]:
  """Consecutive slices of at most `size` covering range(count)."""
  for start in range(0, count, size):
    yield slice(start, min(count, start + size))


def predicted_scores(model: keras.Model, images: np.ndarray,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
  """Target scores (logits when the model has them) of every image."""
  scorer = capture.capture_model(model, [])
  return np.concatenate([capture.run(scorer, images[s])[0].numpy()
                         for s in chunks(len(images), batch_size)])


def _grad_cam_batch(gradient_model: keras.Model, images: np.ndarray,
                    class_index: int | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """Unnormalised Grad-CAM maps at the feature map's size, and the classes explained."""
  x = tf.convert_to_tensor(images)
  with tf.GradientTape() as tape:
    scores, features = capture.run(gradient_model, x)
    index = class_indices(class_index, scores.numpy())
    target = tf.gather(scores, index, axis=1, batch_dims=1)
  if len(features.shape) != 4:
    raise ValueError(f'Grad-CAM needs a 4-D feature map, got shape {features.shape}')
  grads = tape.gradient(target, features)
  weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
  cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
  return cam.numpy(), index


@registry.register('grad_cam')
def grad_cam(model: keras.Model, images: Any,
             class_index: int | np.ndarray | None = None,
             layer_name: str | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
  """Grad-CAM heatmaps of a batch of images.

  Args:
    model: A functional or sequential classifier (backbones may be nested inside).
    images: float32 in [0, 1], (batch, height, width, 3) or one (height, width, 3).
    class_index: None for each image's predicted class, an int for all images, or one
      int per image.
    layer_name: Layer whose output is explained; None finds it
      (`models.LAST_CONV_LAYER` wherever nested, else `models.find_last_conv_layer`).
    batch_size: Images per forward/backward pass.

  Returns:
    float32 heatmaps in [0, 1] of shape (batch, height, width).

  Raises:
    ValueError: Bad images, class index or layer.
  """
  images = as_batch(images)
  index = None if class_index is None else class_indices(
      class_index, np.zeros((len(images), _num_classes(model)), np.float32))
  gradient_model = capture.capture_model(model, [layer_name or capture.default_layer(model)])
  maps = []
  for s in chunks(len(images), batch_size):
    cam, _ = _grad_cam_batch(gradient_model, images[s], None if index is None else index[s])
    resized = tf.image.resize(cam[..., None], images.shape[1:3], method='bilinear')
    maps.append(resized.numpy()[..., 0])
  return normalise(np.concatenate(maps))


def _num_classes(model: keras.Model) -> int:
  return int(model.outputs[0].shape[-1])

"""Pixel-level attribution methods beside Grad-CAM, all in the registry.

  'saliency'              max over channels of |d score_c / d x|  (Simonyan et al. 2014)
  'integrated_gradients'  sum over channels of x * mean_{a} d score_c / d x (a x), a on a
                          midpoint Riemann path from the black image to x, positive part
                          (Sundararajan et al. 2017)
  'guided_grad_cam'       |guided backpropagation| (ReLUs pass only positive gradients of
                          positive inputs) times the Grad-CAM map (Selvaraju et al. 2017)

score_c is the logit of class c (pre-softmax), as for Grad-CAM. Gradients with respect
to pixels are speckled at the scale of single pixels; each map is blurred with a Gaussian
of `sigma` pixels (default 1/128 of the side: 2 px at 256) and divided by its maximum,
so every method returns (batch, height, width) in [0, 1].
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from visualization import capture
from visualization import grad_cam as grad_cam_lib
from visualization import registry

DEFAULT_IG_STEPS = 32
# Blur of pixel-level maps, as a fraction of the image side.
DEFAULT_SIGMA_FRACTION = 1.0 / 128


def _sigma(sigma: float | None, images: np.ndarray) -> float:
  return DEFAULT_SIGMA_FRACTION * images.shape[1] if sigma is None else float(sigma)


def _input_gradients(scorer: keras.Model, images: np.ndarray,
                     index: np.ndarray) -> np.ndarray:
  """d score[index] / d images for one batch, scores from `scorer(images)[0]`."""
  x = tf.convert_to_tensor(images)
  with tf.GradientTape() as tape:
    tape.watch(x)
    scores = capture.run(scorer, x)[0]
    target = tf.gather(scores, index, axis=1, batch_dims=1)
  return tape.gradient(target, x).numpy()


def _explained_classes(model: keras.Model, images: np.ndarray,
                       class_index: int | np.ndarray | None, batch_size: int) -> np.ndarray:
  """The class explained for each image (the predicted one when class_index is None)."""
  if class_index is None:
    return grad_cam_lib.class_indices(
        None, grad_cam_lib.predicted_scores(model, images, batch_size))
  num_classes = int(model.outputs[0].shape[-1])
  return grad_cam_lib.class_indices(class_index,
                                    np.zeros((len(images), num_classes), np.float32))


def _gradient_maps(scorer: keras.Model, images: np.ndarray, index: np.ndarray,
                   batch_size: int, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """reduce(input gradients, images) -> (batch, H, W), over chunks of the batch."""
  return np.concatenate([
      reduce(_input_gradients(scorer, images[s], index[s]))
      for s in grad_cam_lib.chunks(len(images), batch_size)])


@registry.register('saliency')
def saliency(model: keras.Model, images: Any, class_index: int | np.ndarray | None = None,
             sigma: float | None = None,
             batch_size: int = grad_cam_lib.DEFAULT_BATCH_SIZE) -> np.ndarray:
  """Vanilla gradient saliency: max over channels of |d score_c / d x|, blurred.

  Args:
    model: The classifier.
    images: float32 in [0, 1], (batch, H, W, 3) or one image.
    class_index: See `grad_cam.grad_cam`.
    sigma: Gaussian blur in pixels; None for 1/128 of the side.
    batch_size: Images per pass.

  Returns:
    float32 heatmaps in [0, 1] of shape (batch, H, W).
  """
  images = grad_cam_lib.as_batch(images)
  index = _explained_classes(model, images, class_index, batch_size)
  scorer = capture.capture_model(model, [])
  maps = _gradient_maps(scorer, images, index, batch_size,
                        lambda g: np.abs(g).max(axis=-1))
  return grad_cam_lib.normalise(grad_cam_lib.smooth(maps, _sigma(sigma, images)))


@registry.register('integrated_gradients')
def integrated_gradients(model: keras.Model, images: Any,
                         class_index: int | np.ndarray | None = None,
                         steps: int = DEFAULT_IG_STEPS, sigma: float | None = None,
                         batch_size: int = 64) -> np.ndarray:
  """Integrated gradients from a black baseline, positive part summed over channels.

  Args:
    model: The classifier.
    images: float32 in [0, 1], (batch, H, W, 3) or one image.
    class_index: See `grad_cam.grad_cam`.
    steps: Points on the straight path from black to the image (midpoint rule).
    sigma: Gaussian blur in pixels; None for 1/128 of the side.
    batch_size: Path points per forward/backward pass.

  Returns:
    float32 heatmaps in [0, 1] of shape (batch, H, W).

  Raises:
    ValueError: steps < 1, or see `grad_cam.grad_cam`.
  """
  if steps < 1:
    raise ValueError(f'integrated_gradients steps must be >= 1, got {steps}')
  images = grad_cam_lib.as_batch(images)
  index = _explained_classes(model, images, class_index, batch_size)
  scorer = capture.capture_model(model, [])
  alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)
  maps = []
  for image, c in zip(images, index):
    path = alphas[:, None, None, None] * image[None]  # black baseline: 0 + a (x - 0)
    grads = _gradient_maps(scorer, path, np.full(steps, c), batch_size, lambda g: g)
    attribution = (image * grads.mean(axis=0)).sum(axis=-1)
    maps.append(np.maximum(attribution, 0.0))
  return grad_cam_lib.normalise(grad_cam_lib.smooth(np.stack(maps), _sigma(sigma, images)))


@tf.custom_gradient
def _guided_relu(x):
  def grad(upstream):
    return upstream * tf.cast(upstream > 0, upstream.dtype) * tf.cast(x > 0, x.dtype)
  return tf.nn.relu(x), grad


class _GuidedReLU(keras.layers.Layer):
  """ReLU whose gradient passes only where both the input and the gradient are > 0."""

  def call(self, inputs):
    return _guided_relu(inputs)

  def compute_output_spec(self, inputs):
    return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)


def _is_plain_relu(layer: keras.layers.Layer) -> bool:
  if isinstance(layer, keras.layers.ReLU):
    return (layer.max_value is None and not layer.negative_slope and not layer.threshold)
  return (isinstance(layer, keras.layers.Activation)
          and getattr(layer.activation, '__name__', '') == 'relu')


def _guided_override(layer: keras.layers.Layer) -> Callable[..., Any] | None:
  return _GuidedReLU(name=f'{layer.name}_guided') if _is_plain_relu(layer) else None


@registry.register('guided_grad_cam')
def guided_grad_cam(model: keras.Model, images: Any,
                    class_index: int | np.ndarray | None = None,
                    layer_name: str | None = None, sigma: float | None = None,
                    batch_size: int = grad_cam_lib.DEFAULT_BATCH_SIZE) -> np.ndarray:
  """Guided Grad-CAM: |guided backpropagation| (max over channels) times Grad-CAM.

  Guided backpropagation replaces every plain ReLU layer (`keras.layers.ReLU` or
  `Activation('relu')`); ReLUs fused into other layers (`Conv2D(activation='relu')`)
  keep their ordinary gradient.

  Args:
    model: The classifier.
    images: float32 in [0, 1], (batch, H, W, 3) or one image.
    class_index: See `grad_cam.grad_cam`.
    layer_name: Layer of the Grad-CAM factor; see `grad_cam.grad_cam`.
    sigma: Gaussian blur in pixels; None for 1/128 of the side.
    batch_size: Images per pass.

  Returns:
    float32 heatmaps in [0, 1] of shape (batch, H, W).
  """
  images = grad_cam_lib.as_batch(images)
  index = _explained_classes(model, images, class_index, batch_size)
  cam = grad_cam_lib.grad_cam(model, images, index, layer_name, batch_size)
  guided = capture.capture_model(model, [], layer_override=_guided_override)
  maps = _gradient_maps(guided, images, index, batch_size, lambda g: np.abs(g).max(axis=-1))
  return grad_cam_lib.normalise(grad_cam_lib.smooth(maps * cam, _sigma(sigma, images)))

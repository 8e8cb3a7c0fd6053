"""Analytical FLOP count of a Keras model's forward pass.

Counts the multiply-adds of convolution and dense kernels, two FLOPs each, from the layers'
configurations and output shapes (no tracing, no profiler). Bias additions, batch
normalisation, activations, pooling and residual additions are not counted: together they
are about 1% of the total for our ResNetV2 and are not what FLOP budgets usually mean.
Nested models are counted recursively.
"""

from __future__ import annotations

import math

import keras


def _spatial_size(shape) -> int:
  """Product of the dimensions between batch and channels (channels-last)."""
  return math.prod(int(d) for d in shape[1:-1])


def _layer_flops(layer: keras.layers.Layer) -> int:
  """FLOPs of one sample through `layer`; 0 for layers that are not counted."""
  if isinstance(layer, keras.Model):
    return sum(_layer_flops(sub) for sub in layer.layers)
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    cin = int(layer.input.shape[-1])
    k = math.prod(layer.kernel_size)
    return 2 * _spatial_size(layer.output.shape) * cin * layer.depth_multiplier * k
  if isinstance(layer, keras.layers.SeparableConv2D):
    cin = int(layer.input.shape[-1])
    spatial = _spatial_size(layer.output.shape)
    k = math.prod(layer.kernel_size)
    depthwise = spatial * cin * layer.depth_multiplier * k
    pointwise = spatial * cin * layer.depth_multiplier * layer.filters
    return 2 * (depthwise + pointwise)
  if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
    cin = int(layer.input.shape[-1])
    k = math.prod(layer.kernel_size)
    return 2 * _spatial_size(layer.output.shape) * layer.filters * k * cin // layer.groups
  if isinstance(layer, keras.layers.Dense):
    cin = int(layer.input.shape[-1])
    # Dense on a (batch, ..., features) tensor applies the kernel at every leading position.
    positions = math.prod(int(d) for d in layer.output.shape[1:-1])
    return 2 * positions * cin * layer.units
  return 0


def count_flops(model: keras.Model, batch_size: int = 1) -> int:
  """Returns the forward-pass FLOPs of `model` for `batch_size` images.

  Args:
    model: A built functional or sequential Keras model (static input shape).
    batch_size: Number of images in the batch.

  Returns:
    2 x (multiply-adds of all convolution and dense kernels) x batch_size.
  """
  return batch_size * sum(_layer_flops(layer) for layer in model.layers)

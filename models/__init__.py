"""Model builders, looked up by name through a registry.

  model = models.build_model('resnet_v2', input_shape=(256, 256, 3), num_classes=2)
  layer = models.find_last_conv_layer(model)   # 'final_relu' for our ResNetV2

Importing this package imports every architecture module, so their builders are registered.
"""

from __future__ import annotations

import os

import keras

from models import resnet_v2  # pylint: disable=unused-import  (registers 'resnet_v2')
from models.registry import available, build_model, check_config, register
from models.resnet_v2 import LAST_CONV_LAYER, RESNET_V2_SPECS, build_resnet_v2

__all__ = [
    'LAST_CONV_LAYER', 'RESNET_V2_SPECS', 'available', 'build_model', 'build_resnet_v2',
    'check_config', 'find_last_conv_layer', 'load_model_file', 'register',
]


def load_model_file(path: str) -> keras.Model:
  """A saved .keras model, without its optimizer.

  Raises:
    FileNotFoundError, PermissionError: As for any file.
    ValueError: The file is not a readable Keras model (truncated, corrupt, or of another
      Keras version), naming it; Keras itself says 'File not found' for most of these.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such model file')
  try:
    return keras.models.load_model(path, compile=False)
  except PermissionError:
    raise
  except Exception as e:  # a truncated or foreign file fails in many ways
    raise ValueError(f'{path} is not a readable Keras model file: corrupt, truncated or '
                     f'written by another version ({type(e).__name__})') from e


def _output_rank(layer: keras.layers.Layer) -> int | None:
  try:
    output = layer.output
  except (AttributeError, ValueError):  # Layer never called, or called more than once.
    return None
  if isinstance(output, (list, tuple)):
    return None
  return len(output.shape)


def find_last_conv_layer(model: keras.Model) -> str:
  """Returns the name of the layer whose output Grad-CAM should explain.

  `LAST_CONV_LAYER` when the model has it; otherwise the last top-level layer with a 4-D
  (batch, height, width, channels) output. A nested sub-model (e.g. a `keras.applications`
  backbone) counts as one layer, so its own name is returned.

  Args:
    model: A functional or sequential Keras model.

  Returns:
    A name usable with `model.get_layer(name)`.

  Raises:
    ValueError: If no layer other than the input has a 4-D output.
  """
  names = [layer.name for layer in model.layers]
  if LAST_CONV_LAYER in names:
    return LAST_CONV_LAYER
  for layer in reversed(model.layers):
    if isinstance(layer, keras.layers.InputLayer):
      continue
    if _output_rank(layer) == 4:
      return layer.name
  raise ValueError(f'model {model.name!r} has no layer with a 4-D output')

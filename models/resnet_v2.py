"""Simplified ResNetV2 (pre-activation residual units), built from a spec table.

Layer graph for the default spec 'simplified' on 256x256x3 inputs (Keras functional API, so
Grad-CAM can read any intermediate output by layer name):

  image            256x256x3   float32 in [0, 1]; the model does no further scaling
  stem_conv        128x128x16  7x7, stride 2, no bias
  stem_bn, stem_relu
  stem_pool        64x64x16    3x3 max-pool, stride 2 (left out with stem_pool=False)
  block_group_l1   32x32x16    one pre-activation unit per stage, first one strided
  block_group_l2   16x16x32
  block_group_l3   8x8x64
  final_bn, final_relu  8x8x64  <- LAST_CONV_LAYER, the feature map Grad-CAM explains
                               (stem_pool=False: stages at 64, 32 and 16 px, final 16x16)
  avg_pool         64          global average (head_pool='avg', the default); 'max':
                               max_pool instead; 'avg_max': avg_pool and max_pool
                               concatenated by concat_pool, 128
  dropout          (only when dropout > 0)
  logits           num_classes  Dense, linear
  predictions      num_classes  softmax (float32)

A pre-activation unit `block_group_l{i}_block{j}`:

  x -> bn1 -> relu1 -+-> conv1 (3x3, stride s) -> bn2 -> relu2 -> conv2 (3x3) -> add
                     |                                                           ^
                     +-> shortcut (1x1 conv, stride s) when the shape changes ----+
  x ------------------ identity otherwise ----------------------------------------+

The projection shortcut reads the pre-activated input, as in He et al. 2016 ("Identity
Mappings in Deep Residual Networks") and `keras.applications.ResNet50V2`. Convolutions carry
no bias, since a batch normalisation always follows them (directly or in the next unit).

No Rescaling/Normalization layer: the input pipeline already delivers [0, 1] floats and
`stem_bn` standardises the first feature map, so a fixed input scaling would add nothing.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import gin
import keras

from models import registry
from utils import checks
from utils import gin_utils

LAST_CONV_LAYER = 'final_relu'

# name -> ((filters, blocks, first stride), ...) for each stage, as in Model Garden's
# RESNET_SPECS. 'simplified' is the reference architecture.
RESNET_V2_SPECS: dict[str, tuple[tuple[int, int, int], ...]] = {
    'simplified': ((16, 1, 2), (32, 1, 2), (64, 1, 2)),
    'simplified_wide': ((32, 1, 2), (64, 1, 2), (128, 1, 2)),
    'simplified_deep': ((16, 2, 2), (32, 2, 2), (64, 2, 2)),
}

_BN_EPSILON = 1.001e-5
# How gin names the builder's parameters in error messages.
_PARAMETER = 'resnet_v2.build_resnet_v2'


def _regularizer(weight_decay: float) -> keras.regularizers.Regularizer | None:
  return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def _conv(filters: int, kernel_size: int, strides: int, name: str,
          weight_decay: float) -> keras.layers.Conv2D:
  return keras.layers.Conv2D(
      filters, kernel_size, strides=strides, padding='same', use_bias=False,
      kernel_initializer='he_normal', kernel_regularizer=_regularizer(weight_decay),
      name=name)


def _bn(name: str, momentum: float) -> keras.layers.BatchNormalization:
  return keras.layers.BatchNormalization(momentum=momentum, epsilon=_BN_EPSILON, name=name)


def _preact_unit(x: keras.KerasTensor, filters: int, strides: int, name: str,
                 bn_momentum: float,
                 weight_decay: float) -> keras.KerasTensor:
  """One pre-activation residual unit (BN -> ReLU -> conv, twice) named `name`_*."""
  preact = _bn(f'{name}_bn1', bn_momentum)(x)
  preact = keras.layers.ReLU(name=f'{name}_relu1')(preact)
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv(filters, 1, strides, f'{name}_shortcut', weight_decay)(preact)
  else:
    shortcut = x
  y = _conv(filters, 3, strides, f'{name}_conv1', weight_decay)(preact)
  y = _bn(f'{name}_bn2', bn_momentum)(y)
  y = keras.layers.ReLU(name=f'{name}_relu2')(y)
  y = _conv(filters, 3, 1, f'{name}_conv2', weight_decay)(y)
  return keras.layers.Add(name=f'{name}_add')([shortcut, y])


def resolve_stages(spec: str,
                   widths: Sequence[int] | None = None,
                   blocks_per_stage: Sequence[int] | int | None = None
                   ) -> list[tuple[int, int, int]]:
  """Returns the (filters, blocks, first stride) of each stage after the overrides.

  Args:
    spec: A key of `RESNET_V2_SPECS`.
    widths: Filters per stage, replacing the spec's; one value per stage.
    blocks_per_stage: Units per stage, replacing the spec's: one value per stage, or one
      int for all stages.

  Returns:
    One (filters, blocks, stride) tuple per stage.

  Raises:
    ValueError: For an unknown spec, or overrides whose length does not match the spec's
      number of stages, or non-positive values.
  """
  checks.check_choice(f'{_PARAMETER}.spec', spec, sorted(RESNET_V2_SPECS))
  stages = RESNET_V2_SPECS[spec]
  num_stages = len(stages)
  if isinstance(blocks_per_stage, numbers.Integral):
    checks.check_number(f'{_PARAMETER}.blocks_per_stage', blocks_per_stage, low=1, whole=True)
    blocks_per_stage = [blocks_per_stage] * num_stages
  chosen = {}
  for what, value, default in (('widths', widths, [s[0] for s in stages]),
                               ('blocks_per_stage', blocks_per_stage, [s[1] for s in stages])):
    if value is None:
      chosen[what] = default
      continue
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != num_stages:
      one = ' be one whole number or' if what == 'blocks_per_stage' else ''
      raise ValueError(f'{_PARAMETER}.{what} must{one} list {num_stages} whole numbers '
                       f'(spec {spec!r} has {num_stages} stages), got {value!r}')
    for i, v in enumerate(value):
      checks.check_number(f'{_PARAMETER}.{what}[{i}]', v, low=1, whole=True)
    chosen[what] = list(value)
  filters, blocks = chosen['widths'], chosen['blocks_per_stage']
  return [(f, b, s[2]) for f, b, s in zip(filters, blocks, stages)]


HEAD_POOLS = ('avg', 'max', 'avg_max')


def _head_pool(x, head_pool: str):
  """The feature map pooled to one vector per image (see `build_resnet_v2`)."""
  pooled = []
  if head_pool in ('avg', 'avg_max'):
    pooled.append(keras.layers.GlobalAveragePooling2D(name='avg_pool')(x))
  if head_pool in ('max', 'avg_max'):
    pooled.append(keras.layers.GlobalMaxPooling2D(name='max_pool')(x))
  if len(pooled) == 1:
    return pooled[0]
  return keras.layers.Concatenate(name='concat_pool')(pooled)


def _check_params(spec: str, widths: Sequence[int] | None,
                  blocks_per_stage: Sequence[int] | int | None, stem_filters: int,
                  head_pool: str, dropout: float, weight_decay: float,
                  bn_momentum: float, **unused) -> list[tuple[int, int, int]]:
  """Checks the builder's parameters by their gin names; returns the resolved stages."""
  del unused
  stages = resolve_stages(spec, widths, blocks_per_stage)
  checks.check_number(f'{_PARAMETER}.stem_filters', stem_filters, low=1, whole=True)
  checks.check_choice(f'{_PARAMETER}.head_pool', head_pool, HEAD_POOLS)
  checks.check_number(f'{_PARAMETER}.dropout', dropout, low=0, high=1, high_open=True,
                      note='0 is none')
  checks.check_number(f'{_PARAMETER}.weight_decay', weight_decay, low=0, note='0 is none')
  checks.check_number(f'{_PARAMETER}.bn_momentum', bn_momentum, low=0, high=1, high_open=True)
  return stages


def check_config() -> None:
  """Checks the gin-configured parameters of `build_resnet_v2` without building it."""
  _check_params(**gin_utils.configured_arguments(build_resnet_v2))


@registry.register('resnet_v2', check=check_config)
@gin.configurable(module='resnet_v2', denylist=['input_shape', 'num_classes'])
def build_resnet_v2(input_shape: Sequence[int],
                    num_classes: int,
                    spec: str = 'simplified',
                    widths: Sequence[int] | None = None,
                    blocks_per_stage: Sequence[int] | int | None = None,
                    stem_filters: int = 16,
                    stem_pool: bool = True,
                    head_pool: str = 'avg',
                    dropout: float = 0.0,
                    weight_decay: float = 0.0,
                    bn_momentum: float = 0.9) -> keras.Model:
  """Builds a simplified ResNetV2 classifier (see the module docstring for the graph).

  Args:
    input_shape: (height, width, channels) of one image; values in [0, 1].
    num_classes: Number of classes of the softmax head.
    spec: A key of `RESNET_V2_SPECS`.
    widths: Filters per stage, overriding the spec's.
    blocks_per_stage: Residual units per stage (a sequence, or one int for all stages),
      overriding the spec's.
    stem_filters: Filters of the 7x7 stem convolution.
    stem_pool: Keep the stem's 3x3 max-pool. Without it every stage sees twice the
      resolution (final map 16x16 on 256x256 inputs) at 4 times the stages' FLOPs (2.6
      times the whole 'simplified_wide' net's: the stem convolution is unchanged).
    head_pool: How the final feature map becomes one vector per image: 'avg' (global
      average), 'max' (global maximum, which a few strong local responses such as
      isolated lesions can set on their own) or 'avg_max' (both, concatenated).
    dropout: Dropout rate before the classifier; no dropout layer when 0.
    weight_decay: L2 factor on every conv and dense kernel (loss += wd * sum(w**2));
      no regulariser when 0.
    bn_momentum: Momentum of the batch-norm moving statistics. 0.9 (not Keras' 0.99)
      because runs on IDRiD-sized data take only a few hundred steps, too few for
      0.99 statistics to settle, which makes validation predictions constant.

  Returns:
    An uncompiled functional `keras.Model` named 'resnet_v2_<spec>' mapping images to
    class probabilities; the layer 'logits' holds the pre-softmax scores.

  Raises:
    ValueError: For an unknown spec, inconsistent overrides or invalid rates/sizes.
  """
  checks.check_number('num_classes', num_classes, low=1, whole=True)
  stages = _check_params(spec, widths, blocks_per_stage, stem_filters, head_pool, dropout,
                         weight_decay, bn_momentum)

  inputs = keras.Input(shape=tuple(input_shape), dtype='float32', name='image')
  x = _conv(stem_filters, 7, 2, 'stem_conv', weight_decay)(inputs)
  x = _bn('stem_bn', bn_momentum)(x)
  x = keras.layers.ReLU(name='stem_relu')(x)
  if stem_pool:
    x = keras.layers.MaxPooling2D(3, strides=2, padding='same', name='stem_pool')(x)

  for i, (filters, blocks, stride) in enumerate(stages, start=1):
    for j in range(1, blocks + 1):
      x = _preact_unit(x, filters, stride if j == 1 else 1,
                       f'block_group_l{i}_block{j}', bn_momentum, weight_decay)

  x = _bn('final_bn', bn_momentum)(x)
  x = keras.layers.ReLU(name=LAST_CONV_LAYER)(x)
  x = _head_pool(x, head_pool)
  if dropout > 0:
    x = keras.layers.Dropout(dropout, name='dropout')(x)
  x = keras.layers.Dense(
      num_classes, kernel_regularizer=_regularizer(weight_decay), name='logits')(x)
  outputs = keras.layers.Activation('softmax', dtype='float32', name='predictions')(x)
  return keras.Model(inputs, outputs, name=f'resnet_v2_{spec}')

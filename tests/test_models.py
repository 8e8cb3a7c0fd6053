"""Tests for models/: the registry, the spec-table ResNetV2, find_last_conv_layer, FLOPs."""

from __future__ import annotations

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from models import registry
from models.flops import count_flops
from visualization import grad_cam

# Stages as (filters, blocks, first stride), written out here independently of the spec
# table so that a change to RESNET_V2_SPECS shows up as a test failure.
_SIMPLIFIED = ((16, 1, 2), (32, 1, 2), (64, 1, 2))
_WIDE = ((32, 1, 2), (64, 1, 2), (128, 1, 2))


def _expected_params(stages, num_classes, in_channels=3, stem=16):
  """Parameter count from the architecture: bias-free convs, BN = 4 values per channel."""
  total = 7 * 7 * in_channels * stem + 4 * stem  # stem_conv, stem_bn
  c = stem
  for filters, blocks, first_stride in stages:
    for j in range(blocks):
      stride = first_stride if j == 0 else 1
      total += 4 * c + 3 * 3 * c * filters  # bn1, conv1
      total += 4 * filters + 3 * 3 * filters * filters  # bn2, conv2
      if stride != 1 or c != filters:
        total += c * filters  # 1x1 projection shortcut
      c = filters
  return total + 4 * c + c * num_classes + num_classes  # final_bn, logits


def _images(batch, size=256, seed=0):
  return np.random.default_rng(seed).random((batch, size, size, 3), dtype=np.float32)


@pytest.mark.parametrize('spec, stages, expected', [
    ('simplified', _SIMPLIFIED, 80_050),
    ('simplified_wide', _WIDE, 305_586),
])
def test_shapes_softmax_and_parameter_count(spec, stages, expected):
  model = models.build_resnet_v2((256, 256, 3), 2, spec=spec)
  assert model.name == f'resnet_v2_{spec}'
  assert models.RESNET_V2_SPECS[spec] == stages
  assert _expected_params(stages, 2) == expected
  assert model.count_params() == expected

  probs = model.predict(_images(3), verbose=0)
  assert probs.shape == (3, 2)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  assert model.get_layer(models.LAST_CONV_LAYER).output.shape == (None, 8, 8, stages[-1][0])


def test_stem_parameter_count():
  model = models.build_model()
  assert model.get_layer('stem_conv').count_params() == 7 * 7 * 3 * 16
  assert model.get_layer('stem_bn').count_params() == 4 * 16


def test_stable_layer_names_and_grad_cam_access():
  model = models.build_model()
  names = {layer.name for layer in model.layers}
  expected = {'stem_conv', 'stem_bn', 'stem_relu', 'stem_pool', 'final_bn', 'final_relu',
              'avg_pool', 'logits', 'predictions'}
  for i in (1, 2, 3):
    for part in ('bn1', 'relu1', 'conv1', 'bn2', 'relu2', 'conv2', 'shortcut', 'add'):
      expected.add(f'block_group_l{i}_block1_{part}')
  assert expected <= names
  assert not {'dropout', 'max_pool', 'concat_pool'} & names  # head_pool 'avg': average only
  assert models.LAST_CONV_LAYER == 'final_relu'
  assert models.find_last_conv_layer(model) == 'final_relu'
  assert model.get_layer('stem_pool').output.shape == (None, 64, 64, 16)
  assert model.get_layer('block_group_l1_block1_add').output.shape == (None, 32, 32, 16)

  grad_model = keras.Model(model.inputs, [model.get_layer('final_relu').output,
                                          model.get_layer('logits').output])
  images = tf.constant(_images(2, seed=1))
  with tf.GradientTape() as tape:
    conv, logits = grad_model(images)
    score = logits[:, 1]
  grads = tape.gradient(score, conv)
  assert conv.shape == (2, 8, 8, 64)
  assert grads.shape == conv.shape
  np.testing.assert_allclose(tf.nn.softmax(logits).numpy(),
                             model(images).numpy(), rtol=1e-5, atol=1e-6)


def test_without_stem_pool_maps_double_and_stage_flops_quadruple():
  pooled = models.build_resnet_v2((256, 256, 3), 2, spec='simplified_wide')
  gin.parse_config('resnet_v2.build_resnet_v2.stem_pool = False')
  model = models.build_model(input_shape=(256, 256, 3), num_classes=2)
  assert 'stem_pool' not in {layer.name for layer in model.layers}
  assert model.get_layer('block_group_l1_block1_add').output.shape == (None, 64, 64, 16)
  assert model.get_layer(models.LAST_CONV_LAYER).output.shape == (None, 16, 16, 64)
  assert model.count_params() == _expected_params(_SIMPLIFIED, 2)  # a pool has no weights
  wide = models.build_resnet_v2((256, 256, 3), 2, spec='simplified_wide', stem_pool=False)
  # The stem convolution's FLOPs stay; everything after it runs on 4 times the pixels.
  stem = 2 * 128 * 128 * 7 * 7 * 3 * 16
  assert (count_flops(wide) - stem) / (count_flops(pooled) - stem) == pytest.approx(4, rel=0.02)
  assert models.find_last_conv_layer(model) == 'final_relu'


@pytest.mark.parametrize('head_pool, features', [('max', 64), ('avg_max', 128)])
def test_head_pool_max_and_avg_max(head_pool, features):
  gin.parse_config(f"resnet_v2.build_resnet_v2.head_pool = '{head_pool}'")
  model = models.build_model(input_shape=(256, 256, 3), num_classes=2)
  # Only the classifier grows: 64 more inputs to 'logits' per pooled vector beyond one.
  assert model.count_params() == _expected_params(_SIMPLIFIED, 2) + (features - 64) * 2
  assert model.get_layer('logits').input.shape == (None, features)
  images = _images(2, seed=3)
  probe = keras.Model(model.input, [model.get_layer('final_relu').output,
                                    model.get_layer('logits').input])
  conv, pooled = (t.numpy() for t in probe(images))
  expected = [conv.max(axis=(1, 2))]
  if head_pool == 'avg_max':  # the average first, then the maximum
    expected.insert(0, conv.mean(axis=(1, 2)))
  np.testing.assert_allclose(pooled, np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)
  # Grad-CAM still reads the same feature map and gets a map for every image.
  maps = grad_cam.grad_cam(model, images)
  assert maps.shape[0] == 2 and np.all(np.isfinite(maps))


def test_unknown_head_pool_names_the_parameter():
  with pytest.raises(ValueError, match=r'head_pool.*\'mean\''):
    models.build_resnet_v2((64, 64, 3), 2, head_pool='mean')


def test_identity_shortcut_when_shape_is_kept():
  model = models.build_resnet_v2((64, 64, 3), 2, blocks_per_stage=2)
  names = {layer.name for layer in model.layers}
  assert 'block_group_l3_block2_add' in names
  assert 'block_group_l3_block2_shortcut' not in names  # stride 1, same width
  assert model.count_params() == _expected_params(
      tuple((f, 2, s) for f, _, s in _SIMPLIFIED), 2)
  assert model.count_params() == models.build_resnet_v2(
      (64, 64, 3), 2, spec='simplified_deep').count_params()


def test_five_class_head_and_dropout():
  model = models.build_model(num_classes=5)
  assert model.output.shape == (None, 5)
  assert model.get_layer('logits').units == 5
  assert model.count_params() == _expected_params(_SIMPLIFIED, 5)

  gin.parse_config('resnet_v2.build_resnet_v2.dropout = 0.3')
  model = models.build_model(input_shape=(64, 64, 3), num_classes=5)
  assert model.get_layer('dropout').rate == pytest.approx(0.3)
  probs = model.predict(_images(2, size=64), verbose=0)
  assert probs.shape == (2, 5)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_weight_decay_adds_one_loss_per_kernel():
  plain = models.build_resnet_v2((64, 64, 3), 2)
  assert not plain.losses
  model = models.build_resnet_v2((64, 64, 3), 2, weight_decay=1e-4)
  kernels = [l for l in model.layers if isinstance(l, (keras.layers.Conv2D,
                                                       keras.layers.Dense))]
  assert len(kernels) == 1 + 3 * 3 + 1  # stem, 3 stages x (conv1, conv2, shortcut), logits
  assert len(model.losses) == len(kernels)


def test_gin_overrides_widths_and_model_choice():
  gin.parse_config("""
      resnet_v2.build_resnet_v2.widths = [8, 16, 32]
      models.build_model.num_classes = 5
      models.build_model.input_shape = (128, 128, 3)
  """)
  model = models.build_model()
  assert model.get_layer('final_relu').output.shape == (None, 4, 4, 32)
  assert model.get_layer('block_group_l1_block1_conv1').filters == 8
  assert model.output.shape == (None, 5)
  assert model.count_params() == _expected_params(((8, 1, 2), (16, 1, 2), (32, 1, 2)), 5)


def test_invalid_overrides_are_errors():
  with pytest.raises(ValueError, match='simplified_wide'):
    models.build_resnet_v2((64, 64, 3), 2, spec='resnet1000')
  with pytest.raises(ValueError, match=r'widths must list 3 whole numbers .*got \[8, 16\]'):
    models.build_resnet_v2((64, 64, 3), 2, widths=[8, 16])
  with pytest.raises(ValueError, match='dropout'):
    models.build_resnet_v2((64, 64, 3), 2, dropout=1.0)
  with pytest.raises(ValueError, match=r'blocks_per_stage must be a whole number >= 1, got 0'):
    models.build_resnet_v2((64, 64, 3), 2, blocks_per_stage=0)
  with pytest.raises(ValueError, match=r'widths must list 3 whole numbers .*got 32'):
    models.build_resnet_v2((64, 64, 3), 2, widths=32)


def test_registry_lists_names_and_reaches_new_builders(monkeypatch):
  monkeypatch.setattr(registry, '_MODELS', dict(registry._MODELS))
  assert 'resnet_v2' in models.available()
  with pytest.raises(ValueError, match=r'unknown model .*no_such_net.*resnet_v2'):
    models.build_model(name='no_such_net')

  @models.register('tiny')
  def build_tiny(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name='tiny_conv')(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation='softmax')(x))

  assert models.available() == ['resnet_v2', 'tiny']
  model = models.build_model(name='tiny', input_shape=(32, 32, 3), num_classes=3)
  assert model.output.shape == (None, 3)
  assert models.find_last_conv_layer(model) == 'tiny_conv'
  with pytest.raises(ValueError, match='already registered'):
    models.register('tiny')(lambda input_shape, num_classes: None)


def test_find_last_conv_layer_returns_nested_backbone_name():
  backbone_in = keras.Input((32, 32, 3))
  backbone_out = keras.layers.Conv2D(8, 3, name='inner_conv')(backbone_in)
  backbone = keras.Model(backbone_in, backbone_out, name='backbone')
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
  model = keras.Model(inputs, keras.layers.Dense(2)(x))
  assert models.find_last_conv_layer(model) == 'backbone'

  flat = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
  with pytest.raises(ValueError, match='4-D'):
    models.find_last_conv_layer(flat)


def test_save_load_round_trip(tmp_path):
  model = models.build_model(input_shape=(64, 64, 3))
  rng = np.random.default_rng(2)
  for w in model.weights:  # Non-trivial BN statistics, so loading them is checked too.
    value = rng.normal(0.0, 0.1, size=w.shape)
    if 'variance' in w.path:
      value = np.abs(value) + 0.5
    w.assign(value.astype(np.float32))
  images = _images(2, size=64, seed=3)
  before = model.predict(images, verbose=0)

  path = tmp_path / 'm.keras'
  model.save(path)
  loaded = keras.models.load_model(path)
  assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
  np.testing.assert_array_equal(loaded.predict(images, verbose=0), before)


def test_count_flops_matches_hand_formula():
  model = models.build_model()
  macs = (128 * 128 * 16 * 7 * 7 * 3  # stem_conv
          + 32 * 32 * (16 * 9 * 16 + 16 * 9 * 16 + 16 * 16)  # l1: conv1, conv2, shortcut
          + 16 * 16 * (16 * 9 * 32 + 32 * 9 * 32 + 16 * 32)  # l2
          + 8 * 8 * (32 * 9 * 64 + 64 * 9 * 64 + 32 * 64)  # l3
          + 64 * 2)  # logits
  assert count_flops(model) == 2 * macs == 101_712_128
  assert count_flops(model, batch_size=16) == 16 * 2 * macs

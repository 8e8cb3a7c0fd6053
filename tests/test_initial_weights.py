"""Starting a run from an earlier one's weights (`train.init_weights`)."""

import json

import gin
import numpy as np
import pytest

import models
from tests.conftest import REPO_ROOT
from training import initial_weights
from training import run_dir as rd

DEBUG = 'configs/debug/debug.gin'


def _model(num_classes=2, spec='simplified', size=32):
  gin.bind_parameter('resnet_v2.build_resnet_v2.widths', [4, 8, 8])
  gin.bind_parameter('resnet_v2.build_resnet_v2.spec', spec)
  return models.build_model(input_shape=(size, size, 3), num_classes=num_classes)


def _weights(model):
  return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers
          if layer.weights}


def _equal(a, b):
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _trained_looking(model, seed=0):
  """`model` with every weight drawn at random (positive, so BN variances stay valid)."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
                       for w in layer.get_weights()])
  return model


def test_every_layer_is_copied_and_a_head_of_another_shape_stays_fresh(tmp_path):
  source = _trained_looking(_model(num_classes=5))
  path = str(tmp_path / 'grades.keras')
  source.save(path)
  target = _model(num_classes=2, size=48)  # another input size is fine: global pooling
  before = _weights(target)
  assert initial_weights.load_into(target, path) == ['logits']
  after, theirs = _weights(target), _weights(source)
  for name in after:
    if name == 'logits':
      assert _equal(after[name], before[name])
    else:
      assert _equal(after[name], theirs[name]), name
      assert not _equal(after[name], before[name]), name

  same = _model(num_classes=5)
  assert initial_weights.load_into(same, path) == []
  x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
  np.testing.assert_array_equal(same(x, training=False), source(x, training=False))


def test_another_architecture_is_refused_and_changes_nothing(tmp_path):
  path = str(tmp_path / 'deep.keras')
  _model(spec='simplified_deep').save(path)
  target = _model(spec='simplified')
  before = _weights(target)
  with pytest.raises(ValueError, match='train.init_weights: .*deep.keras holds another '
                     'architecture'):
    initial_weights.load_into(target, path)
  assert all(_equal(w, before[n]) for n, w in _weights(target).items())


def test_a_nested_model_is_not_taken_for_the_head(tmp_path):
  import keras
  path = str(tmp_path / 'wrapped.keras')
  keras.Sequential([keras.Input((32, 32, 3)), _model(num_classes=5)]).save(path)
  target = keras.Sequential([keras.Input((32, 32, 3)), _model(num_classes=2)])
  with pytest.raises(ValueError, match='holds another architecture'):
    initial_weights.load_into(target, path)


def test_what_init_weights_may_name(tmp_path):
  # A folder with a checkpoint but no run.json is a model file, not a run to check.
  (tmp_path / 'copied' / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'copied' / rd.BEST_MODEL).write_bytes(b'')
  assert initial_weights.resolve(str(tmp_path / 'copied'), 0) == (
      str(tmp_path / 'copied' / rd.BEST_MODEL), None)
  (tmp_path / 'empty_run').mkdir()
  with pytest.raises(ValueError, match='without checkpoints/best.keras'):
    initial_weights.resolve(str(tmp_path / 'empty_run'), 0)
  with pytest.raises(ValueError, match='no such run folder or file .*seed_3'):
    initial_weights.resolve(str(tmp_path / 'seed_{seed}'), 3)
  (tmp_path / 'model.h5').write_bytes(b'not keras')
  with pytest.raises(ValueError, match='model.h5 is not a Keras model file'):
    initial_weights.resolve(str(tmp_path / 'model.h5'), 0)
  truncated = tmp_path / 'truncated.keras'
  truncated.write_bytes(b'PK\x03\x04 truncated')
  assert initial_weights.resolve(str(truncated), 0) == (str(truncated), None)
  with pytest.raises(ValueError, match='truncated.keras is not a readable Keras model'):
    initial_weights.load_into(_model(), str(truncated))


def _train(run, bindings, monkeypatch, tmp_path):
  from training import trainer
  from utils import entry
  monkeypatch.setenv('DR_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.chdir(REPO_ROOT)
  entry.parse_gin([DEBUG], ['train.epochs = 1', *bindings])
  try:
    return trainer.train(str(run))
  finally:
    gin.clear_config()


def test_a_run_starts_from_the_weights_of_another(tmp_path, monkeypatch):
  import keras
  source = tmp_path / 'runs' / 'seed_0'
  assert _train(source, [], monkeypatch, tmp_path)['status'] == 'completed'

  # At learning rate 0 nothing trainable moves, so the checkpoint holds the source's weights.
  run = tmp_path / 'started'
  info = _train(run, [f"train.init_weights = '{tmp_path}/runs/seed_{{seed}}'",
                      'train.learning_rate = 0.0'], monkeypatch, tmp_path)
  theirs = keras.models.load_model(source / rd.BEST_MODEL, compile=False)
  ours = keras.models.load_model(run / rd.BEST_MODEL, compile=False)
  for a, b in zip(theirs.trainable_weights, ours.trainable_weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  recorded = json.loads((run / rd.RUN_INFO).read_text())['init_weights']
  assert recorded == info['init_weights']
  assert recorded['file'] == str(source / rd.BEST_MODEL) and recorded['leakage_checked']
  assert recorded['fresh_layers'] == []

  # A bare model file: the weights load, but which photographs it saw cannot be checked.
  bare = tmp_path / 'elsewhere.keras'
  bare.write_bytes((source / rd.BEST_MODEL).read_bytes())
  info = _train(tmp_path / 'from_file', [f"train.init_weights = '{bare}'"], monkeypatch,
                tmp_path)
  assert info['init_weights']['leakage_checked'] is False
  assert info['init_weights']['sha256'] == recorded['sha256']

  # Another validation split: the source trained on some of its photographs.
  leaky = tmp_path / 'leaky'
  with pytest.raises(ValueError, match=r'train.init_weights: .*seed_0 saw \d+ of the '
                     'photographs this run validates on'):
    _train(leaky, [f"train.init_weights = '{source}'",
                   'tfrecords.build_tfrecords.split_seed = 1'], monkeypatch, tmp_path)
  assert not leaky.exists()

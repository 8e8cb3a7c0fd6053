"""Numeric parameters: a bad value is refused by name, before any work."""

import gin
import numpy as np
import pytest

from evaluation import evaluator
from evaluation import metrics
from input_pipeline import augment
from input_pipeline import synthetic
from input_pipeline import tfrecords
import models
from utils import checks


@pytest.mark.parametrize('value, bounds', [
    (0.0, dict(low=0)), (1, dict(low=0, high=1)), (0.5, dict(low=0, high=1, low_open=True,
                                                           high_open=True)),
    (3, dict(low=1, whole=True)), (np.int64(3), dict(low=1, whole=True)),
    (np.float32(0.2), dict(low=0, high=1)), (None, dict(low=0, none_ok=True)),
])
def test_accepts_numbers_within_bounds(value, bounds):
  checks.check_number('p', value, **bounds)


@pytest.mark.parametrize('value, bounds, said', [
    (-0.1, dict(low=0), 'p must be a number >= 0, got -0.1'),
    (0, dict(low=0, low_open=True), 'p must be a number > 0, got 0'),
    (1.0, dict(low=0, high=1, high_open=True), 'p must be a number in [0, 1), got 1.0'),
    (2, dict(high=1), 'p must be a number <= 1, got 2'),
    (float('nan'), dict(low=0), 'p must be a number >= 0, got nan'),
    (float('inf'), dict(low=0), 'p must be a number >= 0, got inf'),
    (True, dict(low=0, high=1), 'p must be a number in [0, 1], got True'),
    ('0.1', dict(low=0), "p must be a number >= 0, got '0.1'"),
    (2.0, dict(low=1, whole=True), 'p must be a whole number >= 1, got 2.0'),
    (None, dict(low=0), 'p must be a number >= 0, got None'),
    (-1, dict(low=0, none_ok=True, note='0 is off'),
     'p must be a number >= 0 (0 is off, or None), got -1'),
    (2**32, dict(low=0, high=2**32 - 1, whole=True),
     'p must be a whole number in [0, 4294967295], got 4294967296'),
    (10**400, dict(high=1, whole=True), f'p must be a whole number <= 1, got {10**400}'),
    (0, dict(low=0, low_open=True, none_ok=True, note='None is no limit'),
     'p must be a number > 0 (None is no limit), got 0'),
])
def test_refuses_by_name_with_the_range(value, bounds, said):
  with pytest.raises(ValueError) as error:
    checks.check_number('p', value, **bounds)
  assert str(error.value) == said


def test_nan_is_refused_where_range_checks_let_it_through_before():
  for field in ('rotation', 'shift', 'zoom', 'shear', 'brightness', 'contrast', 'erase'):
    with pytest.raises(ValueError, match=f'augment.Augmentation.{field} must be'):
      augment.Augmentation(**{field: float('nan')})
  with pytest.raises(ValueError, match='augment.Augmentation.erase'):
    augment.Augmentation(erase=True)
  with pytest.raises(ValueError, match='min_sensitivity'):
    metrics.check_threshold_rule('sensitivity', float('nan'))


def test_model_parameters_are_named_as_gin_binds_them():
  for kwargs, name in ((dict(dropout='x'), 'dropout'), (dict(weight_decay=-1e-4), 'weight_decay'),
                       (dict(stem_filters=0), 'stem_filters'),
                       (dict(bn_momentum=1.0), 'bn_momentum'),
                       (dict(widths=[8, 'a', 32]), r'widths\[1\]'),
                       (dict(blocks_per_stage=[1, 0, 1]), r'blocks_per_stage\[1\]')):
    with pytest.raises(ValueError, match=f'^resnet_v2.build_resnet_v2.{name} must be'):
      models.build_resnet_v2((64, 64, 3), 2, **kwargs)


def test_record_and_synthetic_parameters_fail_before_anything_is_written(tmp_path,
                                                                         synthetic_dir):
  out = tmp_path / 'tfr'
  for kwargs, name in ((dict(image_size='x'), 'image_size'), (dict(shard_size=0), 'shard_size'),
                       (dict(val_fraction=float('nan')), 'val_fraction'),
                       (dict(num_workers=-1), 'num_workers')):
    with pytest.raises(ValueError, match=f'^tfrecords.build_tfrecords.{name} must be'):
      tfrecords.build_tfrecords(str(synthetic_dir), str(out), **kwargs)
  for kwargs, name in ((dict(num_train='x'), 'num_train'), (dict(width=16), 'width'),
                       (dict(num_test=0), 'num_test'),  # a set the records would refuse
                       (dict(grade_probs=(1, 2)), 'grade_probs'),
                       (dict(grade_probs=(1, 0, -1, 0, 0)), r'grade_probs\[2\]'),
                       (dict(grade_probs=(0, 0, 0, 0, 0)), 'grade_probs')):
    with pytest.raises(ValueError, match=f'^synthetic.generate.{name} must'):
      synthetic.generate(str(tmp_path / 'synthetic'), **kwargs)
  assert not list(tmp_path.iterdir())


def test_evaluate_parameters_fail_before_the_run_is_read(tmp_path):
  # tmp_path holds no run: each error must come from the parameter, not from run.json.
  for kwargs, name in ((dict(batch_size=0), 'batch_size'), (dict(tta=2.5), 'tta'),
                       (dict(gradcam_galleries=-1), 'gradcam_galleries')):
    with pytest.raises(ValueError, match=f'^evaluate.{name} must be'):
      evaluator.evaluate(str(tmp_path), **kwargs)


def test_choices_are_named_with_what_is_allowed():
  checks.check_choice('p', 'a', ('a', 'b'))
  with pytest.raises(ValueError, match=r"^p must be one of \['a', 'b'\], got 'c'$"):
    checks.check_choice('p', 'c', ('a', 'b'))


def test_configured_model_and_records_are_checked_without_building_them():
  models.check_config()  # the defaults
  tfrecords.check_config()
  gin.parse_config('resnet_v2.build_resnet_v2.blocks_per_stage = [1, 1]')
  with pytest.raises(ValueError, match='blocks_per_stage must be one whole number or list 3 whole numbers'):
    models.check_config()
  gin.clear_config()
  gin.parse_config("models.build_model.name = 'resnet'")
  with pytest.raises(ValueError, match="unknown model 'resnet'"):
    models.check_config()
  gin.clear_config()
  gin.parse_config("models.build_model.name = ['resnet_v2']")  # a list, not a name
  with pytest.raises(ValueError, match=r"unknown model \['resnet_v2'\]"):
    models.check_config()
  gin.parse_config("tfrecords.build_tfrecords.contrast = ['clahe']")
  with pytest.raises(ValueError, match=r"tfrecords.build_tfrecords.contrast \['clahe'\]"):
    tfrecords.check_config()
  gin.clear_config()
  gin.parse_config('tfrecords.build_tfrecords.fold = 5')
  with pytest.raises(ValueError, match=r'build_tfrecords.fold must be a whole number in \[0, 4\]'):
    tfrecords.check_config()

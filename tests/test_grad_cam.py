"""Tests for visualization/: Grad-CAM, the attribution registry, overlays, galleries, explain."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
import visualization
from tests import fixtures_models
from visualization import attributions
from visualization import capture
from visualization import explain
from visualization import galleries
from visualization import grad_cam as grad_cam_lib
from visualization.grad_cam import grad_cam
from visualization import overlays
from visualization import registry

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 64


def _model(num_classes: int = 2, seed: int = 0) -> keras.Model:
  keras.utils.set_random_seed(seed)
  return models.build_model(input_shape=(SIZE, SIZE, 3), num_classes=num_classes)


def _images(batch: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random((batch, SIZE, SIZE, 3), dtype=np.float32)


def _reference_grad_cam(model: keras.Model, images: np.ndarray, class_index: int):
  """keras-io's recipe on the flat model, for comparison (coarse, unnormalised)."""
  flat = keras.Model(model.input, [model.get_layer(models.LAST_CONV_LAYER).output,
                                    model.get_layer('logits').output])
  with tf.GradientTape() as tape:
    features, logits = flat(images, training=False)
    score = logits[:, class_index]
  grads = tape.gradient(score, features)
  cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
                                 * features, axis=-1))
  return cam.numpy()


@pytest.fixture(scope='module')
def model() -> keras.Model:
  return _model()


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory) -> pathlib.Path:
  """The shrunk quickstart run, trained once per session (tests/fixtures_models.py)."""
  return fixtures_models.quickstart_run(tmp_path_factory)


def test_heatmap_shape_range_and_peak(model):
  maps = grad_cam(model, _images(3))
  assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
  assert maps.min() >= 0.0 and maps.max() <= 1.0
  assert np.allclose(maps.reshape(3, -1).max(axis=1), 1.0)


def test_matches_reference_computed_on_logits(model):
  images = _images(2)
  maps = grad_cam(model, images, class_index=1)
  cam = _reference_grad_cam(model, images, 1)
  expected = grad_cam_lib.normalise(
      tf.image.resize(cam[..., None], (SIZE, SIZE), method='bilinear').numpy()[..., 0])
  np.testing.assert_allclose(maps, expected, atol=1e-4)


def test_batches_and_single_images_agree(model):
  images = _images(5, seed=1)
  together = grad_cam(model, images, batch_size=2)
  one_by_one = np.concatenate([grad_cam(model, image) for image in images])
  np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_class_index_default_int_and_per_image(model):
  images = _images(4, seed=2)
  predicted = np.argmax(model(images, training=False), axis=-1)
  np.testing.assert_allclose(grad_cam(model, images),
                             grad_cam(model, images, class_index=predicted),
                             atol=1e-6)
  zero = grad_cam(model, images, class_index=0)
  one = grad_cam(model, images, class_index=1)
  assert np.abs(zero - one).mean() > 0.05
  mixed = grad_cam(model, images, class_index=np.array([0, 1, 0, 1]))
  np.testing.assert_allclose(mixed[[0, 2]], zero[[0, 2]], atol=1e-6)
  np.testing.assert_allclose(mixed[[1, 3]], one[[1, 3]], atol=1e-6)


@pytest.mark.parametrize('class_index', [2, -1, [0, 1]])
def test_bad_class_index_is_an_error(model, class_index):
  with pytest.raises(ValueError, match='class_index'):
    grad_cam(model, _images(3), class_index=class_index)


def test_unknown_layer_is_an_error(model):
  with pytest.raises(ValueError, match='no layer'):
    grad_cam(model, _images(1), layer_name='block_group_l9')


def test_sequential_wrapper_around_the_backbone(model):
  # The "graph disconnected" trap: the naive gradient model fails on a nested backbone.
  wrapper = keras.Sequential([keras.Input((SIZE, SIZE, 3)), model], name='wrapper')
  with pytest.raises(ValueError):
    keras.Model(wrapper.inputs, model.get_layer(models.LAST_CONV_LAYER).output)
  images = _images(3, seed=3)
  np.testing.assert_allclose(grad_cam(wrapper, images, class_index=1),
                             grad_cam(model, images, class_index=1), atol=1e-5)


def test_functional_wrapper_with_its_own_head(model):
  backbone = keras.Model(model.input, model.get_layer(models.LAST_CONV_LAYER).output,
                         name='backbone')
  inputs = keras.Input((SIZE, SIZE, 3))
  x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
  x = keras.layers.Dense(3, name='logits')(x)
  wrapper = keras.Model(inputs, keras.layers.Softmax()(x))
  images = _images(2, seed=4)
  maps = grad_cam(wrapper, images, class_index=2)
  assert maps.shape == (2, SIZE, SIZE) and maps.max() == pytest.approx(1.0)
  # The backbone's own layer, found through the nesting, is the default.
  np.testing.assert_allclose(
      maps, grad_cam(wrapper, images, 2, layer_name=models.LAST_CONV_LAYER))
  for method in visualization.available_methods():
    assert visualization.attribute(method, wrapper, images).shape == (2, SIZE, SIZE)


def test_score_is_the_logits_unless_a_head_follows_them(model):
  images = _images(2, seed=6)
  logits = keras.Model(model.input, model.get_layer('logits').output)(images, training=False)
  flat = capture.run(capture.capture_model(model, []), images)[0]
  np.testing.assert_allclose(flat, logits, atol=1e-5)
  stacked = keras.Sequential([keras.Input((SIZE, SIZE, 3)), model,
                              keras.layers.Dense(3, name='head')])
  score = capture.run(capture.capture_model(stacked, []), images)[0]
  np.testing.assert_allclose(score, stacked(images, training=False), atol=1e-5)
  assert grad_cam(stacked, images, class_index=2).shape == (2, SIZE, SIZE)


@pytest.mark.parametrize('method', ['grad_cam', 'guided_grad_cam', 'integrated_gradients',
                                    'saliency'])
def test_each_registered_method(model, method):
  assert method in visualization.available_methods()
  options = {'steps': 4} if method == 'integrated_gradients' else {}
  images = _images(3, seed=5)
  maps = visualization.attribute(method, model, images, class_index=[1, 0, 1], **options)
  assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
  assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
  assert maps.max() == pytest.approx(1.0)


def test_integrated_gradients_steps_are_checked(model):
  with pytest.raises(ValueError, match='steps'):
    visualization.attribute('integrated_gradients', model, _images(1), steps=0)


def test_unknown_method_lists_the_available_ones(model):
  with pytest.raises(ValueError) as e:
    visualization.attribute('lime', model, _images(1))
  for name in visualization.available_methods():
    assert name in str(e.value)


def test_register_refuses_a_second_function_under_a_taken_name():
  with pytest.raises(ValueError, match='already registered'):
    registry.register('grad_cam')(lambda model, images, class_index=None: images)


def test_guided_relu_passes_positive_gradients_of_positive_inputs():
  x = tf.constant([-1.0, 2.0, 3.0, 0.5])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = attributions._guided_relu(x)  # pylint: disable=protected-access
    loss = tf.reduce_sum(y * tf.constant([1.0, -1.0, 2.0, 0.0]))
  np.testing.assert_allclose(y.numpy(), [0.0, 2.0, 3.0, 0.5])
  np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [0.0, 0.0, 2.0, 0.0])


def test_overlay_blends_the_jet_map():
  photo = np.full((20, 30, 3), 100, np.uint8)
  heat = np.zeros((10, 15), np.float32)
  heat[5:, :] = 1.0
  assert np.array_equal(overlays.overlay(photo, heat, alpha=0.0), photo)
  full = overlays.overlay(photo, heat, alpha=1.0)
  assert full.shape == (20, 30, 3) and full.dtype == np.uint8
  assert full[-1, 0, 0] > 100 and full[-1, 0, 2] < 50  # jet: high is red
  assert full[0, 0, 2] > 100 and full[0, 0, 0] < 50    # low is blue
  with pytest.raises(ValueError, match='alpha'):
    overlays.overlay(photo, heat, alpha=2.0)


def test_explanation_figure_is_saved(tmp_path):
  fig = overlays.explanation_figure(_images(1)[0], np.eye(SIZE), 'RDR', 0.87, truth='NRDR')
  assert 'predicted RDR (p=0.87), truth NRDR' in fig.get_suptitle()
  path = overlays.save_figure(fig, str(tmp_path / 'a' / 'b.png'))
  assert os.path.getsize(path) > 1000


def test_gallery_selection_orders_by_confidence():
  p = np.array([0.9, 0.2, 0.6, 0.45, 0.05, 0.95, 0.3, 0.7])
  labels = np.array([1, 1, 0, 0, 0, 1, 1, 0])
  chosen = galleries.select(np.stack([1 - p, p], axis=1), labels, k=2, threshold=0.5)
  assert chosen['true_positive'].tolist() == [5, 0]
  assert chosen['true_negative'].tolist() == [4, 3]
  assert chosen['false_positive'].tolist() == [7, 2]
  assert chosen['false_negative'].tolist() == [1, 6]
  five = galleries.select(np.eye(5)[[0, 1, 2, 2]] * 0.8 + 0.04, np.array([0, 1, 3, 2]), k=4)
  assert five['correct'].tolist() == [0, 1, 3] and five['wrong'].tolist() == [2]


def test_evaluate_writes_galleries(trained_run):
  from evaluation import evaluator  # pylint: disable=g-import-not-at-top
  evaluator.evaluate(str(trained_run), gradcam_galleries=2)
  written = sorted(p.name for p in (trained_run / 'figures').glob('grad_cam_*.png'))
  assert written and all(n.split('_')[2] in ('test', 'val') for n in written)
  tags = set()
  for event_file in (trained_run / 'eval').glob('events.out.tfevents.*'):
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      tags.update(v.tag for v in event.summary.value)
  assert any(t.startswith('grad_cam_test/') for t in tags)


def test_explain_checks_its_inputs(trained_run, tmp_path):
  with pytest.raises(FileNotFoundError, match='not a trained run'):
    explain.explain_file(str(tmp_path / 'missing'), 'x.jpg')
  with pytest.raises(ValueError, match='unknown attribution method'):
    explain.explain_file(str(trained_run), 'x.jpg', method='lime')


def _explain(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'visualization.explain', *args],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def _synthetic_photo(trained_run: pathlib.Path) -> pathlib.Path:
  from training import run_dir as rd  # pylint: disable=g-import-not-at-top
  data_dir = pathlib.Path(rd.read_json(str(trained_run / rd.RUN_INFO))['data_dir'])
  return next((data_dir / 'B. Disease Grading' / '1. Original Images' /
               'b. Testing Set').glob('*.jpg'))


def test_explain_cli_on_a_synthetic_photograph(trained_run, tmp_path):
  out = tmp_path / 'explained.png'
  result = _explain(f'--run_dir={trained_run}', f'--image={_synthetic_photo(trained_run)}',
                    f'--out={out}', '--method=saliency', '--class_index=1')
  assert result.returncode == 0, result.stderr[-2000:]
  # The call and its reason: the validation threshold once the run is evaluated (another
  # test may have done so), else the most probable class.
  assert re.search(r'predicted (NRDR|RDR) \((P\(RDR\) = [0-9.]+ (<|>=) [0-9.]+, the threshold '
                   r'chosen on validation|p=[0-9.]+, the most probable class)\)',
                   result.stdout), result.stdout
  assert 'saliency for RDR' in result.stdout
  assert out.stat().st_size > 1000


@pytest.mark.parametrize('out, message', [
    ('', '--out={tmp} is a folder; name a .png file in it'),  # it wrote {tmp}.png
    ('x.xyz', "--out must name a .png file, got '{tmp}/x.xyz'"),
])
def test_explain_refuses_an_output_that_is_not_a_png_file(trained_run, tmp_path, out,
                                                          message):
  result = _explain(f'--run_dir={trained_run}', f'--image={_synthetic_photo(trained_run)}',
                    f'--out={tmp_path / out}' if out else f'--out={tmp_path}')
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 1 and errors == [f'error: {message.format(tmp=tmp_path)}']
  assert os.listdir(tmp_path) == [] and not os.path.exists(f'{tmp_path}.png')


def test_explain_cli_on_a_full_resolution_photograph(trained_run, idrid_fullres):
  image = idrid_fullres / 'images' / 'IDRiD_005.jpg'
  result = _explain(f'--run_dir={trained_run}', f'--image={image}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'predicted ' in result.stdout
  assert (trained_run / 'figures' / 'explain_IDRiD_005.png').stat().st_size > 1000


def test_explain_warns_about_a_picture_without_a_dark_surround(trained_run, tmp_path, caplog):
  import cv2  # pylint: disable=g-import-not-at-top
  photo = _synthetic_photo(trained_run)
  with caplog.at_level('WARNING'):
    explain.explain_file(str(trained_run), str(photo), out=str(tmp_path / 'a.png'))
  assert 'no dark surround' not in caplog.text
  picture = tmp_path / 'not_a_fundus.png'  # bright to its edges, like an everyday photo
  gradient = np.linspace(60, 210, 400)[None, :, None] * np.ones((300, 1, 3))
  cv2.imwrite(str(picture), gradient.astype(np.uint8))
  with caplog.at_level('WARNING'):
    result = explain.explain_file(str(trained_run), str(picture), out=str(tmp_path / 'b.png'))
  assert f'{picture}: no dark surround around the retina' in caplog.text
  assert 'not a fundus photograph' in caplog.text and os.path.isfile(result['out'])
  assert result['surround'] < 0.01


def test_explain_corrupt_image_is_one_line_error(trained_run, tmp_path, capsys):
  from utils import entry  # pylint: disable=g-import-not-at-top
  bad = tmp_path / 'corrupt.jpg'
  bad.write_bytes(b'\xff\xd8 not really a jpeg')
  with pytest.raises(SystemExit) as e, entry.user_errors():
    explain.explain_file(str(trained_run), str(bad))
  assert e.value.code == 1
  assert capsys.readouterr().err.strip() == f'error: {bad}: truncated JPEG (no end-of-image marker)'


def test_explain_calls_the_class_with_the_runs_validation_threshold(trained_run, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  shutil.copytree(trained_run, run)
  (run / 'metrics.json').unlink(missing_ok=True)
  photo = str(_synthetic_photo(trained_run))
  before = explain.explain_file(str(run), photo, out=str(tmp_path / 'a.png'))
  assert before['threshold'] is None  # not evaluated yet: the most probable class
  assert explain.decision_text(before).endswith(', the most probable class)')
  p_rdr = before['probabilities']['RDR']
  for threshold, called, sign in ((p_rdr + 1e-3, 'NRDR', '<'),
                                  (max(p_rdr - 1e-3, 0.0), 'RDR', '>=')):
    (run / 'metrics.json').write_text(json.dumps({'threshold': threshold, 'tta': 1}))
    result = explain.explain_file(str(run), photo, out=str(tmp_path / 'b.png'))
    assert result['predicted'] == called and result['threshold'] == threshold
    # The printed reason states the comparison that was made, for either call.
    assert explain.decision_text(result).startswith(
        f'{called} (P(RDR) = {p_rdr:.3f} {sign} {threshold:.3f}, the threshold')
    assert result['probabilities']['RDR'] == pytest.approx(p_rdr, abs=1e-5)


@pytest.mark.parametrize('name, keep, message', [
    ('run.json', 20, 'run.json is not valid JSON'),
    (os.path.join('checkpoints', 'best.keras'), 5000, 'best.keras is not a readable Keras model file'),
])
def test_evaluate_names_a_truncated_file_of_the_run(trained_run, tmp_path, name, keep,
                                                    message):
  run = tmp_path / 'run'
  shutil.copytree(trained_run, run)
  (run / name).write_bytes((run / name).read_bytes()[:keep])
  proc = subprocess.run([sys.executable, 'evaluate.py', f'--run_dir={run}'], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
  assert f'{run / name} ' in errors[0] and message in errors[0]

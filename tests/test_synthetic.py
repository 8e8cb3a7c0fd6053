"""Tests for input_pipeline/synthetic.py and synthetic_render.py: layout, CSV, masks, CLI."""

import json
import os
import pathlib
import re
import subprocess
import sys

from absl import flags
import cv2
import gin
import numpy as np
import pytest

from input_pipeline import synthetic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(num_train=12, num_test=6, width=200, height=133)
GRADING = synthetic.GRADING_DIR
TRAIN_CSV = pathlib.Path(GRADING, synthetic.LABEL_FILES['train'])
TEST_CSV = pathlib.Path(GRADING, synthetic.LABEL_FILES['test'])


def _rows(root: pathlib.Path, split: str) -> list[tuple[str, int, int]]:
  csv = root / (TRAIN_CSV if split == 'train' else TEST_CSV)
  lines = csv.read_text().splitlines()[1:]
  return [(f[0], int(f[1]), int(f[2])) for f in (line.split(',') for line in lines)]


def _rgb(path: pathlib.Path) -> np.ndarray:
  return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def _files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
          if p.is_file()}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp('syn') / 'synthetic'
  assert synthetic.generate(str(out), seed=3, **SMALL) == str(out)
  return out


def test_official_layout(dataset):
  for split, count in (('train', 12), ('test', 6)):
    image_dir = dataset / GRADING / synthetic.IMAGE_DIRS[split]
    names = sorted(p.name for p in image_dir.iterdir())
    assert names == [f'IDRiD_{i:03d}.jpg' for i in range(1, count + 1)]
    assert [r[0] for r in _rows(dataset, split)] == [n[:-4] for n in names]
    assert _rgb(image_dir / names[0]).shape == (133, 200, 3)
    for mask_path in (dataset / 'masks' / split).iterdir():
      assert re.fullmatch(r'IDRiD_\d{3}_(EX|MA|HE|OD)\.png', mask_path.name)
      mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
      assert mask.shape == (133, 200) and mask.dtype == np.uint8
      assert set(np.unique(mask)) <= {0, 255}
  assert (dataset / GRADING / '1. Original Images' / 'a. Training Set').is_dir()
  assert (dataset / GRADING / '2. Groundtruths' /
          'b. IDRiD_Disease Grading_Testing Labels.csv').is_file()
  assert not [p for p in dataset.parent.iterdir() if p.name.endswith('.tmp')]


def test_csv_quirks(dataset):
  train = (dataset / TRAIN_CSV).read_bytes().decode('ascii')
  test = (dataset / TEST_CSV).read_bytes().decode('ascii')
  assert train.startswith('Image name,Retinopathy grade,Risk of macular edema ,,,,,,,,,\n')
  assert test.startswith('Image name,Retinopathy grade,Risk of macular edema \n')
  assert all(re.fullmatch(r'IDRiD_\d{3},[0-4],[0-2],,,,,,,,,', line)
             for line in train.splitlines()[1:])
  assert all(re.fullmatch(r'IDRiD_\d{3},[0-4],[0-2]', line) for line in test.splitlines()[1:])
  assert train.endswith(',\n') and '\r' not in train + test


def test_csv_headers_match_real_files(dataset, idrid_800):
  for csv in (TRAIN_CSV, TEST_CSV):
    real = (idrid_800 / csv).read_bytes().splitlines(keepends=True)
    ours = (dataset / csv).read_bytes().splitlines(keepends=True)
    assert ours[0] == real[0]
    assert ours[1].count(b',') == real[1].count(b',')


def test_manifest_and_both_classes(dataset):
  manifest = json.loads((dataset / synthetic.MANIFEST).read_text())
  assert manifest['params']['seed'] == 3 and manifest['params']['width'] == 200
  for split in ('train', 'test'):
    grades = [g for _, g, _ in _rows(dataset, split)]
    assert manifest['counts'][split] == {str(g): grades.count(g) for g in range(5)}
    assert min(grades) <= 1 and max(grades) >= 2


def test_lesion_masks_follow_grade(dataset):
  for split in ('train', 'test'):
    for name, grade, dme in _rows(dataset, split):
      present = {p.stem.rsplit('_', 1)[1] for p in (dataset / 'masks' / split).glob(name + '_*')}
      expected = {0: {'OD'}, 1: {'OD', 'MA'}}.get(grade, {'OD', 'EX', 'MA', 'HE'})
      assert present == expected, (split, name, grade)
      assert (dme == 0) == ('EX' not in present)
      for kind in present:
        assert cv2.imread(str(dataset / 'masks' / split / f'{name}_{kind}.png'), 0).any()


def test_masks_align_with_image(dataset):
  checked = 0
  for name, grade, _ in _rows(dataset, 'train'):
    if grade < 2:
      continue
    image = _rgb(dataset / GRADING / synthetic.IMAGE_DIRS['train'] / f'{name}.jpg')
    image = image.astype(np.float32)
    mask = lambda k: cv2.imread(str(dataset / 'masks' / 'train' / f'{name}_{k}.png'), 0) > 0
    retina = image[..., 0] > 60
    background = image[retina & ~mask('EX') & ~mask('HE') & ~mask('OD')].mean(axis=0)
    exudate = image[mask('EX')].mean(axis=0)
    assert exudate[1] > background[1] + 60 and exudate[0] > 150  # bright and yellow
    assert image[mask('HE')].mean(axis=0)[0] < background[0] - 30  # dark red blots
    assert image[mask('OD')].mean(axis=0)[1] > background[1] + 40
    checked += 1
  assert checked


def test_retina_cut_at_top_and_bottom(dataset):
  for path in (dataset / GRADING / synthetic.IMAGE_DIRS['test']).iterdir():
    image = _rgb(path).astype(int)
    h, w, _ = image.shape
    for row in (0, h - 1):
      assert image[row, w // 2 - 3:w // 2 + 4, 0].mean() > 60, path.name
    for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
      assert image[y, x].max() < 25, path.name


def test_render_fundus_is_pure_and_seeded():
  a, masks_a = synthetic.render_fundus(np.random.default_rng(5), 3, 160, 106)
  b, masks_b = synthetic.render_fundus(np.random.default_rng(5), 3, 160, 106)
  c, _ = synthetic.render_fundus(np.random.default_rng(6), 3, 160, 106)
  assert a.dtype == np.uint8 and a.shape == (106, 160, 3)
  assert np.array_equal(a, b) and not np.array_equal(a, c)
  assert set(masks_a) == {'EX', 'MA', 'HE', 'OD'}
  assert all(np.array_equal(masks_a[k], masks_b[k]) for k in masks_a)
  assert all(m.shape == (106, 160) for m in masks_a.values())
  _, healthy = synthetic.render_fundus(np.random.default_rng(5), 0, 160, 106)
  assert not any(healthy[k].any() for k in synthetic.LESIONS) and healthy['OD'].any()


def test_same_seed_identical_bytes_different_seed_differs(tmp_path):
  kwargs = dict(num_train=4, num_test=2, width=120, height=80)
  one = _files(pathlib.Path(synthetic.generate(str(tmp_path / 'a'), seed=7, **kwargs)))
  two = _files(pathlib.Path(synthetic.generate(str(tmp_path / 'b'), seed=7, **kwargs)))
  other = _files(pathlib.Path(synthetic.generate(str(tmp_path / 'c'), seed=8, **kwargs)))
  assert one == two
  image = str(pathlib.Path(GRADING, synthetic.IMAGE_DIRS['train'], 'IDRiD_001.jpg'))
  assert one[image] != other[image]


@pytest.mark.parametrize('count', [2, 3, 5])
def test_sample_grades_keeps_both_classes(count):
  for seed in range(20):
    grades = synthetic.sample_grades(np.random.default_rng(seed), count)
    assert len(grades) == count and min(grades) <= 1 and max(grades) >= 2


def test_sample_grades_follows_probabilities():
  grades = synthetic.sample_grades(np.random.default_rng(0), 120)
  assert [grades.count(g) for g in range(5)] == [40, 6, 40, 21, 13]
  assert synthetic.sample_grades(np.random.default_rng(0), 4, (1, 0, 0, 0, 0)) == [0] * 4
  with pytest.raises(ValueError):
    synthetic.sample_grades(np.random.default_rng(0), 4, (1, 0, 0))


def test_refuses_to_overwrite(tmp_path):
  out = tmp_path / 'syn'
  kwargs = dict(num_train=2, num_test=2, width=96, height=64)
  synthetic.generate(str(out), **kwargs)
  with pytest.raises(FileExistsError, match=re.escape(str(out))):
    synthetic.generate(str(out), seed=1, **kwargs)
  synthetic.generate(str(out), seed=1, overwrite=True, **kwargs)
  assert json.loads((out / synthetic.MANIFEST).read_text())['params']['seed'] == 1
  foreign = tmp_path / 'photos'
  foreign.mkdir()
  (foreign / 'keep.txt').write_text('mine')
  with pytest.raises(FileExistsError, match=re.escape(str(foreign))):
    synthetic.generate(str(foreign), overwrite=True, **kwargs)
  assert (foreign / 'keep.txt').read_text() == 'mine'


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(synthetic, 'draw_fundus', fail)
  with pytest.raises(KeyboardInterrupt):
    synthetic.generate(str(tmp_path / 'syn'), num_train=2, num_test=2, width=96, height=64)
  assert not list(tmp_path.iterdir())


def test_ensure_synthetic_reuses_and_regenerates(tmp_path):
  out = tmp_path / 'cache'
  kwargs = dict(num_train=3, num_test=2, width=96, height=64)
  assert synthetic.ensure_synthetic(str(out), **kwargs) == str(out)
  manifest = out / synthetic.MANIFEST
  stamp = manifest.stat().st_mtime_ns
  synthetic.ensure_synthetic(str(out), **kwargs)
  assert manifest.stat().st_mtime_ns == stamp
  synthetic.ensure_synthetic(str(out), seed=4, **kwargs)
  assert json.loads(manifest.read_text())['params']['seed'] == 4
  gin.bind_parameter('synthetic.generate.seed', 5)  # gin bindings count as parameters
  synthetic.ensure_synthetic(str(out), **kwargs)
  assert json.loads(manifest.read_text())['params']['seed'] == 5
  next((out / GRADING / synthetic.IMAGE_DIRS['test']).iterdir()).unlink()  # incomplete
  synthetic.ensure_synthetic(str(out), **kwargs)
  assert len(list((out / GRADING / synthetic.IMAGE_DIRS['test']).iterdir())) == 2


def test_synthetic_data_cache_follows_generate_bindings(tmp_path, monkeypatch):
  # Imported here, not at the top: training.data imports TensorFlow.
  from training import data  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('DR_CACHE_DIR', str(tmp_path))
  kwargs = dict(num_train=3, num_test=2, width=64, height=43)
  default = pathlib.Path(data.synthetic_data(**kwargs))
  assert default.parent == tmp_path and data.synthetic_data(**kwargs) == str(default)
  gin.bind_parameter('synthetic.generate.grade_probs', (0, 0, 0, 0, 1))
  skewed = pathlib.Path(data.synthetic_data(**kwargs))
  assert skewed != default and skewed.parent == tmp_path
  params = lambda d: json.loads((d / synthetic.MANIFEST).read_text())['params']
  assert params(skewed)['grade_probs'] == [0, 0, 0, 0, 1]
  assert params(default)['grade_probs'] == list(synthetic.GRADE_PROBS)  # left in place
  assert {g for _, g, _ in _rows(skewed, 'train') + _rows(skewed, 'test')} == {4}


def test_module_defines_no_flags():
  assert 'num_train' not in flags.FLAGS and 'out_dir' not in flags.FLAGS


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'input_pipeline.synthetic', *args],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})


def test_cli_writes_layout(tmp_path):
  out = tmp_path / 'cli'
  args = (f'--out_dir={out}', '--num_train=3', '--num_test=2', '--width=96', '--height=64')
  result = _cli(*args, '--seed=2')
  assert result.returncode == 0, result.stderr
  assert 'train 3' in result.stdout and 'test 2' in result.stdout and str(out) in result.stdout
  assert len(result.stdout.strip().splitlines()) == 1
  assert len(_rows(out, 'train')) == 3 and len(_rows(out, 'test')) == 2
  assert (out / 'masks' / 'test' / 'IDRiD_001_OD.png').is_file()
  again = _cli(*args)
  assert again.returncode == 1 and f'error: {out} exists' in again.stderr
  assert 'Traceback' not in again.stderr

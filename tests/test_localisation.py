"""Tests for visualization/localisation.py and lesion_masks.py: scores, mask geometry, CLI."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from input_pipeline import preprocessing
from input_pipeline import synthetic
from tests import fixtures_models
from visualization import lesion_masks as lm
from visualization import localisation

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory) -> pathlib.Path:
  """The shrunk quickstart run, trained once per session (tests/fixtures_models.py)."""
  return fixtures_models.quickstart_run(tmp_path_factory)


def _lesion_square(shape=(64, 64), top=40, left=10, side=3) -> np.ndarray:
  mask = np.zeros(shape, np.float32)
  mask[top:top + side, left:left + side] = 1.0
  return mask


def _peak_at(y: int, x: int, shape=(64, 64)) -> np.ndarray:
  heat = np.zeros(shape, np.float32)
  heat[y, x] = 1.0
  return cv2.GaussianBlur(heat, (0, 0), 2.0)


@pytest.mark.parametrize('y, x, hit', [
    (41, 11, 1.0),   # on the lesion
    (41, 17, 1.0),   # 5 px right of its edge (column 12): within 5 px
    (41, 19, 0.0),   # 7 px away
    (10, 50, 0.0),   # far away
])
def test_pointing_hit_and_miss(y, x, hit):
  assert localisation.pointing(_peak_at(y, x), _lesion_square(), tolerance=5) == hit


def test_flat_and_empty_maps_score_the_chance_level():
  lesions = _lesion_square()
  near = localisation._near(lesions, 5)  # pylint: disable=protected-access
  for heat in (np.ones((64, 64)), np.zeros((64, 64))):
    assert localisation.pointing(heat, lesions, 5) == pytest.approx(near.mean())
    assert localisation.mass_share(heat, lesions) == pytest.approx(9 / 64 ** 2)


def test_mass_share_is_exact():
  heat = np.zeros((4, 4))
  heat[0, 0], heat[3, 3], heat[1, 2] = 3.0, 1.0, 4.0
  coverage = np.zeros((4, 4))
  coverage[0, 0], coverage[3, 3] = 1.0, 0.5  # a half-covered pixel counts half
  assert localisation.mass_share(heat, coverage) == pytest.approx((3 + 0.5) / 8)
  assert localisation.mass_share(heat * 7, coverage) == pytest.approx((3 + 0.5) / 8)


def test_tolerance_scales_with_the_side():
  assert localisation.tolerance_pixels(256) == 15
  assert localisation.tolerance_pixels(128) == 7.5


def _photo_with_marker(x: int, y: int, half: int = 3):
  """A synthetic photograph with a white square at (x, y), and its mask."""
  image, _ = synthetic.render_fundus(np.random.default_rng(3), 0, 400, 266)
  mask = np.zeros(image.shape[:2], bool)
  mask[y - half:y + half + 1, x - half:x + half + 1] = True
  image[mask] = 255
  return image, mask


def _centroid(weights: np.ndarray) -> np.ndarray:
  ys, xs = np.mgrid[0:weights.shape[0], 0:weights.shape[1]]
  return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


@pytest.mark.parametrize('size', [128, 256, 512])
def test_mask_follows_the_photograph_through_crop_pad_resize(size):
  x, y = 260, 90
  image, mask = _photo_with_marker(x, y)
  x0, y0, x1, y1 = preprocessing.find_retina_bbox(image)
  coverage = lm.transform_mask(mask, (x0, y0, x1, y1), size)
  side = max(x1 - x0, y1 - y0)
  left, top = (side - (x1 - x0)) // 2, (side - (y1 - y0)) // 2
  scale = size / side
  expected = np.array([(x - x0 + left + 0.5) * scale - 0.5, (y - y0 + top + 0.5) * scale - 0.5])
  np.testing.assert_allclose(_centroid(coverage), expected, atol=0.5)
  assert coverage.sum() == pytest.approx(mask.sum() * scale ** 2, rel=0.02)
  # The white marker of the preprocessed photograph sits where the mask says.
  photo = preprocessing.preprocess_image(image, size).astype(np.float32)
  white = np.clip((photo.min(axis=-1) - 200) / 55, 0, 1)
  np.testing.assert_allclose(_centroid(white), expected, atol=1.0)


def test_prepare_reads_masks_of_another_size(tmp_path):
  image, mask = _photo_with_marker(150, 160)
  cv2.imwrite(str(tmp_path / 'photo.png'), image[..., ::-1])
  half = cv2.resize(mask.astype(np.uint8) * 255, (200, 133), interpolation=cv2.INTER_AREA)
  cv2.imwrite(str(tmp_path / 'photo_EX.png'), half)
  cv2.imwrite(str(tmp_path / 'photo_OD.png'), np.zeros(mask.shape, np.uint8))
  sample = lm.Sample('photo', str(tmp_path / 'photo.png'),
                     {'EX': str(tmp_path / 'photo_EX.png'), 'OD': str(tmp_path / 'photo_OD.png')})
  p = lm.prepare(sample, 64)
  assert p.image.shape == (64, 64, 3) and p.image.max() <= 1.0
  assert p.lesions.shape == (64, 64) and p.lesions.max() > 0.5
  assert p.optic_disc is not None and p.optic_disc.sum() == 0
  assert p.retina.mean() > 0.5 and p.retina[p.lesions > 0].all()


def test_a_mask_of_another_aspect_ratio_is_refused(tmp_path):
  # At the photograph's aspect ratio another size is resized (test above); at another
  # aspect ratio it is the mask of another photograph.
  cv2.imwrite(str(tmp_path / 'mask.png'), np.zeros((30, 40), np.uint8))
  with pytest.raises(preprocessing.ImageError, match=r'mask.png: a 40x30 mask for a 160x150'):
    lm.read_mask(str(tmp_path / 'mask.png'), (150, 160))


def _write_csv(path: pathlib.Path, rows: list[dict[str, str]]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def test_seg_groups_follow_the_models_train_split(tmp_path):
  seg, records = tmp_path / 'seg', tmp_path / 'records'
  matches = {  # seg image: (split, grading split, grading image, also_matches)
      'IDRiD_01': ('train', 'train', 'IDRiD_102', ''),          # in the train split
      'IDRiD_02': ('train', 'train', 'IDRiD_200', ''),          # held out for validation
      'IDRiD_03': ('train', 'test', 'IDRiD_091', ''),           # a grading test image
      'IDRiD_04': ('train', '', '', ''),                        # no match
      'IDRiD_55': ('test', 'train', 'IDRiD_073', 'train/IDRiD_375'),  # twin trained on
  }
  rows = []
  for name, (split, g_split, g_name, also) in matches.items():
    (seg / 'images' / split).mkdir(parents=True, exist_ok=True)
    (seg / 'masks' / split).mkdir(parents=True, exist_ok=True)
    (seg / 'images' / split / f'{name}.jpg').write_bytes(b'')
    for key in ('MA', 'OD'):
      (seg / 'masks' / split / f'{name}_{key}.png').write_bytes(b'')
    rows.append(dict(seg_image=name, seg_split=split, grading_split=g_split,
                     grading_image=g_name, also_matches=also))
  _write_csv(seg / lm.SEG_MAP, rows)
  records.mkdir()
  _write_csv(records / 'splits.csv', [
      dict(split='train', name='IDRiD_102', grade='2', label='1', sha256='x'),
      dict(split='train', name='IDRiD_375', grade='2', label='1', sha256='x'),
      dict(split='val', name='IDRiD_200', grade='2', label='1', sha256='x'),
      dict(split='test', name='IDRiD_091', grade='2', label='1', sha256='x')])
  samples = lm.seg_samples(str(seg), lm.trained_names(str(records)))
  groups = {s.name: s.group for s in samples}
  assert groups == {'train/IDRiD_01': lm.TRAINED_ON, 'train/IDRiD_02': lm.NOT_TRAINED_ON,
                    'train/IDRiD_03': lm.NOT_TRAINED_ON, 'train/IDRiD_04': lm.NOT_TRAINED_ON,
                    'test/IDRiD_55': lm.TRAINED_ON}
  assert set(samples[0].masks) == {'MA', 'OD'}
  # A mapping file with other columns: one error naming it, not a KeyError.
  (seg / lm.SEG_MAP).write_text('image,split\nIDRiD_01,train\n')
  with pytest.raises(ValueError, match=r'seg_to_grading_map.csv: no column seg_image, '
                                       r'seg_split'):
    lm.seg_samples(str(seg))


def test_synthetic_samples_are_the_referable_test_images(synthetic_dir):
  samples = lm.synthetic_samples(str(synthetic_dir))
  labels = (synthetic_dir / synthetic.GRADING_DIR / synthetic.LABEL_FILES['test']).read_text()
  referable = {line.split(',')[0] for line in labels.splitlines()[1:]
               if int(line.split(',')[1]) >= 2}
  assert {s.name for s in samples} == {f'test/{n}' for n in referable}
  for s in samples:
    assert 'OD' in s.masks and set(s.masks) & set(lm.LESIONS)
  with pytest.raises(FileNotFoundError, match='no lesion masks'):
    lm.synthetic_samples(str(synthetic_dir / 'B. Disease Grading'))


def test_real_masks_keep_their_area(idrid_seg):
  samples = {s.name: s for s in lm.seg_samples(str(idrid_seg))}
  assert len(samples) == 81
  assert 'HE' not in samples['train/IDRiD_43'].masks
  with open(idrid_seg / 'manifest.csv', newline='') as f:
    manifest = {r['image']: r for r in csv.DictReader(f)}
  p = lm.prepare(samples['test/IDRiD_55'], 256)
  x0, y0, x1, y1 = preprocessing.find_retina_bbox(preprocessing.load_image(
      samples['test/IDRiD_55'].image_path))
  scale = 256 / max(x1 - x0, y1 - y0)
  od_pixels = float(manifest['IDRiD_55']['OD_px_800'])
  assert p.optic_disc.sum() == pytest.approx(od_pixels * scale ** 2, rel=0.03)
  assert 0 < p.lesions.mean() < 0.2


def test_summary_and_table():
  rows = [dict(group=lm.TRAINED_ON, scores={'grad_cam': dict(pointing=1.0, mass_share=0.2),
                                            'centre_gaussian': dict(pointing=0.0, mass_share=0.1)}),
          dict(group=lm.NOT_TRAINED_ON, scores={'grad_cam': dict(pointing=0.0, mass_share=0.4),
                                                'centre_gaussian': dict(pointing=1.0,
                                                                        mass_share=0.1)})]
  summary = localisation.summarise(rows)
  assert summary['grad_cam']['all'] == dict(n=2, pointing=0.5, mass_share=pytest.approx(0.3))
  assert summary['grad_cam'][lm.TRAINED_ON]['pointing'] == 1.0
  table = localisation.format_table(summary)
  assert '| centre_gaussian (baseline) | 0.500 | 1.000 | 0.000 |' in table
  assert 'pointing (not_trained_on, n=1)' in table
  only_unseen = localisation.summarise(rows[1:])
  assert 'trained_on, n=0' not in localisation.format_table(only_unseen)


def test_localise_needs_exactly_one_source(tmp_path):
  for kwargs in ({}, dict(seg_dir=str(tmp_path), use_synthetic=True)):
    with pytest.raises(ValueError, match='exactly one'):
      localisation.localise(str(tmp_path), **kwargs)


def test_grad_cam_points_at_synthetic_lesions_better_than_baselines(trained_run, tmp_path):
  """Acceptance: on the quickstart model, Grad-CAM finds the lesions; baselines do not."""
  out = tmp_path / 'localisation.json'
  result = subprocess.run(
      [sys.executable, '-m', 'visualization.localisation', f'--run_dir={trained_run}',
       '--synthetic', '--methods=grad_cam', f'--out={out}'],
      cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '| grad_cam |' in result.stdout and '(baseline)' in result.stdout
  summary = json.loads(out.read_text())['summary']
  grad_cam = summary['grad_cam']['all']
  baselines = {b: summary[b]['all'] for b in localisation.BASELINES}
  assert grad_cam['n'] >= 10
  best = max(b['pointing'] for b in baselines.values())
  assert grad_cam['pointing'] >= best + 0.15, (grad_cam, baselines)
  assert grad_cam['mass_share'] > max(b['mass_share'] for b in baselines.values())

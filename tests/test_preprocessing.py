"""Tests for input_pipeline.preprocessing on synthetic fundus images and real IDRiD data."""

from __future__ import annotations

import pathlib
import re

import cv2
import numpy as np
import pytest

from input_pipeline import preprocessing

TRAIN_IMAGES = pathlib.Path('B. Disease Grading', '1. Original Images', 'a. Training Set')


def synthetic_fundus(height: int, width: int, cx: int, cy: int, radius: int,
                     seed: int = 0, glow: float = 40.0) -> np.ndarray:
  """RGB uint8: a reddish, vignetted, textured disc on a dim, noisy, glowing surround.

  The disc is every pixel whose centre lies within `radius` of (cx, cy). Outside it, a
  glow of `glow` grey levels at the rim fades over ~15 px, on JPEG-like noise around 8.
  """
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width]
  dist = np.hypot(xx - cx, yy - cy)
  inside = dist <= radius
  vignette = 1.0 - 0.45 * (dist / radius) ** 2
  texture = rng.normal(1.0, 0.08, (height, width))
  colour = np.array([200.0, 95.0, 45.0])
  disc = colour * (vignette * texture)[..., None]
  surround = rng.normal(8.0, 4.0, (height, width)) + glow * np.exp(-(dist - radius) / 15.0)
  image = np.where(inside[..., None], disc, surround[..., None] * [1.0, 0.5, 0.4])
  return np.clip(image, 0, 255).astype(np.uint8)


def expected_bbox(height: int, width: int, cx: int, cy: int, radius: int):
  return (max(0, cx - radius), max(0, cy - radius),
          min(width, cx + radius + 1), min(height, cy + radius + 1))


def write_jpeg(path: pathlib.Path, rgb: np.ndarray) -> pathlib.Path:
  ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  assert ok
  encoded.tofile(str(path))
  return path


@pytest.fixture
def fundus() -> np.ndarray:
  """600x900 photograph whose disc is cut at top and bottom, like IDRiD's."""
  return synthetic_fundus(600, 900, cx=430, cy=300, radius=380)


# --- Retina bounding box -------------------------------------------------------------


@pytest.mark.parametrize('shape, centre, radius', [
    ((600, 900), (430, 300), 380),   # cut at top and bottom, off-centre
    ((500, 700), (300, 260), 180),   # fully inside the frame
    ((2848, 4288), (2150, 1424), 1700),  # full IDRiD resolution, cut at top/bottom
])
def test_bbox_matches_the_disc(shape, centre, radius):
  height, width = shape
  image = synthetic_fundus(height, width, *centre, radius)
  bbox = preprocessing.find_retina_bbox(image)
  expected = expected_bbox(height, width, *centre, radius)
  tolerance = max(3, round(0.002 * width))  # a few pixels, one search pixel at 4288
  np.testing.assert_allclose(bbox, expected, atol=tolerance)


def test_bbox_leaves_out_a_bright_glow():
  # The glow at the rim is half as bright as the retina's dim edge; a plain threshold
  # would widen the crop by 20 px or more.
  image = synthetic_fundus(600, 900, cx=430, cy=300, radius=380, glow=50.0)
  np.testing.assert_allclose(preprocessing.find_retina_bbox(image), (50, 0, 811, 600),
                             atol=2)


def test_bbox_ignores_a_small_bright_label_in_the_surround(fundus):
  fundus[10:30, 860:890] = 255  # a caption burnt into the corner
  np.testing.assert_allclose(preprocessing.find_retina_bbox(fundus),
                             (50, 0, 811, 600), atol=3)


def test_crop_to_retina_cuts_the_surround(fundus):
  crop = preprocessing.crop_to_retina(fundus)
  assert crop.shape[0] == 600 and abs(crop.shape[1] - 761) <= 6
  assert crop[300, :5].mean() > 60 and crop[300, -5:].mean() > 60  # retina at both sides


def test_retina_mask_has_no_holes_at_dark_lesions(fundus):
  fundus[250:350, 380:480] = 0  # a large dark haemorrhage
  mask = preprocessing.retina_mask(fundus)
  assert mask[300, 430] and mask[300, 60] and not mask[300, 20]


def test_surround_is_the_frame_outside_the_disc():
  # A disc of radius 180 inside a 500x700 frame: 1 - pi 180^2 / (500 * 700) of surround.
  image = synthetic_fundus(500, 700, 300, 260, 180)
  expected = 1 - np.pi * 180 ** 2 / (500 * 700)
  assert abs(preprocessing.locate_retina(image)[1] - expected) < 0.01
  # A picture bright to its edges has none.
  gradient = np.linspace(60, 210, 700)[None, :, None] * np.ones((500, 1, 3))
  assert preprocessing.locate_retina(gradient.astype(np.uint8))[1] < 0.01


def test_blank_array_has_no_retina():
  with pytest.raises(preprocessing.ImageError, match='no retina found'):
    preprocessing.find_retina_bbox(np.full((400, 600, 3), 5, np.uint8))


# --- Square, resize, contrast ---------------------------------------------------------


@pytest.mark.parametrize('shape, rows, cols', [((10, 4), (0, 10), (3, 7)),
                                               ((4, 9), (2, 6), (0, 9))])
def test_pad_to_square_is_black_and_centred(shape, rows, cols):
  image = np.full(shape + (3,), 200, np.uint8)
  square = preprocessing.pad_to_square(image)
  side = max(shape)
  assert square.shape == (side, side, 3)
  np.testing.assert_array_equal(square[rows[0]:rows[1], cols[0]:cols[1]], 200)
  assert square.sum() == image.sum()  # everything else is black


@pytest.mark.parametrize('contrast', [None, 'none', 'clahe', 'ben_graham', 'ben_graham_fine',
                                      'ben_graham_coarse'])
def test_preprocess_image_shape_and_dtype(fundus, contrast):
  out = preprocessing.preprocess_image(fundus, size=97, contrast=contrast)
  assert out.shape == (97, 97, 3) and out.dtype == np.uint8


def test_preprocess_image_pads_the_cut_disc_top_and_bottom(fundus):
  out = preprocessing.preprocess_image(fundus, size=128)
  assert out[:5].max() == 0 and out[-5:].max() == 0  # padding above and below
  assert out[64, 2].mean() > 40 and out[64, -3].mean() > 40  # retina reaches both sides


@pytest.mark.parametrize('method', ['clahe', 'ben_graham', 'ben_graham_fine',
                                    'ben_graham_coarse'])
def test_contrast_changes_the_image_and_keeps_its_shape(fundus, method):
  image = preprocessing.preprocess_image(fundus, size=128)
  out = preprocessing.apply_contrast(image, method)
  assert out.shape == image.shape and out.dtype == np.uint8
  assert np.abs(out.astype(int) - image).mean() > 5


@pytest.mark.parametrize('method', [None, 'none'])
def test_no_contrast_leaves_the_image_unchanged(fundus, method):
  np.testing.assert_array_equal(preprocessing.apply_contrast(fundus, method), fundus)


@pytest.mark.parametrize('method', ['ben_graham', 'ben_graham_fine', 'ben_graham_coarse'])
def test_ben_graham_centres_the_retina_on_grey_and_keeps_the_surround_black(fundus, method):
  image = preprocessing.preprocess_image(fundus, size=128)
  out = preprocessing.apply_contrast(image, method)
  mask = preprocessing.retina_mask(image)
  assert abs(np.median(out[mask]) - 128) < 15
  assert out[:4].max() == 0 and out[-4:].max() == 0
  rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
  assert np.percentile(out[rim], 95) < 200  # no bright ring along the edge


def test_ben_graham_sigma_sets_the_size_of_what_survives(fundus):
  # A lesion-like bright patch 16 px across on a 256 px photograph: a blur finer than the
  # patch takes most of it away as local average, a coarser one keeps it; a 2 px dot
  # (a microaneurysm's scale) is kept by all three.
  image = preprocessing.preprocess_image(fundus, size=256).astype(np.int16)
  image[112:128, 112:128] += 40
  image[160:162, 160:162] += 40
  image = np.clip(image, 0, 255).astype(np.uint8)
  patch = {m: preprocessing.apply_contrast(image, m)[116:124, 116:124].mean() - 128
           for m in ['ben_graham_fine', 'ben_graham', 'ben_graham_coarse']}
  assert patch['ben_graham_fine'] < patch['ben_graham'] < patch['ben_graham_coarse']
  assert patch['ben_graham_coarse'] > 2 * patch['ben_graham_fine']
  for method in patch:
    dot = preprocessing.apply_contrast(image, method)[160:162, 160:162].mean()
    assert dot > 128 + 100, method


def test_unknown_contrast_names_the_method(fundus):
  with pytest.raises(ValueError, match='sharpen'):
    preprocessing.apply_contrast(fundus, 'sharpen')
  with pytest.raises(ValueError, match='sharpen'):
    preprocessing.preprocess_image(fundus, contrast='sharpen')


def test_preprocess_file_passes_size(tmp_path, fundus):
  path = write_jpeg(tmp_path / 'fundus.jpg', fundus)
  assert preprocessing.preprocess_file(str(path), size=32).shape == (32, 32, 3)


# --- Loading ---------------------------------------------------------------------------


def test_load_image_reads_rgb_from_an_unusual_path(tmp_path, fundus):
  path = write_jpeg(tmp_path / 'fundus ü 1.jpg', fundus)
  image = preprocessing.load_image(str(path))
  assert image.shape == fundus.shape and image.dtype == np.uint8
  red, _, blue = image[250:350, 380:480].reshape(-1, 3).mean(axis=0)
  assert red > 2 * blue  # RGB order, not OpenCV's BGR


def test_load_image_accepts_padding_after_the_jpeg_end(tmp_path, fundus):
  path = write_jpeg(tmp_path / 'padded.jpg', fundus)
  path.write_bytes(path.read_bytes() + b'\x00' * 64 + b'\r\n')
  assert preprocessing.load_image(str(path)).shape == fundus.shape


@pytest.mark.parametrize('variant', ['16-bit', 'alpha'])
def test_load_image_reads_16_bit_and_rgba_png_as_8_bit_rgb(tmp_path, fundus, variant):
  bgr = cv2.cvtColor(fundus, cv2.COLOR_RGB2BGR)
  if variant == '16-bit':
    encoded = bgr.astype(np.uint16) * 257  # full 16-bit range, as scanners write it
  else:
    encoded = np.dstack([bgr, np.full(fundus.shape[:2], 255, np.uint8)])
  path = tmp_path / f'fundus {variant}.png'
  assert cv2.imwrite(str(path), encoded)
  image = preprocessing.load_image(str(path))
  assert image.dtype == np.uint8 and image.shape == fundus.shape
  assert np.abs(image.astype(int) - fundus).max() <= 1


def _missing(path, _):
  return path


def _empty(path, _):
  path.write_bytes(b'')
  return path


def _not_an_image(path, _):
  path.write_bytes(b'Patient: 001\nThis is a text file, not a photograph.\n' * 20)
  return path


def _truncated(path, fundus):
  write_jpeg(path, fundus)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  return path


def _damaged(path, fundus):
  """Random bytes in the middle of the compressed data; the end marker stays."""
  write_jpeg(path, fundus)
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 200] = np.random.default_rng(0).integers(0, 256, 200, np.uint8).tobytes()
  path.write_bytes(bytes(data))
  return path


def _all_black(path, fundus):
  rng = np.random.default_rng(1)
  return write_jpeg(path, rng.integers(0, 6, fundus.shape).astype(np.uint8))


def _black_with_a_label(path, fundus):
  image = np.zeros_like(fundus)
  image[20:40, 20:120] = 255  # only a caption, no retina
  return write_jpeg(path, image)


@pytest.mark.parametrize('make, reason', [
    (_missing, 'no such'), (_empty, 'empty'), (_not_an_image, 'not a decodable image'),
    (_truncated, 'truncated'), (_damaged, 'corrupt JPEG data'), (_all_black, 'no retina'), (_black_with_a_label, 'no retina'),
])
@pytest.mark.parametrize('loader', [preprocessing.load_image, preprocessing.preprocess_file])
def test_bad_photograph_raises_an_error_naming_the_file(tmp_path, fundus, make, reason,
                                                        loader):
  path = make(tmp_path / 'IDRiD bad 042.jpg', fundus)
  with pytest.raises(preprocessing.ImageError, match=re.escape(path.name)) as info:
    loader(str(path))
  assert reason in str(info.value) and '\n' not in str(info.value)


# --- Real IDRiD photographs ----------------------------------------------------------


def _relative_bbox(image: np.ndarray) -> np.ndarray:
  height, width = image.shape[:2]
  return np.array(preprocessing.find_retina_bbox(image)) / [width, height, width, height]


def test_fullres_and_800px_crops_agree(idrid_fullres, idrid_800):
  paths = sorted((idrid_fullres / 'images').glob('*.jpg'))
  assert len(paths) == 7
  for path in paths:
    full = preprocessing.load_image(str(path))
    small = preprocessing.load_image(str(idrid_800 / TRAIN_IMAGES / path.name))
    assert full.shape == (2848, 4288, 3) and small.shape == (531, 800, 3)
    rel_full, rel_small = _relative_bbox(full), _relative_bbox(small)
    np.testing.assert_allclose(rel_full, rel_small, atol=0.01, err_msg=path.name)
    # IDRiD's retina is cut at top and bottom and spans ~80% of the width.
    assert rel_full[1] == 0 and rel_full[3] == 1, path.name
    assert 0.05 < rel_full[0] < 0.08 and 0.84 < rel_full[2] < 0.88, path.name


def test_preprocess_file_on_a_fullres_photograph(idrid_fullres):
  path = idrid_fullres / 'images' / 'IDRiD_001.jpg'
  out = preprocessing.preprocess_file(str(path), size=224, contrast='clahe')
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  assert out[:10].max() < 20 and out[-10:].max() < 20  # black padding above and below
  assert out[112, 3].mean() > 40 and out[112, -4].mean() > 40  # tight at left and right

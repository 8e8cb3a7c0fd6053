"""Fundus photograph preprocessing: load, crop to the retina, square, resize, contrast.

    path --load_image--> RGB uint8 --crop_to_retina--> --pad_to_square--> --resize-->
         --apply_contrast--> RGB uint8 (size, size, 3)

The retina is found on a downscaled copy (long side `_SEARCH_SIZE`) of the brightest
channel, so the crop is the same, relative to the image, whatever the resolution of the
photograph (IDRiD 4288x2848 originals and their 800x531 copies agree to a fraction of a
percent). In IDRiD the retina disc is wider than the frame is tall: the crop usually spans
the full height and a band of the width.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Callable, Iterator

from absl import logging
import cv2
import numpy as np

# Retina search: long side of the downscaled copy, median-blur aperture, and the lowest
# level (0-255) a retina pixel may have, whatever the brightness of the photograph.
_SEARCH_SIZE = 512
_MEDIAN_APERTURE = 5
_MIN_LEVEL = 15
# The faint glow around the retina is darker than this fraction of the brightest pixel
# within `_LOCAL_RADIUS` (search-copy pixels), while the retina's own rim is not.
_LOCAL_RATIO = 0.5
_LOCAL_RADIUS = 8
# A retina covers at least this fraction of the frame; less is a blank photograph.
_MIN_RETINA_FRACTION = 0.02
# Default retina threshold, as a fraction of the 99th percentile of the brightness.
DEFAULT_THRESHOLD = 0.1
# Bytes a JPEG may carry after its end-of-image marker (FF D9) and still be whole.
_JPEG_PADDING = b'\x00 \t\r\n'
# libjpeg decodes damaged compressed data anyway and only warns on stderr; these warnings
# mean the pixels are not the photograph's.
_LIBJPEG_DAMAGE = ('Corrupt JPEG data', 'Premature end of JPEG file')

BBox = tuple[int, int, int, int]


class ImageError(ValueError):
  """A photograph that cannot be used; message is one line and names the file."""


def _check_jpeg_complete(data: bytes, path: str) -> None:
  """Raises ImageError when a JPEG file lacks its end-of-image marker."""
  if data[:2] == b'\xff\xd8' and not data.rstrip(_JPEG_PADDING).endswith(b'\xff\xd9'):
    raise ImageError(f'{path}: truncated JPEG (no end-of-image marker)')


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
  """Collects what native code writes to file descriptor 2 meanwhile (one string)."""
  captured: list[str] = []
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield captured
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      captured.append(tmp.read().decode(errors='replace'))


def _decode(data: np.ndarray, path: str) -> np.ndarray:
  """BGR image of encoded bytes; ImageError if undecodable or libjpeg reports damage."""
  with _native_stderr() as messages:
    try:
      bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
      bgr = None
  text = messages[0]
  damage = [line for line in text.splitlines() if line.startswith(_LIBJPEG_DAMAGE)]
  if damage:
    raise ImageError(f'{path}: corrupt JPEG data ({damage[0].strip()})')
  if text:
    sys.stderr.write(text)  # not about this file's data: pass it on
  if bgr is None:
    raise ImageError(f'{path}: not a decodable image')
  return bgr


def load_image(path: str) -> np.ndarray:
  """Reads a photograph as RGB and checks that it shows a retina.

  Args:
    path: Image file; any name (spaces, unicode) works.

  Returns:
    RGB uint8 array of shape (height, width, 3).

  Raises:
    ImageError: The file is missing, empty, not a decodable image, a truncated JPEG or one
      with damaged data, or a blank photograph with no retina in it.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ImageError(f'{path}: no such image file')
  data = np.fromfile(path, dtype=np.uint8)
  if data.size == 0:
    raise ImageError(f'{path}: empty file')
  _check_jpeg_complete(data.tobytes(), path)
  image = cv2.cvtColor(_decode(data, path), cv2.COLOR_BGR2RGB)
  try:
    find_retina_bbox(image)
  except ImageError as e:
    raise ImageError(f'{path}: {e}') from None
  return image


def _search_copy(image: np.ndarray) -> tuple[np.ndarray, float, float]:
  """Brightness (max over channels) on a median-blurred copy of long side <= 512.

  Returns:
    The copy and the factors (x, y) that map its coordinates back to `image`.
  """
  height, width = image.shape[:2]
  scale = min(1.0, _SEARCH_SIZE / max(height, width))
  small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
  small = image if scale == 1.0 else cv2.resize(
      image, (small_w, small_h), interpolation=cv2.INTER_AREA)
  bright = small.max(axis=2) if small.ndim == 3 else small
  bright = cv2.medianBlur(np.ascontiguousarray(bright, dtype=np.uint8), _MEDIAN_APERTURE)
  return bright, width / small_w, height / small_h


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray, BBox] | None:
  """Largest 8-connected component of a binary mask and its bbox, or None if too small."""
  count, labels, stats, _ = cv2.connectedComponentsWithStats(
      mask.astype(np.uint8), connectivity=8)
  if count < 2:
    return None
  best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
  x, y, w, h, area = stats[best]
  if area < _MIN_RETINA_FRACTION * mask.size:
    return None
  return labels == best, (int(x), int(y), int(x + w), int(y + h))


def _retina_component(image: np.ndarray,
                      threshold: float) -> tuple[np.ndarray, BBox, float, float]:
  """Retina mask and bbox on the search copy, with the factors back to `image`.

  Raises:
    ImageError: No retina found.
  """
  bright, scale_x, scale_y = _search_copy(image)
  level = max(_MIN_LEVEL, threshold * float(np.percentile(bright, 99)))
  disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _LOCAL_RADIUS + 1,) * 2)
  local_max = cv2.dilate(bright, disc)
  mask = ((bright > level) & (bright >= _LOCAL_RATIO * local_max)).astype(np.uint8)
  mask = cv2.morphologyEx(
      mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
  found = _largest_component(mask)
  if found is None:
    raise ImageError('no retina found (blank or all-black photograph)')
  return found[0], found[1], scale_x, scale_y


def find_retina_bbox(image: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> BBox:
  """Finds the retina inside the dark surround of a fundus photograph.

  Args:
    image: RGB (or single-channel) uint8 array.
    threshold: A pixel belongs to the retina when its brightest channel exceeds this
      fraction of the 99th-percentile brightness (and at least 15 of 255) and is not
      much darker than its neighbourhood (the glow around the retina is).

  Returns:
    (x0, y0, x1, y1) in pixels of `image`, ends exclusive.

  Raises:
    ImageError: No retina found (blank or all-black photograph).
  """
  _, bbox, scale_x, scale_y = _retina_component(image, threshold)
  return _full_bbox(bbox, scale_x, scale_y, image.shape)


def _full_bbox(bbox: BBox, scale_x: float, scale_y: float, shape: tuple[int, ...]) -> BBox:
  """A box on the search copy, mapped back to the pixels of an image of `shape`."""
  x0, y0, x1, y1 = bbox
  height, width = shape[:2]
  return (max(0, int(np.floor(x0 * scale_x))), max(0, int(np.floor(y0 * scale_y))),
          min(width, int(np.ceil(x1 * scale_x))), min(height, int(np.ceil(y1 * scale_y))))


def _hull(mask: np.ndarray) -> np.ndarray:
  """Convex hull (points x, y) of a mask's nonzero pixels."""
  contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                 cv2.CHAIN_APPROX_SIMPLE)
  return cv2.convexHull(np.concatenate(contours))


def retina_mask(image: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
  """Boolean mask, shape of `image`, of the retina (True) against the surround.

  The mask is the convex hull of the retina found by `find_retina_bbox`, so dark lesions
  inside the retina never leave holes in it.

  Raises:
    ImageError: No retina found.
  """
  mask, _, scale_x, scale_y = _retina_component(image, threshold)
  hull = _hull(mask).astype(np.float64)
  hull = np.round((hull + 0.5) * (scale_x, scale_y) - 0.5).astype(np.int32)
  height, width = image.shape[:2]
  full = np.zeros((height, width), dtype=np.uint8)
  cv2.fillConvexPoly(full, hull, 1)
  return full.astype(bool)


def locate_retina(image: np.ndarray,
                  threshold: float = DEFAULT_THRESHOLD) -> tuple[BBox, float]:
  """The retina's box (as `find_retina_bbox`) and its surround, from one search.

  The surround is the fraction of the frame outside the retina's convex hull. A fundus
  photograph has one, at least in the corners (21 % of the square around a round retina);
  a picture with almost none is probably not a fundus photograph.

  Raises:
    ImageError: No retina found.
  """
  mask, bbox, scale_x, scale_y = _retina_component(image, threshold)
  filled = np.zeros(mask.shape, np.uint8)
  cv2.fillConvexPoly(filled, _hull(mask), 1)
  return (_full_bbox(bbox, scale_x, scale_y, image.shape),
          1.0 - cv2.countNonZero(filled) / mask.size)


def crop_to_retina(image: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
  """Cuts the dark surround away: the tightest box around the retina."""
  x0, y0, x1, y1 = find_retina_bbox(image, threshold)
  return image[y0:y1, x0:x1]


def pad_to_square(image: np.ndarray) -> np.ndarray:
  """Pads with black, evenly on both sides, to a square of the longer side."""
  height, width = image.shape[:2]
  side = max(height, width)
  top, left = (side - height) // 2, (side - width) // 2
  out = np.zeros((side, side) + image.shape[2:], dtype=image.dtype)
  out[top:top + height, left:left + width] = image
  return out


def _clahe(image: np.ndarray) -> np.ndarray:
  """CLAHE on the lightness channel of LAB; colours are kept."""
  lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
  clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
  lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
  return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _ben_graham(image: np.ndarray, sigma_divisor: float = 30.0) -> np.ndarray:
  """Local-average subtraction (Graham, Kaggle DR 2015); the surround stays black.

  4 * image - 4 * local_average + 128, where the local average is a Gaussian blur
  (sigma = size / sigma_divisor) taken over retina pixels only, so the dark surround does
  not leave a bright rim along the edge of the retina. Everything outside the retina is then
  black. A smaller sigma keeps only finer detail. Graham blurred at the retina's radius / 30,
  about size / 60 of this crop (whose side is the retina's diameter): 'ben_graham_fine'.
  'ben_graham' blurs at twice that.
  """
  try:
    mask = retina_mask(image)
  except ImageError:
    mask = np.ones(image.shape[:2], dtype=bool)
  sigma = max(image.shape[:2]) / sigma_divisor
  weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=sigma)
  total = cv2.GaussianBlur(image.astype(np.float32) * mask[..., None], (0, 0), sigmaX=sigma)
  local_average = total / np.maximum(weight, 1e-3)[..., None]
  out = np.clip(4.0 * image - 4.0 * local_average + 128.0, 0, 255).astype(np.uint8)
  inside = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))  # skip the rim
  out[inside == 0] = 0
  return out


_CONTRAST: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'none': lambda image: image,
    'clahe': _clahe,
    'ben_graham': _ben_graham,
    # Half and twice the blur of 'ben_graham' (configs/grids/idrid_ben_graham_sigma.gin).
    'ben_graham_fine': lambda image: _ben_graham(image, sigma_divisor=60.0),
    'ben_graham_coarse': lambda image: _ben_graham(image, sigma_divisor=15.0),
}


def apply_contrast(image: np.ndarray, method: str | None) -> np.ndarray:
  """Contrast enhancement by name.

  Args:
    image: RGB uint8 array.
    method: None or 'none' (unchanged), 'clahe', 'ben_graham' (blur sigma size / 30),
      'ben_graham_fine' (size / 60) or 'ben_graham_coarse' (size / 15).

  Returns:
    RGB uint8 array of the same shape.

  Raises:
    ValueError: Unknown method.
  """
  return _contrast_fn(method)(image)


def check_contrast(method: str | None, parameter: str = 'contrast method') -> None:
  """Raises ValueError naming `parameter` unless `method` names an enhancement or is None."""
  if method is not None and method not in sorted(_CONTRAST):  # a list: unhashables too
    raise ValueError(f'unknown {parameter} {method!r}; '
                     f'choose one of {sorted(_CONTRAST)} or None')


def _contrast_fn(method: str | None) -> Callable[[np.ndarray], np.ndarray]:
  """The enhancement registered under `method`; ValueError names an unknown one."""
  check_contrast(method)
  return _CONTRAST['none' if method is None else method]


def preprocess_image(image: np.ndarray, size: int = 256, contrast: str | None = None,
                     threshold: float = DEFAULT_THRESHOLD,
                     bbox: BBox | None = None) -> np.ndarray:
  """Crops to the retina, pads to a square, resizes and enhances contrast.

  Args:
    image: RGB uint8 photograph of any size.
    size: Side of the output, pixels.
    contrast: See `apply_contrast`.
    threshold: See `find_retina_bbox`.
    bbox: The retina's box when already found (`find_retina_bbox`, `locate_retina`);
      None to find it here.

  Returns:
    RGB uint8 array of shape (size, size, 3).

  Raises:
    ImageError: No retina found.
    ValueError: Unknown contrast method.
  """
  enhance = _contrast_fn(contrast)  # An unknown name fails before any work is done.
  x0, y0, x1, y1 = bbox or find_retina_bbox(image, threshold)
  square = pad_to_square(image[y0:y1, x0:x1])
  shrink = square.shape[0] >= size
  resized = cv2.resize(square, (size, size),
                       interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
  return enhance(resized)


def preprocess_file(path: str, **kwargs) -> np.ndarray:
  """`load_image` then `preprocess_image(image, **kwargs)`.

  Raises:
    ImageError: The file cannot be used; the message names it.
  """
  image = load_image(path)
  logging.debug('preprocessing %s (%dx%d)', path, image.shape[1], image.shape[0])
  try:
    return preprocess_image(image, **kwargs)
  except ImageError as e:  # e.g. no retina at a custom threshold
    raise ImageError(f'{os.fspath(path)}: {e}') from None

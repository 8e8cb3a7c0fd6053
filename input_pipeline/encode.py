"""Preprocess-and-encode step run in worker processes (imports no TensorFlow)."""

from __future__ import annotations

import cv2

from input_pipeline import preprocessing


def preprocess_to_png(path: str, size: int, contrast: str | None) -> tuple[bytes | None, str]:
  """Preprocesses one photograph and PNG-encodes it.

  Returns:
    (PNG bytes, '') on success, (None, one-line reason naming the file) otherwise.
  """
  cv2.setNumThreads(1)
  try:
    image = preprocessing.preprocess_file(path, size=size, contrast=contrast)
  except preprocessing.ImageError as e:
    return None, str(e)
  ok, buf = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
  if not ok:
    return None, f'{path}: could not encode the preprocessed image'
  return buf.tobytes(), ''

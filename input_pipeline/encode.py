"""Preprocess-and-encode step run in worker processes (imports no TensorFlow)."""

from __future__ import annotations

import os
import threading
import time

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


def exit_with_parent(parent: int) -> None:
  """Pool initializer: ends the worker when the process that started it is gone (killed
  with SIGKILL, say); the worker would otherwise wait on its queue forever. Here, not in
  tfrecords.py, so that workers do not import TensorFlow."""
  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)  # pylint: disable=protected-access
  threading.Thread(target=watch, daemon=True).start()

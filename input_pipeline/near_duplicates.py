"""Photographs that show the same picture without being the same file.

    python -m input_pipeline.near_duplicates --data_dir=../shared/datasets/idrid-800 \
        [--threshold=0.8]

`integrity.py` keeps byte-identical files together and drops training copies of test
files. A picture saved again with other brightness or compression is a different file, so
it escapes that check and can sit on both sides of a validation split. This command
compares every pair of photographs (both splits) by their vessel pattern and prints each
pair at or above --threshold, with its split, grade and whether the files are
byte-identical. It changes nothing: the splits stay those of `integrity.py`.

The vessel pattern of a photograph: the green channel resized to 200 px wide, minus its
Gaussian blur (sigma 4 px), inside the eroded retina, central part; two photographs are
compared by the Pearson correlation of their patterns. Brightness and contrast changes
barely change it; a different eye, or the same eye photographed again from another
angle, correlates far less (on IDRiD, every pair that is not the same picture scores
below 0.5).
"""

from __future__ import annotations

import itertools
from typing import Sequence

from absl import app
from absl import flags
import cv2
import numpy as np

from input_pipeline import idrid
from input_pipeline import integrity
from input_pipeline import preprocessing
from utils import entry

WIDTH = 200


def vessel_pattern(path: str) -> np.ndarray:
  """The standardised high-pass green channel of a photograph, flattened.

  Raises:
    preprocessing.ImageError: The file is missing, not a decodable image, a truncated or
      damaged JPEG, or shows no retina (`preprocessing.load_image`).
  """
  image = preprocessing.load_image(path)  # RGB: green is channel 1, as in BGR
  height = max(1, round(image.shape[0] * WIDTH / image.shape[1]))
  green = cv2.resize(image[:, :, 1], (WIDTH, height),
                     interpolation=cv2.INTER_AREA).astype(np.float32)
  retina = cv2.erode((green > 20).astype(np.uint8), np.ones((9, 9), np.uint8))
  detail = (green - cv2.GaussianBlur(green, (0, 0), 4)) * retina
  detail = detail[height // 6:height - height // 6, WIDTH // 5:WIDTH - WIDTH // 5].ravel()
  sd = detail.std()
  return (detail - detail.mean()) / (sd if sd > 0 else 1.0)


def similar_pairs(paths: Sequence[str], threshold: float = 0.8
                  ) -> list[tuple[float, int, int]]:
  """(correlation, i, j) of each pair i < j of `paths` at or above `threshold`, highest
  first. Photographs must have one aspect ratio (the patterns must be the same size)."""
  patterns = [vessel_pattern(p) for p in paths]
  sizes = {p.size for p in patterns}
  if len(sizes) > 1:
    raise ValueError(f'photographs of different aspect ratios ({sorted(sizes)} pixels '
                     'compared); compare one camera at a time')
  if not patterns:
    return []
  x = np.stack(patterns)
  corr = x @ x.T / x.shape[1]
  pairs = [(float(corr[i, j]), i, j)
           for i, j in itertools.combinations(range(len(paths)), 2)
           if corr[i, j] >= threshold]
  return sorted(pairs, reverse=True)


flags.DEFINE_string('data_dir', None, 'IDRiD folder (official layout or images/ + labels/).')
flags.DEFINE_float('threshold', 0.8, 'Correlation of vessel patterns at which a pair is '
                   'printed.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.data_dir:
    raise app.UsageError('--data_dir is required')
  if not -1 <= FLAGS.threshold <= 1:
    raise app.UsageError(f'--threshold is a correlation, -1 to 1; got {FLAGS.threshold}')
  records, _ = idrid.load_records(FLAGS.data_dir)
  pairs = similar_pairs([r.path for r in records], FLAGS.threshold)
  hashes = {r.path: integrity.file_hash(r.path)
            for _, i, j in pairs for r in (records[i], records[j])}
  print(f'{len(records)} photographs; pairs with vessel-pattern correlation >= '
        f'{FLAGS.threshold}: {len(pairs)}')
  for corr, i, j in pairs:
    a, b = records[i], records[j]
    same = 'byte-identical' if hashes[a.path] == hashes[b.path] else 'different files'
    print(f'  {corr:.3f}  {a.split} {a.name} (grade {a.grade})  {b.split} {b.name} '
          f'(grade {b.grade})  {same}')


if __name__ == '__main__':
  entry.run(main)

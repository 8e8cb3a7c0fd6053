"""TFRecord build time for an IDRiD folder (a fresh build, nothing reused).

    python benchmarks/build_tfrecords.py --data_dir=../shared/datasets/idrid-800 [--out_dir=DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags

from input_pipeline import tfrecords
from utils import entry

flags.DEFINE_string('data_dir', None, 'IDRiD folder.')
flags.DEFINE_string('out_dir', None, 'Where to build (default: a temporary folder).')
flags.mark_flag_as_required('data_dir')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = FLAGS.out_dir or os.path.join(tempfile.mkdtemp(), 'tfr')
  start = time.perf_counter()
  manifest = tfrecords.build_tfrecords(FLAGS.data_dir, out, force=True)
  seconds = time.perf_counter() - start
  n = sum(c['total'] for c in manifest['counts'].values())
  print(f'TFRecord build: {n} photographs in {seconds:.1f} s ({n / seconds:.0f} images/s, '
        f'{os.cpu_count()} worker processes) -> {out}')


if __name__ == '__main__':
  entry.run(main)

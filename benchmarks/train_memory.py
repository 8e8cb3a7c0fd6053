"""Peak memory and seconds per epoch of a real `train.py` run on IDRiD (3 epochs).

    python benchmarks/train_memory.py --data_dir=../shared/datasets/idrid-800 --run_dir=/tmp/bm
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from tuning import runner
from utils import checks
from utils import entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string('data_dir', None, 'IDRiD folder.')
flags.DEFINE_string('run_dir', None, 'Run directory (must not exist).')
flags.DEFINE_integer('epochs', 3, 'Epochs to train.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra bindings.')
flags.mark_flags_as_required(['data_dir', 'run_dir'])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  checks.check_number('--epochs', FLAGS.epochs, low=1, whole=True)
  start = time.perf_counter()
  args = [sys.executable, 'train.py', '--gin_file=configs/idrid_binary.gin',
          f'--data_dir={FLAGS.data_dir}', f'--run_dir={FLAGS.run_dir}',
          f'--gin_bindings=train.epochs = {FLAGS.epochs}']
  args += [f'--gin_bindings={b}' for b in FLAGS.gin_bindings]
  proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    raise ValueError(f'train.py exited with status {proc.returncode}: '
                     f'{runner.failure_line(proc.stderr.splitlines()[-200:])}')
  wall = time.perf_counter() - start
  peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  print(f'train.py on IDRiD, {FLAGS.epochs} epochs: {wall:.0f} s wall (start-up and records '
        f'included), peak resident memory {peak_mb:.0f} MiB')


if __name__ == '__main__':
  entry.run(main)

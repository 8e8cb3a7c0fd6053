"""Trains and evaluates one experiment with several seeds; keeps the results here.

    python results/run_seeds.py --gin_file=configs/idrid_binary.gin \
        --data_dir=../shared/datasets/idrid-800 --seeds=0,1,2,3,4 --name=idrid_binary

Each seed runs `train.py` and `evaluate.py` (validation and test) in runs/<name>/seed_<s>
and copies metrics.json, the per-photograph predictions, run.json and the operative config
into results/<name>/seed_<s>/. Seeds already there are skipped. Then run
`python results/make_table.py` to regenerate the README table.
"""

import os
import shutil
import subprocess
import sys

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEP = ('metrics.json', 'predictions_val.csv', 'predictions_test.csv', 'run.json',
        'operative_config.gin', 'config.gin', 'history.csv')

flags.DEFINE_multi_string('gin_file', [], 'Gin files of the experiment.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings.')
flags.DEFINE_string('data_dir', None, 'IDRiD folder.')
flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds.')
flags.DEFINE_string('name', 'idrid_binary', 'Experiment name (folder under results/).')
flags.DEFINE_string('runs_dir', os.path.join(ROOT, 'runs'), 'Where the runs go.')
FLAGS = flags.FLAGS


def _call(args):
  print('$', ' '.join(args), flush=True)
  subprocess.run([sys.executable] + args, cwd=ROOT, check=True)


def main(argv):
  del argv
  for seed in FLAGS.seeds:
    out = os.path.join(ROOT, 'results', FLAGS.name, f'seed_{seed}')
    if os.path.isfile(os.path.join(out, 'metrics.json')):
      print(f'seed {seed}: already in {out}')
      continue
    run = os.path.join(FLAGS.runs_dir, FLAGS.name, f'seed_{seed}')
    common = [f'--gin_file={g}' for g in FLAGS.gin_file]
    bindings = [f'--gin_bindings={b}' for b in FLAGS.gin_bindings]
    data = [f'--data_dir={FLAGS.data_dir}'] if FLAGS.data_dir else []
    _call(['train.py', *common, *bindings, *data, f'--run_dir={run}',
           f'--gin_bindings=train.seed = {seed}'])
    _call(['evaluate.py', f'--run_dir={run}'])
    os.makedirs(out, exist_ok=True)
    for name in KEEP:
      shutil.copy(os.path.join(run, name), os.path.join(out, name))


if __name__ == '__main__':
  app.run(main)

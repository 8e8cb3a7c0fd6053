"""Trains and evaluates one experiment with several seeds; keeps the results here.

    python results/run_seeds.py --gin_file=configs/idrid_binary.gin \
        --data_dir=../shared/datasets/idrid-800 --seeds=0,1,2,3,4 --name=idrid_binary

Each seed runs `train.py` and `evaluate.py` (validation and test) in runs/<name>/seed_<s>
and copies metrics.json, the per-photograph predictions, run.json and the operative config
into results/<name>/seed_<s>/. Seeds already there are skipped. Then run
`python results/make_table.py` to regenerate the README table.

With --folds=K each seed is a K-fold cross-validation instead: K runs in
runs/<name>/seed_<s>/fold_<k>, each validated on fold k of a stratified partition of the
training photographs drawn with split seed <s> (`tfrecords.build_tfrecords.fold`), copied
to results/<name>/seed_<s>/fold_<k>/ (folds already there are skipped), then combined by
`evaluation.cross_validation` into results/<name>/seed_<s>/: threshold on the out-of-fold
predictions of all training photographs, the K fold models averaged on test.
"""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from utils import entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEP = ('metrics.json', 'predictions_val.csv', 'predictions_test.csv', 'run.json',
        'operative_config.gin', 'config.gin', 'history.csv')

flags.DEFINE_multi_string('gin_file', [], 'Gin files of the experiment.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings.')
flags.DEFINE_string('data_dir', None, 'IDRiD folder.')
flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds.')
flags.DEFINE_string('name', 'idrid_binary', 'Experiment name (folder under results/).')
flags.DEFINE_string('runs_dir', os.path.join(ROOT, 'runs'), 'Where the runs go.')
flags.DEFINE_string('results_dir', os.path.join(ROOT, 'results'),
                    'Where the kept results go (results/make_table.py reads the default).')
flags.DEFINE_integer('folds', 0, 'K-fold cross-validation per seed with this many folds; '
                     '0 = one validation split.')
flags.DEFINE_enum('normalise', 'logit_z', ['logit_z', 'none'],
                  'With --folds: how evaluation.cross_validation puts the fold models\' '
                  'scores on one scale (none for runs evaluated with the argmax rule).')
FLAGS = flags.FLAGS


class _StepFailed(Exception):
  """A train.py / evaluate.py step exited non-zero; it printed its own error."""


def _call(args):
  print('$', ' '.join(args), flush=True)
  code = subprocess.run([sys.executable] + args, cwd=ROOT, check=False).returncode
  step = args[1] if args[0] == '-m' else args[0]
  if code < 0:
    raise _StepFailed(f'{step} was stopped by signal {-code}')
  if code:
    raise _StepFailed(f'{step} exited with status {code} (its error is above)')


def _train_and_evaluate(run, out, bindings):
  common = [f'--gin_file={g}' for g in FLAGS.gin_file]
  extra = [f'--gin_bindings={b}' for b in FLAGS.gin_bindings + bindings]
  data = [f'--data_dir={FLAGS.data_dir}'] if FLAGS.data_dir else []
  _call(['train.py', *common, *extra, *data, f'--run_dir={run}'])
  _call(['evaluate.py', f'--run_dir={run}'])
  os.makedirs(out, exist_ok=True)
  # metrics.json marks the seed (or fold) as done, so it comes last and whole.
  for name in sorted(KEEP, key=lambda n: n == 'metrics.json'):
    shutil.copy(os.path.join(run, name), os.path.join(out, name + '.tmp'))
    os.replace(os.path.join(out, name + '.tmp'), os.path.join(out, name))


def _seeds(values: list[str]) -> list[int]:
  """--seeds as whole numbers >= 0, checked before any run starts."""
  if not values:
    raise app.UsageError('--seeds is empty; give one or more, e.g. --seeds=0,1,2,3,4')
  for value in values:
    if not (value.isascii() and value.isdigit()) or int(value) > 2**32 - 1:
      raise app.UsageError(f'--seeds must be whole numbers in [0, 4294967295], got {value!r}')
  return [int(value) for value in values]


def main(argv):
  del argv
  for flag in ('runs_dir', 'results_dir', 'data_dir'):
    entry.check_folder_flag(f'--{flag}', FLAGS[flag].value)
  if FLAGS.folds == 1 or FLAGS.folds < 0:
    raise app.UsageError(f'--folds must be 0 (no cross-validation) or at least 2, '
                         f'got {FLAGS.folds}')
  seeds = _seeds(FLAGS.seeds)
  try:
    _run(seeds)
  except _StepFailed as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


def _run(seeds: list[int]) -> None:
  for seed in seeds:
    out = os.path.join(FLAGS.results_dir, FLAGS.name, f'seed_{seed}')
    if os.path.isfile(os.path.join(out, 'metrics.json')):
      print(f'seed {seed}: already in {out}')
      continue
    run = os.path.join(FLAGS.runs_dir, FLAGS.name, f'seed_{seed}')
    if not FLAGS.folds:
      _train_and_evaluate(run, out, [f'train.seed = {seed}'])
      continue
    fold_outs = []
    for k in range(FLAGS.folds):
      fold_out = os.path.join(out, f'fold_{k}')
      fold_outs.append(fold_out)
      if os.path.isfile(os.path.join(fold_out, 'metrics.json')):
        print(f'seed {seed} fold {k}: already in {fold_out}')
        continue
      _train_and_evaluate(os.path.join(run, f'fold_{k}'), fold_out, [
          f'train.seed = {seed}', f'tfrecords.build_tfrecords.split_seed = {seed}',
          f'tfrecords.build_tfrecords.fold = {k}',
          f'tfrecords.build_tfrecords.num_folds = {FLAGS.folds}'])
    _call(['-m', 'evaluation.cross_validation', f'--out={out}',
           f'--normalise={FLAGS.normalise}', *fold_outs])


if __name__ == '__main__':
  entry.run(main)

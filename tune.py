"""Grid search over gin parameters, compared in TensorBoard's HParams dashboard.

    python tune.py --gin_file=configs/idrid_binary.gin --gin_file=configs/grids/idrid_lr_bs.gin \
        --data_dir=IDRID --run_dir=runs/tune_lr_bs [--parallel=2] [--gin_bindings='...']
    tensorboard --logdir runs/tune_lr_bs

The grid is a gin file (see configs/grids/). Each trial trains and evaluates on the
validation split only, in its own sub-run of --run_dir. Running the same command again
skips evaluated trials and resumes interrupted ones. Exit code 0 if at least one trial
completed (failures are printed), 1 if none did or the grid is invalid.
"""

import sys

from absl import flags

from utils import entry


def define_flags() -> None:
  flags.DEFINE_multi_string('gin_file', [], 'Gin files: the experiment, then the grid.')
  flags.DEFINE_multi_string('gin_bindings', [], "Gin bindings, e.g. 'train.epochs = 5'.")
  flags.DEFINE_string('data_dir', None, 'IDRiD folder (not needed for synthetic data).')
  flags.DEFINE_string('run_dir', None, 'Folder of the search (created; reused to resume).')
  flags.DEFINE_integer('parallel', 1, 'Trials run at once; cores are divided among them.')
  flags.mark_flag_as_required('run_dir')


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  entry.check_folder_flag('--run_dir', FLAGS.run_dir)
  entry.check_folder_flag('--data_dir', FLAGS.data_dir)
  from tuning import results, search  # pylint: disable=g-import-not-at-top
  entry.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  # Ctrl-C or `kill` stops the running trials; entry.run says how to resume.
  report = search.grid_search(FLAGS.run_dir, gin_files=FLAGS.gin_file,
                              gin_bindings=FLAGS.gin_bindings, data_dir=FLAGS.data_dir,
                              parallel=FLAGS.parallel)
  print(results.format_summary(report))
  if not report.completed:
    print('error: no trial completed', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  entry.run(main)

"""Trains a DR classifier.

    python train.py --gin_file=configs/idrid_binary.gin --data_dir=IDRID --run_dir=runs/x \
        [--gin_bindings='train.epochs = 5']

Everything but the folders is gin; see configs/. A killed run resumes when started
again with the same command; a finished run is not trained again.
"""

import sys

from absl import flags
from absl import logging

from utils import entry


def define_flags() -> None:
  flags.DEFINE_multi_string('gin_file', [], 'Gin files, applied in order.')
  flags.DEFINE_multi_string('gin_bindings', [], "Gin bindings, e.g. 'train.epochs = 5'.")
  flags.DEFINE_string('data_dir', None, 'IDRiD folder (not needed for synthetic data).')
  flags.DEFINE_string('run_dir', None, 'Run directory (created; reused to resume).')
  flags.mark_flag_as_required('run_dir')


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  entry.check_folder_flag('--run_dir', FLAGS.run_dir)
  entry.check_folder_flag('--data_dir', FLAGS.data_dir)
  entry.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  from evaluation import evaluator  # pylint: disable=g-import-not-at-top
  from training import trainer  # pylint: disable=g-import-not-at-top
  # The run keeps its evaluate bindings for evaluate.py: refuse a bad one before training.
  evaluator.check_config()
  info = trainer.train(FLAGS.run_dir, data_dir=FLAGS.data_dir)
  best = info.get('best') or {}
  print(f'run {FLAGS.run_dir}: best {best.get("monitor")} {best.get("value", float("nan")):.4f} '
        f'at epoch {best.get("epoch")} ({info.get("train_seconds", 0):.0f} s of training)')


if __name__ == '__main__':
  define_flags()
  entry.run(main)

"""Evaluates a trained run on validation and test.

    python evaluate.py --run_dir=runs/x [--gin_bindings="evaluate.threshold_rule = 'argmax'"]

Restores the best checkpoint with the run's own configuration (its operative_config.gin
and config.gin, so the experiment's evaluate.* bindings apply), chooses the decision
threshold on validation, applies it unchanged to test, and writes metrics.json,
predictions, figures and TensorBoard summaries into the run directory.
"""

import os

from absl import flags

from utils import entry


def define_flags() -> None:
  flags.DEFINE_string('run_dir', None, 'Run directory written by train.py.')
  flags.DEFINE_multi_string('gin_file', [], 'Extra gin files, after the run\'s config.')
  flags.DEFINE_multi_string('gin_bindings', [], "Gin bindings, e.g. \"evaluate.splits = ['val']\".")
  flags.mark_flag_as_required('run_dir')


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  entry.check_folder_flag('--run_dir', FLAGS.run_dir)
  from training import run_dir as rd  # pylint: disable=g-import-not-at-top
  config = os.path.join(FLAGS.run_dir, rd.OPERATIVE_CONFIG)
  if not os.path.isfile(config):
    raise FileNotFoundError(f'{FLAGS.run_dir} is not a trained run (missing {config})')
  given = os.path.join(FLAGS.run_dir, rd.CONFIG)  # absent in runs of older versions
  configs = [config] + ([given] if os.path.isfile(given) else [])
  entry.parse_gin(configs + FLAGS.gin_file, FLAGS.gin_bindings)
  from evaluation import evaluator  # pylint: disable=g-import-not-at-top
  results = evaluator.evaluate(FLAGS.run_dir)
  print(evaluator.format_table(results))
  print(f'wrote {os.path.join(FLAGS.run_dir, "metrics.json")} and figures/')


if __name__ == '__main__':
  define_flags()
  entry.run(main)

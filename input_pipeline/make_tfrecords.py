"""Builds the TFRecords of an IDRiD folder and prints a summary.

    python -m input_pipeline.make_tfrecords --data_dir=DIR --out_dir=DIR \
        [--gin_file=configs/idrid_binary.gin] [--gin_bindings='tfrecords.build_tfrecords.shard_size = 64']

With an experiment's gin file, the records are those train.py builds for it (its
`tfrecords.build_tfrecords` bindings); the rest of the file is parsed and not used.
"""

from __future__ import annotations

import time

from absl import flags

from utils import entry


def define_flags() -> None:
  flags.DEFINE_string('data_dir', None, 'IDRiD folder (official layout or images/ + labels/).')
  flags.DEFINE_string('out_dir', None, 'Folder for the TFRecords and manifest.json.')
  flags.DEFINE_multi_string('gin_file', [], 'Gin files, applied in order.')
  flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings, applied after the files.')
  flags.DEFINE_bool('strict', False, 'Fail on the first unusable photograph.')
  flags.DEFINE_bool('force', False, 'Rebuild even when matching records exist.')
  flags.mark_flags_as_required(['data_dir', 'out_dir'])


def format_summary(manifest: dict, out_dir: str, seconds: float) -> str:
  """Human-readable summary of a build."""
  lines = [f'TFRecords in {out_dir} '
           f'({"reused" if manifest.get("reused") else "built"} in {seconds:.1f} s)']
  for split, c in manifest['counts'].items():
    classes = ', '.join(f'{k} {v}' for k, v in c['per_class'].items())
    grades = ' '.join(f'{g}:{n}' for g, n in c['per_grade'].items())
    lines.append(f'  {split:<5} {c["total"]:4d} images ({classes}; grades {grades})')
  lines.append(f'  dropped {len(manifest["dropped"])}, rejected {len(manifest["rejected"])}')
  for d in manifest['dropped']:
    lines.append(f'    dropped  {d["split"]}/{d["name"]}: {d["reason"]}')
  for r in manifest['rejected']:
    lines.append(f'    rejected {r["split"]}/{r["name"]}: {r["reason"]}')
  return '\n'.join(lines)


def main(argv):
  del argv
  from input_pipeline import tfrecords  # pylint: disable=g-import-not-at-top
  FLAGS = flags.FLAGS
  start = time.time()
  entry.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)  # experiment files name every module
  # Only pass switches that are on, so gin bindings of the same names still apply.
  switches = {k: True for k in ('strict', 'force') if FLAGS[k].value}
  manifest = tfrecords.build_tfrecords(FLAGS.data_dir, FLAGS.out_dir, **switches)
  print(format_summary(manifest, FLAGS.out_dir, time.time() - start))


if __name__ == '__main__':
  define_flags()
  entry.run(main)

"""Builds sharded TFRecords from an IDRiD folder.

    <out_dir>/
      manifest.json                 counts, parameters, source hashes, dropped, rejects
      splits.csv                    split,name,grade,label,sha256 of every record
      train-00000-of-00003.tfrecord ...
      val-00000-of-00001.tfrecord
      test-00000-of-00001.tfrecord

The folder is written under a temporary name beside `out_dir` and renamed into place
when complete, so an interrupted build never leaves a dataset that looks finished. A
build whose inputs and parameters match an existing manifest reuses it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import time
from typing import Any, Callable, Sequence

from absl import logging
import gin
import tensorflow as tf

from input_pipeline import encode
from input_pipeline import idrid
from input_pipeline import integrity
from input_pipeline import preprocessing
from utils import checks
from utils import gin_utils
from utils import staging

# How gin names build_tfrecords' parameters in error messages.
_PARAMETER = 'tfrecords.build_tfrecords'
MANIFEST = 'manifest.json'
SPLITS_CSV = 'splits.csv'
RECORD_SPLITS = ('train', 'val', 'test')
# Bump when preprocessing or the record format changes, so old records are rebuilt.
FORMAT_VERSION = 1

# Feature keys.
IMAGE_KEY = 'image/encoded'
LABEL_KEY = 'image/label'
GRADE_KEY = 'image/grade'
DME_KEY = 'image/dme'
NAME_KEY = 'image/name'
SPLIT_KEY = 'image/split'
HASH_KEY = 'image/sha256'


def _bytes(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def serialize(encoded: bytes, label: int, record: idrid.Record, split: str,
              digest: str) -> bytes:
  """One tf.train.Example for a preprocessed photograph."""
  return tf.train.Example(features=tf.train.Features(feature={
      IMAGE_KEY: _bytes(encoded), LABEL_KEY: _int(label), GRADE_KEY: _int(record.grade),
      DME_KEY: _int(record.dme), NAME_KEY: _bytes(record.name.encode()),
      SPLIT_KEY: _bytes(split.encode()), HASH_KEY: _bytes(digest.encode()),
  })).SerializeToString()


def _fingerprint(params: dict[str, Any], sources: dict[str, str]) -> str:
  blob = json.dumps({'params': params, 'sources': sources, 'version': FORMAT_VERSION},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


def read_manifest(records_dir: str) -> dict[str, Any]:
  """Loads `manifest.json` of a records folder."""
  path = os.path.join(records_dir, MANIFEST)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no TFRecords here (missing {path}); build them with '
                            'python -m input_pipeline.make_tfrecords')
  with open(path) as f:
    return json.load(f)


def shards_present(records_dir: str, manifest: dict[str, Any]) -> bool:
  """Whether every shard that `manifest` (of `records_dir`) lists is on disk."""
  return all(os.path.isfile(os.path.join(records_dir, name))
             for names in manifest.get('shards', {}).values() for name in names)


def shard_paths(records_dir: str, split: str) -> list[str]:
  """Absolute paths of one split's shards, from the manifest."""
  manifest = read_manifest(records_dir)
  if split not in manifest['shards']:
    raise ValueError(f'unknown split {split!r}; records hold {sorted(manifest["shards"])}')
  return [os.path.join(records_dir, s) for s in manifest['shards'][split]]


def _preprocess_all(paths: Sequence[str], size: int, contrast: str | None,
                    num_workers: int) -> list[tuple[bytes | None, str]]:
  results: list[tuple[bytes | None, str]] = [(None, '')] * len(paths)
  start, step = time.time(), max(1, len(paths) // 10)
  ctx = multiprocessing.get_context('spawn')
  pool = concurrent.futures.ProcessPoolExecutor(
      num_workers, mp_context=ctx, initializer=encode.exit_with_parent, initargs=(os.getpid(),))
  try:
    futures = {pool.submit(encode.preprocess_to_png, p, size, contrast): i
               for i, p in enumerate(paths)}
    for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
      results[futures[future]] = future.result()
      if done % step == 0 or done == len(paths):
        elapsed = time.time() - start
        logging.info('preprocessed %d/%d photographs (%.1f s, %.1f images/s)',
                     done, len(paths), elapsed, done / max(elapsed, 1e-9))
  except BaseException:
    # Ctrl-C, `kill` or an error: the photographs still queued are dropped, not processed
    # first. (Not a `with` block: its own shutdown would undo the cancelling.)
    pool.shutdown(wait=True, cancel_futures=True)
    raise
  pool.shutdown(wait=True)
  return results


def _check_params(image_size: int, contrast: str | None, label_mapping: str,
                  val_fraction: float, split_seed: int, fold: int | None, num_folds: int,
                  shard_size: int, num_workers: int | None, **unused: Any
                  ) -> Callable[[int], int]:
  """Checks the parameters by their gin names; returns the label mapping's function."""
  del unused
  for name, value, low in (('image_size', image_size, 32), ('split_seed', split_seed, 0),
                           ('shard_size', shard_size, 1)):
    checks.check_number(f'{_PARAMETER}.{name}', value, low=low, whole=True)
  checks.check_number(f'{_PARAMETER}.val_fraction', val_fraction, low=0, high=1,
                      high_open=True, note='0 is no validation split')
  checks.check_number(f'{_PARAMETER}.num_workers', num_workers, low=0, whole=True,
                      none_ok=True, note='0 or None is all cores')
  if fold is not None:
    integrity.check_fold(num_folds, fold)
  preprocessing.check_contrast(contrast, f'{_PARAMETER}.contrast')
  return idrid.label_fn(label_mapping, f'{_PARAMETER}.label_mapping')


def check_config() -> None:
  """Checks the gin-configured parameters of `build_tfrecords` before any work."""
  _check_params(**gin_utils.configured_arguments(build_tfrecords))


@gin.configurable(module='tfrecords', denylist=['data_dir', 'out_dir'])
def build_tfrecords(data_dir: str, out_dir: str, image_size: int = 256,
                    contrast: str | None = None, label_mapping: str = 'binary',
                    val_fraction: float = 0.2, split_seed: int = 0,
                    fold: int | None = None, num_folds: int = 5,
                    shard_size: int = 128, strict: bool = False,
                    num_workers: int | None = None,
                    force: bool = False) -> dict[str, Any]:
  """Builds (or reuses) the TFRecords of an IDRiD folder.

  Args:
    data_dir: IDRiD folder (see `input_pipeline.idrid`).
    out_dir: Records folder to create.
    image_size: Side of the square preprocessed images, in pixels.
    contrast: Contrast normalisation (`preprocessing.apply_contrast`), or None.
    label_mapping: 'binary' (NRDR 0-1 / RDR 2-4) or 'grades'.
    val_fraction: Share of training groups moved to validation, per grade.
    split_seed: Seed of the validation split (and of the fold partition).
    fold: For k-fold cross-validation: validation is fold `fold` (0-based) of a
      stratified partition of the training groups into `num_folds` folds
      (`integrity.split_fold`), and val_fraction is not used. None: one split of
      val_fraction.
    num_folds: Folds of the partition, with `fold`.
    shard_size: Examples per shard.
    strict: Fail on the first unusable photograph instead of rejecting it.
    num_workers: Preprocessing processes; default: all cores.
    force: Rebuild even if matching records exist.

  Returns:
    The manifest.

  Raises:
    idrid.DataError: Missing folder, bad label file, empty split, or (strict) an
      unusable photograph.
  """
  start = time.time()
  map_label = _check_params(image_size, contrast, label_mapping, val_fraction, split_seed,
                            fold, num_folds, shard_size, num_workers)
  manifest_path = os.path.join(out_dir, MANIFEST)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f'{out_dir} is a file, not a folder; choose another --out_dir')
  # A rebuild replaces the whole folder: only ever one of records (force or not), and never
  # one holding the photographs.
  inside = os.path.commonpath([os.path.abspath(out_dir), os.path.abspath(data_dir)])
  if inside == os.path.abspath(out_dir):
    raise FileExistsError(f'{out_dir} holds the data folder {data_dir}; choose another '
                          '--out_dir')
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(manifest_path):
    raise FileExistsError(f'{out_dir} exists and is not a TFRecords folder; '
                          'choose another --out_dir')
  records, rejects = idrid.load_records(data_dir)
  if strict and rejects:
    raise idrid.DataError(f'{rejects[0].path}: {rejects[0].reason}')
  hashes = {r.path: integrity.file_hash(r.path) for r in records}
  params = dict(image_size=image_size, contrast=contrast, label_mapping=label_mapping,
                val_fraction=val_fraction, split_seed=split_seed, shard_size=shard_size,
                strict=strict)
  if fold is not None:
    # Only fold runs carry these keys, so records built without folds keep their fingerprint.
    params.update(fold=fold, num_folds=num_folds)
    del params['val_fraction']
  sources = {f'{r.split}/{r.name}': hashes[r.path] for r in records}
  fingerprint = _fingerprint(params, sources)
  if os.path.isfile(manifest_path) and not force:
    existing = read_manifest(out_dir)
    if existing.get('fingerprint') == fingerprint and shards_present(out_dir, existing):
      logging.info('reusing TFRecords in %s (inputs and parameters unchanged)', out_dir)
      existing['reused'] = True
      return existing
    logging.info('inputs, parameters or shards changed: rebuilding %s', out_dir)

  groups, test, dropped = integrity.deduplicate(records, hashes, map_label)
  if fold is None:
    train, val = integrity.split_train_val(groups, val_fraction, split_seed)
  else:
    train, val = integrity.split_fold(groups, num_folds, fold, split_seed)
  by_split = {'train': train, 'val': val, 'test': test}
  ordered = [(s, r) for s in RECORD_SPLITS for r in by_split[s]]
  logging.info('preprocessing %d photographs from %s to %dx%d', len(ordered), data_dir,
               image_size, image_size)
  results = _preprocess_all([r.path for _, r in ordered], image_size, contrast,
                            num_workers or os.cpu_count() or 1)

  kept = {s: [] for s in RECORD_SPLITS}
  reject_rows = [dict(split=r.split, name=r.name, file=r.path, reason=r.reason)
                 for r in rejects]
  for (split, record), (encoded, error) in zip(ordered, results):
    if encoded is None:
      logging.warning('rejected %s', error)
      if strict:
        raise idrid.DataError(error)
      reject_rows.append(dict(split=record.split, name=record.name, file=record.path,
                              reason=error))
    else:
      kept[split].append((record, encoded))
  for split in RECORD_SPLITS:
    if not kept[split] and not (split == 'val' and fold is None and val_fraction == 0):
      raise idrid.DataError(f'split {split} is empty after removing duplicates and '
                            f'rejects ({data_dir})')

  with staging.staged(out_dir) as tmp_dir:
    shards, counts = {}, {}
    class_names = idrid.CLASS_NAMES[label_mapping]
    for split in RECORD_SPLITS:
      items = kept[split]
      n_shards = max(1, -(-len(items) // shard_size))
      shards[split] = []
      for k in range(n_shards):
        name = f'{split}-{k:05d}-of-{n_shards:05d}.tfrecord'
        with tf.io.TFRecordWriter(os.path.join(tmp_dir, name)) as writer:
          for record, encoded in items[k * shard_size:(k + 1) * shard_size]:
            writer.write(serialize(encoded, map_label(record.grade), record, split,
                                   hashes[record.path]))
        shards[split].append(name)
      per_class = {c: 0 for c in class_names}
      per_grade = {str(g): 0 for g in idrid.GRADES}
      for record, _ in items:
        per_class[class_names[map_label(record.grade)]] += 1
        per_grade[str(record.grade)] += 1
      counts[split] = dict(total=len(items), per_class=per_class, per_grade=per_grade)
    with open(os.path.join(tmp_dir, SPLITS_CSV), 'w') as f:
      f.write('split,name,grade,label,sha256\n')
      for split in RECORD_SPLITS:
        for record, _ in kept[split]:
          f.write(f'{split},{record.name},{record.grade},{map_label(record.grade)},'
                  f'{hashes[record.path]}\n')
    manifest = dict(
        format_version=FORMAT_VERSION, fingerprint=fingerprint, data_dir=os.path.abspath(data_dir),
        params=params, class_names=list(class_names), counts=counts, shards=shards,
        dropped=[dict(split=d.split, name=d.name, file=d.path, reason=d.reason)
                 for d in dropped],
        rejected=reject_rows, sources=sources, build_seconds=round(time.time() - start, 2))
    with open(os.path.join(tmp_dir, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=2)
  manifest['reused'] = False
  logging.info('wrote TFRecords to %s in %.1f s', out_dir, manifest['build_seconds'])
  return manifest

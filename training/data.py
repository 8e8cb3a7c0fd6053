"""Finds the photographs of a run and builds (or reuses) their TFRecords."""

from __future__ import annotations

import hashlib
import json
import os

from absl import logging
import gin

from input_pipeline import synthetic
from input_pipeline import tfrecords
from utils import checks
from utils import gin_utils

SOURCES = ('idrid', 'synthetic')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_dir() -> str:
  """Folder for generated data and records: $DR_CACHE_DIR, else <repo>/.cache."""
  return os.environ.get('DR_CACHE_DIR', os.path.join(REPO_ROOT, '.cache'))


@gin.configurable(module='data')
def synthetic_data(num_train: int = 240, num_test: int = 80, width: int = 400,
                   height: int = 266, seed: int = 0) -> str:
  """Generates the synthetic fundus set into the cache (once) and returns its folder.

  The folder is named after every parameter `synthetic.ensure_synthetic` would use,
  gin bindings of `synthetic.generate` (e.g. grade_probs) and the generator version
  included, so configurations that differ in any of them get separate folders.
  """
  synthetic.check_params('data.synthetic_data.', num_train, num_test, width, height, seed)
  params = dict(num_train=num_train, num_test=num_test, width=width, height=height,
                seed=seed)
  effective = synthetic._generate_params(params)  # pylint: disable=protected-access
  key = hashlib.sha256(json.dumps(effective, sort_keys=True).encode()).hexdigest()[:10]
  out_dir = os.path.join(cache_dir(), f'synthetic-{key}')
  return synthetic.ensure_synthetic(out_dir, **params)


@gin.configurable(module='data', denylist=['data_dir'])
def prepare_records(data_dir: str | None = None, source: str = 'idrid',
                    records_dir: str | None = None) -> tuple[str, str]:
  """Resolves the data folder and returns (data_dir, records_dir) with records built.

  Args:
    data_dir: IDRiD folder; required when source is 'idrid'.
    source: 'idrid' (photographs in data_dir) or 'synthetic' (generated, cached).
    records_dir: Where the TFRecords go; default a folder in the cache named after
      the data folder and the record parameters, so experiments that differ in
      preprocessing keep separate records.
  """
  checks.check_choice('data.prepare_records.source', source, SOURCES)
  if source == 'synthetic':
    data_dir = data_dir or synthetic_data()
  if not data_dir:
    raise ValueError('no data: pass --data_dir=IDRID_FOLDER or use '
                     "data.prepare_records.source = 'synthetic'")
  if records_dir is None:
    params = gin.get_bindings('tfrecords.build_tfrecords')
    key = json.dumps({'data': os.path.abspath(data_dir), 'params': params},
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    name = os.path.basename(os.path.normpath(data_dir)).replace(' ', '_')
    records_dir = os.path.join(cache_dir(), 'tfrecords', f'{name}-{digest}')
  manifest = tfrecords.build_tfrecords(data_dir, records_dir)
  logging.info('records %s: %s', records_dir,
               ', '.join(f'{s} {c["total"]}' for s, c in manifest['counts'].items()))
  return data_dir, records_dir


def check_config() -> None:
  """Checks the configured data source, synthetic set and records before any work.

  Raises:
    ValueError: Naming the gin parameter at fault.
  """
  source = gin_utils.configured_arguments(prepare_records)['source']
  checks.check_choice('data.prepare_records.source', source, SOURCES)
  if source == 'synthetic':
    synthetic.check_params('data.synthetic_data.',
                           **gin_utils.configured_arguments(synthetic_data))
  tfrecords.check_config()

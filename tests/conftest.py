"""Shared fixtures: gin is reset around every test; real data skips when absent."""

import os
import pathlib

import gin
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATASETS = pathlib.Path(
    os.environ.get('DR_SHARED_DATASETS', REPO_ROOT.parent / 'shared' / 'datasets'))
IDRID_800 = SHARED_DATASETS / 'idrid-800'
IDRID_FULLRES = SHARED_DATASETS / 'idrid-fullres-sample'
IDRID_SEG = SHARED_DATASETS / 'idrid-seg-800'


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.is_dir():
    pytest.skip(f'real IDRiD data not found at {path}')
  return path


@pytest.fixture
def idrid_800() -> pathlib.Path:
  return _require(IDRID_800)


@pytest.fixture
def idrid_fullres() -> pathlib.Path:
  return _require(IDRID_FULLRES)


@pytest.fixture
def idrid_seg() -> pathlib.Path:
  return _require(IDRID_SEG)


@pytest.fixture(scope='session')
def synthetic_dir(tmp_path_factory) -> pathlib.Path:
  """A small synthetic IDRiD-layout dataset (36 train, 12 test, 160x106), made once."""
  from input_pipeline import synthetic
  out = tmp_path_factory.mktemp('synthetic') / 'idrid'
  synthetic.generate(str(out), num_train=36, num_test=12, width=160, height=106, seed=1)
  return out


@pytest.fixture(scope='session')
def synthetic_records(synthetic_dir, tmp_path_factory) -> pathlib.Path:
  """TFRecords of `synthetic_dir` at 64 px, built once."""
  from input_pipeline import tfrecords
  out = tmp_path_factory.mktemp('records') / 'tfr'
  gin.clear_config()
  tfrecords.build_tfrecords(str(synthetic_dir), str(out), image_size=64, shard_size=8,
                            num_workers=1)
  return out

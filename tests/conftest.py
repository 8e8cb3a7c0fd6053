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

"""A quickstart model trained for real, once per test session, shared by test modules.

configs/quickstart.gin shrunk by bindings (fewer photographs and epochs, same 256 px
and architecture): about a minute on a laptop CPU, and good enough that its Grad-CAM
points at the synthetic lesions. Test modules wrap it in their own fixture:

  @pytest.fixture(scope='session')
  def quickstart_run(tmp_path_factory):
    return fixtures_models.quickstart_run(tmp_path_factory)
"""

from __future__ import annotations

import pathlib

import gin
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART_BINDINGS = (
    'data.synthetic_data.num_train = 160',  # photographs, 20% to validation
    'data.synthetic_data.num_test = 40',
    'train.epochs = 6',
)

_RUNS: dict[str, pathlib.Path] = {}


def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """The run directory of the shrunk quickstart, trained on first use in this session.

  The synthetic data and records go to a session temporary folder (DR_CACHE_DIR), never
  into the repository.
  """
  if 'quickstart' not in _RUNS:
    from training import trainer  # pylint: disable=g-import-not-at-top
    from utils import entry  # pylint: disable=g-import-not-at-top
    root = tmp_path_factory.mktemp('quickstart')
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv('DR_CACHE_DIR', str(root / 'cache'))
      mp.chdir(REPO_ROOT)  # gin includes are relative to the repository
      gin.clear_config()
      try:
        entry.parse_gin(['configs/quickstart.gin'], list(QUICKSTART_BINDINGS))
        trainer.train(str(root / 'run'))
      finally:
        gin.clear_config()
    _RUNS['quickstart'] = root / 'run'
  return _RUNS['quickstart']

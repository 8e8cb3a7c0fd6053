"""Layout of a run directory, named once.

    runs/<name>/
      operative_config.gin     every gin parameter the run used
      config.gin               every binding given to the run (evaluate.py reads it too)
      run.json                 data and records folders, classes, seed, status
      history.csv              per-epoch metrics (appended across resumes)
      history_stopped.csv      rows of epochs a resumed run trained again (if any)
      checkpoints/
        best.keras             best model by the validation metric
        best.json              that metric's value and epoch
        backup/                latest state for resume (BackupAndRestore)
      train/ validation/       TensorBoard event files written during training
      eval/                    TensorBoard summaries of evaluate.py
      metrics.json             evaluate.py's results, per split
      predictions_<split>.csv  evaluate.py's per-photograph probabilities
      figures/                 confusion matrices, ROC curves, Grad-CAM galleries
      .lock                    held by the train.py that is training the run
"""

import contextlib
import fcntl
import json
import os
import socket
from typing import Any, Iterator

from absl import logging

from utils import staging

OPERATIVE_CONFIG = 'operative_config.gin'
CONFIG = 'config.gin'
RUN_INFO = 'run.json'
HISTORY = 'history.csv'
HISTORY_STOPPED = 'history_stopped.csv'
CHECKPOINT_DIR = 'checkpoints'
BEST_MODEL = os.path.join(CHECKPOINT_DIR, 'best.keras')
BEST_INFO = os.path.join(CHECKPOINT_DIR, 'best.json')
BACKUP_DIR = os.path.join(CHECKPOINT_DIR, 'backup')
TRAIN_DIR = 'train'
VALIDATION_DIR = 'validation'
EVAL_DIR = 'eval'
METRICS = 'metrics.json'
FIGURES_DIR = 'figures'
LOCK = '.lock'


@contextlib.contextmanager
def training_lock(run_dir: str) -> Iterator[None]:
  """Holds the run folder's lock while a run trains; a second process is refused.

  Two train.py on one folder (the same command started twice, or a tune.py rerun while the
  killed search's trial still trains) would mix their history, checkpoints and backup.
  The operating system releases the lock when its process ends, however it ends.

  Raises:
    BlockingIOError: One line naming the folder and the process that holds it.
  """
  path = os.path.join(run_dir, LOCK)
  with open(path, 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'another process'
      raise BlockingIOError(f'{run_dir} is being trained by {holder}; wait for it to end '
                            'or stop it, then run the same command again') from None
    except OSError as e:
      if e.errno not in staging.NO_LOCKS:
        raise
      logging.warning('%s: this file system has no locks (%s); nothing stops a second '
                      'train.py on this folder', run_dir, e.strerror)
      yield
      return
    f.seek(0)
    f.truncate()
    f.write(f'process {os.getpid()} on {socket.gethostname()}')
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def write_text(path: str, text: str) -> None:
  """Writes a file atomically (temporary file, then rename)."""
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.isfile(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, data: Any) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  write_text(path, json.dumps(data, indent=2))


def read_json(path: str) -> Any:
  """The content of a JSON file; ValueError naming the file if it is not JSON (truncated)."""
  with open(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ValueError(f'{path} is not valid JSON ({e})') from e

"""One trial: `train.py`, then `evaluate.py` on the validation split, as subprocesses.

A trial's sub-run is an ordinary run directory (see `training.run_dir`) plus:

    <trial>/
      trial.json          bindings, command line, status, error, seconds
      train.log           stdout and stderr of train.py
      evaluate.log        stdout and stderr of evaluate.py
      events.out.tfevents.*  HParams session and validation metrics (hparams.py)

Subprocesses isolate trials from each other (a crash or an exhausted memory takes one
trial down, not the search) and let several run at once. train.py resumes an
interrupted sub-run and skips a completed one, so running a trial again is always safe.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

from training import run_dir as rd

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIAL_INFO = 'trial.json'
TRAIN_LOG = 'train.log'
EVALUATE_LOG = 'evaluate.log'
VAL_SPLIT = 'val'
EVAL_BINDING = f"evaluate.splits = ['{VAL_SPLIT}']"


@dataclasses.dataclass
class Outcome:
  """How a trial ended: status 'completed', 'failed' or 'interrupted'."""
  status: str
  error: str = ''
  seconds: float = 0.0
  metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


def val_metrics(trial_dir: str) -> dict[str, Any] | None:
  """The trial's validation metrics from metrics.json, or None if not evaluated."""
  path = os.path.join(trial_dir, rd.METRICS)
  if not os.path.isfile(path):
    return None
  try:
    return rd.read_json(path).get('splits', {}).get(VAL_SPLIT)
  except ValueError:  # A truncated file from a killed writer: evaluate again.
    return None


def threads_per_trial(parallel: int) -> int:
  """Cores of this process divided among `parallel` trials, at least 1."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, (cores or 1) // max(1, parallel))


def trial_env(threads: int, share_gpu: bool) -> dict[str, str]:
  """The environment of a trial's processes: its share of the CPU threads."""
  env = dict(os.environ)
  for key in ('TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS', 'OMP_NUM_THREADS'):
    env[key] = str(threads)
  if share_gpu:  # Parallel trials on one GPU: allocate memory on demand.
    env.setdefault('TF_FORCE_GPU_ALLOW_GROWTH', 'true')
  return env


def commands(trial_dir: str, gin_files: Sequence[str], gin_bindings: Sequence[str],
             data_dir: str | None, evaluate_bindings: Sequence[str] = ()
             ) -> list[tuple[str, list[str]]]:
  """(log file, argv) of train.py and of evaluate.py restricted to validation."""
  config = [f'--gin_file={f}' for f in gin_files] + [f'--gin_bindings={b}'
                                                    for b in gin_bindings]
  train = [sys.executable, os.path.join(REPO_ROOT, 'train.py'), f'--run_dir={trial_dir}']
  if data_dir:
    train.append(f'--data_dir={data_dir}')
  evaluate = [sys.executable, os.path.join(REPO_ROOT, 'evaluate.py'),
              f'--run_dir={trial_dir}']
  evaluate_only = [f'--gin_bindings={b}' for b in [*evaluate_bindings, EVAL_BINDING]]
  return [(TRAIN_LOG, train + config), (EVALUATE_LOG, evaluate + config + evaluate_only)]


# The line of a Python traceback that names the exception, e.g. 'ValueError: ...'.
_EXCEPTION = re.compile(r'^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b')


def last_line(path: str) -> str:
  """What a failed command's log says went wrong, in one line.

  From the output of the log's last command ('$ ...' line), as `failure_line` picks it.
  """
  try:
    with open(path, errors='replace') as f:
      lines = f.readlines()[-200:]
  except OSError:
    return ''
  lines = [line.strip() for line in lines if line.strip()]
  commands = [i for i, line in enumerate(lines) if line.startswith('$ ')]
  if commands:
    lines = lines[commands[-1] + 1:]  # may be empty: the command printed nothing
  return failure_line(lines)


def failure_line(lines: list[str]) -> str:
  """What a failed command's output says went wrong, in one line.

  Its last 'error: ' line (the entry points' one-line errors, without the prefix); else the
  last line naming an exception (a traceback's, without the lines gin appends to it, such
  as "In call to configurable 'train'"); else its last non-empty line.
  """
  lines = [line.strip() for line in lines if line.strip()]
  for line in reversed(lines):
    if line.startswith('error: '):
      return line[len('error: '):]
  for line in reversed(lines):
    if _EXCEPTION.match(line):
      return line
  return lines[-1] if lines else ''


def _run(argv: list[str], log_path: str, env: dict[str, str], stop: threading.Event,
         deadline: float | None = None) -> tuple[int, bool]:
  """Runs one command with its output in `log_path`.

  Terminates it when `stop` is set or at `deadline` (a `time.monotonic()` value).

  Returns:
    (exit code, whether the deadline ended it).
  """
  with open(log_path, 'a') as log:
    log.write(f'\n$ {" ".join(argv)}\n')
    log.flush()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL)
    while True:
      try:
        return proc.wait(timeout=1.0), False
      except subprocess.TimeoutExpired:
        late = deadline is not None and time.monotonic() > deadline
        if stop.is_set() or late:
          proc.terminate()
          try:
            return proc.wait(timeout=30), late
          except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(), late


def _timed_out(log_path: str, timeout: float, when: str, start: float) -> Outcome:
  """The failed outcome of a trial stopped by its time limit, also noted in its log."""
  error = f'stopped by tune.grid_search.trial_timeout = {timeout:g} s, {when}'
  with open(log_path, 'a') as log:
    log.write(f'\n{error}\n')
  return Outcome('failed', error, time.time() - start)


def run_trial(trial_dir: str, gin_files: Sequence[str], gin_bindings: Sequence[str],
              data_dir: str | None, evaluate_bindings: Sequence[str],
              env: dict[str, str], stop: threading.Event,
              timeout: float | None = None) -> Outcome:
  """Trains and evaluates one trial; never raises for a failure of the trial itself.

  A trial still running `timeout` seconds after this call started it is stopped and
  failed. The limit holds for each call: running the trial again gives it `timeout` seconds
  more, and its training resumes from the last epoch it saved.
  """
  os.makedirs(trial_dir, exist_ok=True)
  start = time.time()
  deadline = time.monotonic() + timeout if timeout is not None else None
  for log_name, argv in commands(trial_dir, gin_files, gin_bindings, data_dir,
                                 evaluate_bindings):
    if stop.is_set():
      return Outcome('interrupted', 'interrupted', time.time() - start)
    log_path = os.path.join(trial_dir, log_name)
    command = os.path.basename(argv[1])
    if deadline is not None and time.monotonic() > deadline:
      return _timed_out(log_path, timeout, f'before {command} started', start)
    try:
      code, late = _run(argv, log_path, env, stop, deadline)
    except OSError as e:
      return Outcome('failed', f'{argv[1]}: {e}', time.time() - start)
    if late:
      return _timed_out(log_path, timeout, f'during {command}', start)
    if stop.is_set() and code != 0:
      return Outcome('interrupted', 'interrupted', time.time() - start)
    if code != 0:
      reason = f'killed by signal {-code}' if code < 0 else f'exit {code}'
      detail = last_line(log_path)
      error = f'{command} {reason}' + (f': {detail}' if detail else '')
      return Outcome('failed', error, time.time() - start)
  metrics = val_metrics(trial_dir)
  if metrics is None:
    return Outcome('failed', f'evaluate.py wrote no {VAL_SPLIT} metrics to {rd.METRICS}',
                   time.time() - start)
  return Outcome('completed', '', time.time() - start, metrics)

"""Grid search over gin bindings: one sub-run per trial, validation metrics only.

    <run_dir>/
      events.out.tfevents.*     HParams experiment config (hparams.py)
      results.csv               one row per trial, best first (results.py)
      <trial name>/             an ordinary run directory per trial (runner.py), e.g.
                                learning_rate=0.001,batch_size=16/

Each trial is the base experiment (its gin files and bindings) plus the trial's
bindings, trained by `train.py` and evaluated by `evaluate.py` on the validation split
only; the test split is never touched. Before any trial starts, the parent parses
every trial's configuration once (a misspelt parameter fails the whole search at once),
checks its values as train.py and evaluate.py would (a trial with a refused value, say
a negative learning rate, fails at once, without records or training; the others go on)
and builds the TFRecords of each distinct records configuration, so parallel trials
never race to build them. A trial already evaluated is skipped; one interrupted is
resumed by running it again; one that fails is recorded and the others go on.

The grid's gin file must `import tuning.search`, so that the trials' own train.py and
evaluate.py, which parse the same files, know `tune.grid_search`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import threading
import time
from typing import Any, Sequence

from absl import logging
import gin

from evaluation import evaluator
from evaluation import metrics as metrics_lib
from training import data
from training import run_dir as rd
from training import trainer
from tuning import grid as grid_lib
from tuning import hparams
from tuning import results
from tuning import runner
from utils import checks
from utils import gin_utils

GIN_IMPORT = 'import tuning.search'
DEFAULT_METRICS = ('balanced_accuracy', 'roc_auc', 'accuracy', 'sensitivity',
                   'specificity', 'f1')
_RECORD_CONFIGURABLES = ('data.prepare_records', 'data.synthetic_data', 'synthetic.generate',
                         'tfrecords.build_tfrecords')


def _raw_grid(grid: Any) -> tuple[Any, bool]:
  """The grid as gin parsed it (references unresolved), and whether gin bound it."""
  try:
    raw = gin.query_parameter(grid_lib.GRID_PARAMETER)
  except ValueError:
    return grid, False
  same = isinstance(raw, dict) and isinstance(grid, dict) and list(raw) == list(grid)
  return (raw if same or grid is None else grid), True


def _parse(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  gin.clear_config()
  gin_utils.parse_gin(gin_files, bindings, finalize=False)


def _records_key() -> str:
  """The bindings that decide which records a configuration trains on."""
  return json.dumps([gin.get_bindings(c) for c in _RECORD_CONFIGURABLES],
                    sort_keys=True, default=repr)


def check_trials(trials: Sequence[grid_lib.Trial], gin_files: Sequence[str],
                 gin_bindings: Sequence[str], evaluate_bindings: Sequence[str] = ()
                 ) -> tuple[dict[str, str], dict[str, str]]:
  """Parses every trial's configuration and checks its values as train.py and evaluate.py
  would before writing anything.

  Returns:
    (trial name -> records key, trial name -> why its values are refused). A refused trial
    is failed without building its records or starting it; the others go on.

  Raises:
    gin_utils.ConfigError: One line naming the trial whose bindings gin rejects (say a
      misspelt parameter), or `tune.grid_search.evaluate_bindings`: the whole search is
      refused.
  """
  try:  # the evaluate bindings on the base: a fault of theirs would refuse every trial
    _parse(gin_files, [*gin_bindings, *evaluate_bindings, runner.EVAL_BINDING])
    evaluator.check_config()
  except gin_utils.ConfigError as e:
    raise gin_utils.ConfigError(f'tune.grid_search.evaluate_bindings: {e}') from e
  except ValueError as e:
    raise ValueError(f'tune.grid_search.evaluate_bindings: {e}') from e
  keys, refused = {}, {}
  for trial in trials:
    try:
      _parse(gin_files, [*gin_bindings, *trial.bindings])  # what train.py parses
      keys[trial.name] = _records_key()
      trainer.check_config()
      # ...and what evaluate.py parses: the evaluate bindings come after the trial's.
      _parse(gin_files, [*gin_bindings, *trial.bindings, *evaluate_bindings,
                         runner.EVAL_BINDING])
      evaluator.check_config()
    except gin_utils.ConfigError as e:
      raise gin_utils.ConfigError(
          f'{grid_lib.GRID_PARAMETER}: trial {trial.name} ({"; ".join(trial.bindings)}): '
          f'{e}') from e
    except ValueError as e:
      refused[trial.name] = (str(e).strip().splitlines() or [type(e).__name__])[0]
  return keys, refused


def _prepare_records(trials: Sequence[grid_lib.Trial], keys: dict[str, str],
                     gin_files: Sequence[str], gin_bindings: Sequence[str],
                     data_dir: str | None) -> dict[str, str]:
  """Builds (or finds) the records of each distinct records configuration, serially.

  Returns:
    Records key -> error message, for the configurations that could not be built (their
    trials fail; the others go on).

  Raises:
    ValueError: No configuration could be built (the data itself is at fault, say a
      missing folder): the first error, as one line.
  """
  built, failed, first = set(), {}, None
  for trial in trials:
    key = keys[trial.name]
    if key in built or key in failed:
      continue
    _parse(gin_files, [*gin_bindings, *trial.bindings])
    logging.info('records for trial %s', trial.name)
    try:
      data.prepare_records(data_dir)
      built.add(key)
    except Exception as e:  # pylint: disable=broad-except  # recorded as the trial's error
      message = (str(e).strip().splitlines() or [type(e).__name__])[0]
      failed[key] = f'records: {message}'
      first = first or e
      logging.error('records for trial %s failed: %s', trial.name, message)
  if failed and not built:
    raise ValueError(failed[keys[trials[0].name]]) from first
  return failed


def _trial_info(trial: grid_lib.Trial, gin_files: list[str], gin_bindings: list[str],
                data_dir: str | None, evaluate_bindings: Sequence[str]) -> dict[str, Any]:
  """What trial.json records about how a trial is run."""
  return dict(trial=trial.name, index=trial.index, bindings=trial.bindings,
              gin_files=gin_files, gin_bindings=gin_bindings, data_dir=data_dir,
              evaluate_bindings=list(evaluate_bindings))


def _read_info(trial_dir: str) -> dict[str, Any]:
  path = os.path.join(trial_dir, runner.TRIAL_INFO)
  try:
    return rd.read_json(path) if os.path.isfile(path) else {}
  except ValueError:
    return {}


def _run_one(trial: grid_lib.Trial, trial_dir: str, total: int, info: dict[str, Any],
             env: dict[str, str], stop: threading.Event,
             timeout: float | None) -> runner.Outcome:
  """Worker: runs a trial and records its status in trial.json."""
  logging.info('trial %d/%d %s: starting', trial.index + 1, total, trial.name)
  os.makedirs(trial_dir, exist_ok=True)
  info = dict(info, status='running', started=time.strftime('%Y-%m-%d %H:%M:%S'))
  rd.write_json(os.path.join(trial_dir, runner.TRIAL_INFO), info)
  gin_bindings = [*info['gin_bindings'], *trial.bindings]
  outcome = runner.run_trial(trial_dir, info['gin_files'], gin_bindings, info['data_dir'],
                             info['evaluate_bindings'], env, stop, timeout)
  info.update(status=outcome.status, error=outcome.error, seconds=round(outcome.seconds, 1))
  rd.write_json(os.path.join(trial_dir, runner.TRIAL_INFO), info)
  return outcome


@gin.configurable(module='tune', denylist=['run_dir', 'gin_files', 'gin_bindings',
                                           'data_dir', 'parallel'])
def grid_search(run_dir: str,
                gin_files: Sequence[str] = (),
                gin_bindings: Sequence[str] = (),
                data_dir: str | None = None,
                parallel: int = 1,
                # The search space and how trials are ranked.
                grid: dict[str, list[Any]] | None = None,  # 'conf.param': [values]
                selection_metric: str = 'balanced_accuracy',  # on the validation split
                selection_mode: str = 'max',                  # 'max' or 'min'
                metrics: Sequence[str] = DEFAULT_METRICS,
                evaluate_bindings: Sequence[str] = (),
                trial_timeout: float | None = None) -> results.Report:
  """Trains and evaluates every trial of `grid` in its own sub-run of `run_dir`.

  Args:
    run_dir: Folder of the search; created, reused to resume.
    gin_files: The base experiment's gin files (the grid's own file included).
    gin_bindings: The base experiment's extra bindings; trial bindings come after.
    data_dir: Passed to train.py as --data_dir.
    parallel: Trials run at once; the CPU cores are divided among them.
    grid: Parameter -> list of values; the trials are their Cartesian product.
    selection_metric: Validation metric (a key of metrics.json) ranking the trials.
    selection_mode: 'max' if larger is better, else 'min'.
    metrics: Validation metrics logged to HParams and results.csv.
    evaluate_bindings: Extra bindings for each trial's evaluate.py only, e.g.
      'evaluate.write_figures = False' to skip its figures.
    trial_timeout: Seconds after which a trial still training or evaluating is stopped and
      counted as failed (None: no limit); running the search again resumes it.

  Returns:
    The report, rows best first; results.csv and HParams summaries are written.

  Raises:
    ValueError: For a bad grid, flag or binding (one line naming it).
  """
  raw, from_gin = _raw_grid(grid)
  _check_args(raw, from_gin, parallel, selection_mode, trial_timeout)
  _check_metrics(selection_metric, metrics)
  trials, grid_values = grid_lib.expand(raw), grid_lib.validate(raw)
  metrics = list(dict.fromkeys([*metrics, selection_metric]))
  gin_files, gin_bindings = list(gin_files), list(gin_bindings)
  run_dir = os.path.abspath(run_dir)
  data_dir = os.path.abspath(data_dir) if data_dir else None
  dirs = {t.name: os.path.join(run_dir, t.name) for t in trials}
  try:
    keys, refused = check_trials(trials, gin_files, gin_bindings, evaluate_bindings)
    _check_same_base(run_dir, trials, dirs, gin_files, gin_bindings, evaluate_bindings)
    pending = [t for t in trials if runner.val_metrics(dirs[t.name]) is None]
    pending_names = {t.name for t in pending}
    if pending and len(pending) == len(trials) and all(t.name in refused for t in pending):
      raise ValueError(f'every trial is refused; {trials[0].name}: {refused[trials[0].name]}')
    errors = {t.name: f'refused: {refused[t.name]}' for t in pending if t.name in refused}
    runnable = [t for t in pending if t.name not in refused]
    records_errors = _prepare_records(runnable, keys, gin_files, gin_bindings, data_dir)
    errors.update({t.name: records_errors[keys[t.name]] for t in runnable
                   if keys[t.name] in records_errors})
  finally:
    _parse(gin_files, gin_bindings)

  start = time.time()
  hparams.write_experiment(run_dir, grid_values, metrics)
  outcomes = {t.name: _reuse(t, dirs[t.name], len(trials))
              for t in trials if t.name not in pending_names}
  threads = runner.threads_per_trial(parallel)
  logging.info('grid of %d trials: %d evaluated earlier, %d to run, %d at a time with '
               '%d threads each', len(trials), len(outcomes), len(pending), parallel, threads)
  env = runner.trial_env(threads, share_gpu=parallel > 1)
  infos = {t.name: _trial_info(t, gin_files, gin_bindings, data_dir, evaluate_bindings)
           for t in pending}
  for trial in [t for t in pending if t.name in errors]:
    outcome = runner.Outcome('failed', errors[trial.name])
    os.makedirs(dirs[trial.name], exist_ok=True)
    rd.write_json(os.path.join(dirs[trial.name], runner.TRIAL_INFO),
                  dict(infos[trial.name], status=outcome.status, error=outcome.error,
                       seconds=0.0))
    outcomes[trial.name] = outcome
    _log_outcome(trial, outcome, len(trials), 0, len(pending), 0.0, selection_metric)
  pending = [t for t in pending if t.name not in errors]
  outcomes.update(_run_pending(pending, dirs, len(trials), infos, env, parallel,
                               selection_metric, trial_timeout))

  rows = []
  for trial in trials:
    outcome = outcomes[trial.name]
    hparams.write_trial(dirs[trial.name], trial.name,
                        hparams.hparam_values(grid_values, trial.values),
                        {m: outcome.metrics.get(m) for m in metrics})
    rows.append(results.make_row(trial.name, trial.values, outcome.metrics,
                                 outcome.status, outcome.error, outcome.seconds))
  report = results.Report(run_dir, list(grid_values), metrics, selection_metric,
                          selection_mode,
                          results.sort_rows(rows, selection_metric, selection_mode),
                          {t.name: t.bindings for t in trials})
  results.write_csv(report)
  logging.info('grid search finished in %.0f s: %d of %d trials completed',
               time.time() - start, len(report.completed), len(trials))
  return report


def _check_args(raw_grid: Any, from_gin: bool, parallel: int, selection_mode: str,
                trial_timeout: float | None = None) -> None:
  if raw_grid is None:
    raise ValueError(f'no grid: bind {grid_lib.GRID_PARAMETER} in a gin file '
                     '(see configs/grids/)')
  if from_gin and GIN_IMPORT not in gin.config_str().splitlines():
    raise gin_utils.ConfigError(f'the grid gin file must contain `{GIN_IMPORT}` so that '
                                "each trial's train.py knows tune.grid_search")
  checks.check_number('--parallel', parallel, low=1, whole=True)
  checks.check_choice('tune.grid_search.selection_mode', selection_mode, ('max', 'min'))
  checks.check_number('tune.grid_search.trial_timeout', trial_timeout, low=0, low_open=True,
                      none_ok=True, note='seconds; None is no limit')


def _check_metrics(selection_metric: str, metrics: Sequence[str]) -> None:
  """A misspelt metric would rank nothing after the whole grid ran: refused before it."""
  known = metrics_lib.SCALAR_METRICS
  if selection_metric not in known:
    raise ValueError(f'tune.grid_search.selection_metric = {selection_metric!r} is not a '
                     f'metric of metrics.json; choose one of {known}')
  if isinstance(metrics, str):
    raise ValueError(f'tune.grid_search.metrics must be a list of metric names, got '
                     f'{metrics!r}')
  unknown = [m for m in metrics if m not in known]
  if unknown:
    raise ValueError(f'tune.grid_search.metrics: {unknown!r} not metrics of metrics.json; '
                     f'choose among {known}')


# Bindings that configure only how the search runs and ranks, not what a trial trains or
# how it is evaluated: they may change between runs of one search.
_SEARCH_ONLY = re.compile(r'\s*(tune\.)?grid_search\.'
                          r'(trial_timeout|selection_metric|selection_mode|metrics)\s*=')


def _trial_bindings(bindings: Sequence[str] | None) -> list[str]:
  """The lines of `bindings` that shape what a trial trains or how it is evaluated."""
  lines = [line.strip() for b in bindings or [] for line in b.splitlines()]
  return [line for line in lines if line and not _SEARCH_ONLY.match(line)]


def _check_same_base(run_dir: str, trials: Sequence[grid_lib.Trial], dirs: dict[str, str],
                     gin_files: list[str], gin_bindings: list[str],
                     evaluate_bindings: Sequence[str]) -> None:
  """Refuses a search folder whose trials ran on other base gin files or bindings, or were
  evaluated with other evaluate bindings: their results would be ranked beside trials of
  another experiment. The search's own time limit and ranking may change between runs."""
  now = (gin_files, _trial_bindings(gin_bindings), list(evaluate_bindings))
  for trial in trials:
    info = _read_info(dirs[trial.name])
    if info and ((info.get('gin_files'), _trial_bindings(info.get('gin_bindings')),
                  info.get('evaluate_bindings', [])) != now):
      raise ValueError(f'{run_dir} holds trials run with other base gin files or bindings '
                       f'(trial {trial.name}: {info.get("gin_files")}, '
                       f'{info.get("gin_bindings")}, evaluate bindings '
                       f'{info.get("evaluate_bindings", [])}); use a new --run_dir, or the '
                       'same files and bindings')


def _reuse(trial: grid_lib.Trial, trial_dir: str, total: int) -> runner.Outcome:
  """The outcome of a trial evaluated by an earlier invocation."""
  info = _read_info(trial_dir)
  logging.info('trial %d/%d %s: skipped, evaluated earlier', trial.index + 1, total,
               trial.name)
  return runner.Outcome('completed', '', info.get('seconds', 0.0),
                        runner.val_metrics(trial_dir))


def _run_pending(pending: Sequence[grid_lib.Trial], dirs: dict[str, str], total: int,
                 infos: dict[str, dict[str, Any]], env: dict[str, str], parallel: int,
                 selection_metric: str,
                 timeout: float | None = None) -> dict[str, runner.Outcome]:
  """Runs trials `parallel` at a time; Ctrl-C (or SIGTERM, via entry.run) stops them all."""
  outcomes, start, stop = {}, time.time(), threading.Event()
  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    futures = {pool.submit(_run_one, t, dirs[t.name], total, infos[t.name], env, stop,
                           timeout): t
               for t in pending}
    try:
      for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
        trial = futures[future]
        outcomes[trial.name] = future.result()
        _log_outcome(trial, outcomes[trial.name], total, done, len(pending),
                     time.time() - start, selection_metric, dirs[trial.name])
    except KeyboardInterrupt:
      stop.set()
      pool.shutdown(wait=True, cancel_futures=True)
      logging.warning('stopped the running trials')
      raise
  return outcomes


def _log_outcome(trial: grid_lib.Trial, outcome: runner.Outcome, total: int, done: int,
                 pending: int, elapsed: float, metric: str,
                 trial_dir: str | None = None) -> None:
  """Logs how a trial ended; `trial_dir` (where its logs are) for a trial that was run."""
  progress = f'[{done}/{pending} run, {elapsed:.0f} s elapsed]'
  if outcome.status == 'completed':
    logging.info('trial %d/%d %s: completed in %.0f s, val %s %.4f %s', trial.index + 1,
                 total, trial.name, outcome.seconds, metric,
                 outcome.metrics.get(metric, float('nan')), progress)
  else:
    logs = f' (logs in {trial_dir})' if trial_dir else ''
    logging.error('trial %d/%d %s: %s after %.0f s: %s%s %s', trial.index + 1, total,
                  trial.name, outcome.status.upper(), outcome.seconds, outcome.error, logs,
                  progress)

"""Grid search: the real `python tune.py` on the debug config, plus the pure parts."""

import csv
import glob
import json
import os
import pathlib
import subprocess
import sys

import gin
import pytest

from tuning import grid as grid_lib
from tuning import results

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEBUG = 'configs/debug/debug.gin'
# Shrink the debug config further: one epoch, no figures (seconds per trial).
FAST = ['--gin_bindings=train.epochs = 1', '--gin_bindings=evaluate.write_figures = False']


def _tune(run_dir, grid_file, cache_dir, *extra):
  env = dict(os.environ, DR_CACHE_DIR=str(cache_dir))
  argv = [sys.executable, 'tune.py', f'--gin_file={DEBUG}', f'--gin_file={grid_file}',
          f'--run_dir={run_dir}', *FAST, *extra]
  return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def _read_csv(run_dir):
  with open(os.path.join(run_dir, results.RESULTS_CSV), newline='') as f:
    return list(csv.DictReader(f))


def _grid_file(tmp_path, grid):
  path = tmp_path / 'grid.gin'
  path.write_text(f'import tuning.search\ntune.grid_search.grid = {grid}\n')
  return str(path)


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('cache')


@pytest.fixture(scope='module')
def searched(tmp_path_factory, cache_dir):
  """The shipped 4-trial debug grid, run once, two trials at a time."""
  run_dir = tmp_path_factory.mktemp('tune') / 'debug'
  proc = _tune(run_dir, 'configs/grids/debug.gin', cache_dir, '--parallel=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return run_dir, proc


def _hparams_data(run_dir):
  """run -> tag -> content of the HParams plugin, read back by TensorBoard's own reader."""
  from tensorboard.backend.event_processing import event_multiplexer
  multiplexer = event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(run_dir))
  multiplexer.Reload()
  return multiplexer, multiplexer.PluginRunToTagToContent('hparams')


def test_grid_completes_with_hparams_and_results(searched):
  from tensorboard.plugins.hparams import metadata
  from tensorboard.util import tensor_util
  run_dir, proc = searched
  rows = _read_csv(run_dir)
  assert len(rows) == 4
  assert all(r['status'] == 'completed' and r['val_balanced_accuracy'] for r in rows)
  accuracies = [float(r['val_balanced_accuracy']) for r in rows]
  assert accuracies == sorted(accuracies, reverse=True)
  names = {r['trial'] for r in rows}
  assert 'learning_rate=0.001,batch_size=4' in names

  multiplexer, content = _hparams_data(run_dir)
  experiment = metadata.parse_experiment_plugin_data(content['.'][metadata.EXPERIMENT_TAG])
  assert {h.name for h in experiment.hparam_infos} == {'train.learning_rate',
                                                       'train.batch_size'}
  tags = [m.name.tag for m in experiment.metric_infos]
  assert 'val/balanced_accuracy' in tags and 'val/roc_auc' in tags
  for row in rows:
    start = metadata.parse_session_start_info_plugin_data(
        content[row['trial']][metadata.SESSION_START_INFO_TAG])
    assert start.hparams['train.learning_rate'].number_value == float(
        row['train.learning_rate'])
    assert start.hparams['train.batch_size'].number_value == int(row['train.batch_size'])
    events = multiplexer.Tensors(row['trial'], 'val/balanced_accuracy')
    assert tensor_util.make_ndarray(events[-1].tensor_proto) == pytest.approx(
        float(row['val_balanced_accuracy']))
    # Tuning looks at validation only: the test split is never evaluated.
    trial_dir = run_dir / row['trial']
    assert not (trial_dir / 'predictions_test.csv').exists()
    assert (trial_dir / 'train.log').is_file() and (trial_dir / 'checkpoints').is_dir()

  best = rows[0]
  assert f"best trial: {best['trial']}" in proc.stdout
  assert f"--gin_bindings='train.learning_rate = {best['train.learning_rate']}'" in proc.stdout
  assert f"    train.batch_size = {best['train.batch_size']}" in proc.stdout


def test_rerun_trains_nothing(searched, cache_dir):
  run_dir, _ = searched
  checkpoints = sorted(run_dir.glob('*/checkpoints/**/*'))
  assert checkpoints
  before = {p: p.stat().st_mtime_ns for p in checkpoints}
  proc = _tune(run_dir, 'configs/grids/debug.gin', cache_dir, '--parallel=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '4 evaluated earlier, 0 to run' in proc.stderr
  assert ': starting' not in proc.stderr
  assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
  assert len(_read_csv(run_dir)) == 4
  # Another base configuration in the same folder: refused before any trial, rather than
  # ranked beside the trials of the first.
  csv_before = (run_dir / results.RESULTS_CSV).read_text()
  other = _tune(run_dir, 'configs/grids/debug.gin', cache_dir, '--gin_bindings=train.epochs = 2')
  errors = [l for l in other.stderr.splitlines() if l.startswith('error:')]
  assert other.returncode == 1 and len(errors) == 1, other.stderr[-2000:]
  assert 'holds trials run with other base gin files or bindings' in errors[0]
  assert ': starting' not in other.stderr
  assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
  assert (run_dir / results.RESULTS_CSV).read_text() == csv_before


def test_failing_trial_is_recorded_and_others_complete(tmp_path, cache_dir):
  # A weights file that is not there is found only when train.py starts the trial.
  missing = tmp_path / 'missing.keras'
  grid = _grid_file(tmp_path, f"{{'train.init_weights': [None, '{missing}']}}")
  run_dir = tmp_path / 'run'
  proc = _tune(run_dir, grid, cache_dir, '--parallel=2')
  assert proc.returncode == 0, proc.stderr[-3000:]  # At least one trial completed.
  rows = {r['trial']: r for r in _read_csv(run_dir)}
  assert rows['init_weights=None']['status'] == 'completed'
  name, = [n for n in rows if n != 'init_weights=None']
  assert rows[name]['status'] == 'failed'
  assert 'missing.keras' in rows[name]['error'] and 'train.py' in rows[name]['error']
  assert f'FAILED {name}' in proc.stdout
  assert list(rows) == ['init_weights=None', name]  # Failures last.


def test_trial_with_a_refused_value_fails_at_once_and_others_complete(tmp_path):
  cache = tmp_path / 'cache'  # its own: which records were built is part of the test
  grid = _grid_file(tmp_path, "{'train.learning_rate': [1e-3, -0.1], "
                              "'tfrecords.build_tfrecords.contrast': [None, 'clahee']}")
  run_dir = tmp_path / 'run'
  proc = _tune(run_dir, grid, cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {r['trial']: r for r in _read_csv(run_dir)}
  assert [n for n, r in rows.items() if r['status'] == 'completed'] == [
      'learning_rate=0.001,contrast=None']
  assert rows['learning_rate=0.001,contrast=clahee']['error'].startswith(
      "refused: unknown tfrecords.build_tfrecords.contrast 'clahee'")
  assert rows['learning_rate=-0.1,contrast=None']['error'] == (
      'refused: train.learning_rate must be a number >= 0, got -0.1')
  for name, row in rows.items():
    if row['status'] == 'failed':  # refused before anything of the trial ran
      assert float(row['seconds']) == 0.0
      written = {f for f in os.listdir(run_dir / name) if not f.startswith('events.out')}
      assert written == {'trial.json'}  # no train.log, no checkpoints
      assert json.loads((run_dir / name / 'trial.json').read_text())['error'] == row['error']
  assert len(os.listdir(cache / 'tfrecords')) == 1  # none for the refused contrast
  assert proc.stderr.count('refused: train.learning_rate must be a number >= 0') == 2
  # A rerun trains nothing, reports the refused trials again and still exits 0.
  again = _tune(run_dir, grid, cache)
  assert again.returncode == 0, again.stderr[-3000:]
  assert ': starting' not in again.stderr
  assert [r['status'] for r in _read_csv(run_dir)] == ['completed'] + ['failed'] * 3


def test_grid_whose_every_trial_is_refused_stops_in_one_line(tmp_path):
  grid = _grid_file(tmp_path, "{'evaluate.tta': [0, 9]}")
  proc = _tune(tmp_path / 'run', grid, tmp_path / 'cache')
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
  assert errors[0].startswith('error: every trial is refused; tta=0: evaluate.tta')
  assert 'refused' not in proc.stderr.replace(errors[0], '')  # said once
  assert not (tmp_path / 'run').exists() and not (tmp_path / 'cache').exists()


def test_trial_whose_records_fail_is_recorded_and_others_complete(tmp_path, cache_dir):
  # A records folder that is a file is found only when the records are built.
  taken = tmp_path / 'taken'
  taken.write_text('not a folder')
  grid = _grid_file(tmp_path, f"{{'data.prepare_records.records_dir': [None, '{taken}']}}")
  run_dir = tmp_path / 'run'
  proc = _tune(run_dir, grid, cache_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {r['trial']: r for r in _read_csv(run_dir)}
  assert rows['records_dir=None']['status'] == 'completed'
  name, = [n for n in rows if n != 'records_dir=None']
  assert rows[name]['status'] == 'failed' and 'records:' in rows[name]['error']
  assert 'is a file, not a folder' in rows[name]['error']
  trial = json.loads((run_dir / name / 'trial.json').read_text())
  assert trial['status'] == 'failed' and 'is a file' in trial['error']


@pytest.mark.parametrize('grid, extra, message', [
    ("{'train.learnin_rate': [1e-2, 1e-3]}", '', 'learnin_rate'),
    # Misspelt metrics would leave the ranking column empty after every trial had run.
    ("{'train.learning_rate': [1e-2, 1e-3]}",
     "tune.grid_search.selection_metric = 'balanced_acc'", "selection_metric = 'balanced_acc'"),
    ("{'train.learning_rate': [1e-2, 1e-3]}",
     "tune.grid_search.metrics = ['roc_auc', 'kappa']", "['kappa']"),
    # Named as the evaluate bindings' fault, not the first trial's.
    ("{'train.learning_rate': [1e-2, 1e-3]}",
     "tune.grid_search.evaluate_bindings = ['evaluate.gradcam_galleri = 0']",
     "error: tune.grid_search.evaluate_bindings: "),
    ("{'train.learning_rate': [1e-2, 1e-3]}",
     "tune.grid_search.evaluate_bindings = ['evaluate.tta = 0']",
     "error: tune.grid_search.evaluate_bindings: evaluate.tta"),
])
def test_misspelt_grid_setting_fails_before_any_trial(tmp_path, cache_dir, grid, extra,
                                                      message):
  grid = _grid_file(tmp_path, grid)
  with open(grid, 'a') as f:
    f.write(extra + '\n')
  run_dir = tmp_path / 'run'
  proc = _tune(run_dir, grid, cache_dir)
  assert proc.returncode == 1
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert not run_dir.exists()


def test_grid_expands_into_named_trials():
  trials = grid_lib.expand({'train.learning_rate': [1e-2, 1e-5],
                            'train.optimizer': ['adam', 'sgd'],
                            'resnet_v2.build_resnet_v2.widths': [[4, 8, 8], None]})
  assert len(trials) == 8
  assert trials[0].name == 'learning_rate=0.01,optimizer=adam,widths=4_8_8'
  assert trials[-1].name == 'learning_rate=1e-05,optimizer=sgd,widths=None'
  assert trials[0].bindings == ['train.learning_rate = 0.01', "train.optimizer = 'adam'",
                                'resnet_v2.build_resnet_v2.widths = [4, 8, 8]']
  assert len({t.name for t in trials}) == 8


def test_ambiguous_or_colliding_names_stay_unique():
  trials = grid_lib.expand({'train.seed': [0], 'data.synthetic_data.seed': [1],
                            'a.b': ['x y', 'x_y']})
  assert trials[0].name.startswith('train.seed=0,data.synthetic_data.seed=1,b=x_y-')
  assert len({t.name for t in trials}) == 2


@pytest.mark.parametrize('grid', [{}, {'train.learning_rate': 1e-3},
                                  {'train.learning_rate': []}, {'not a name': [1]},
                                  {'train.batch_size': [4, 4]}])
def test_bad_grid_is_one_line_error(grid):
  with pytest.raises(ValueError, match='tune.grid_search.grid') as info:
    grid_lib.validate(grid)
  assert '\n' not in str(info.value)


def test_rows_sort_best_first_and_failures_last():
  rows = [dict(trial='a', status='completed', balanced_accuracy=0.6),
          dict(trial='b', status='failed'),
          dict(trial='c', status='completed', balanced_accuracy=float('nan')),
          dict(trial='d', status='completed', balanced_accuracy=0.8)]
  assert [r['trial'] for r in results.sort_rows(rows, 'balanced_accuracy', 'max')] == [
      'd', 'a', 'c', 'b']
  assert [r['trial'] for r in results.sort_rows(rows, 'balanced_accuracy', 'min')][:2] == [
      'a', 'd']


def test_shell_quote_keeps_bindings_pasteable():
  assert results.shell_quote('train.batch_size = 4') == "'train.batch_size = 4'"
  assert results.shell_quote("train.optimizer = 'sgd'") == '"train.optimizer = \'sgd\'"'


# Every IDRiD grid behind a table of the README's "Levers tried": a misspelt binding in
# one would otherwise only show when someone reruns it.
_IDRID_GRIDS = sorted(os.path.relpath(path, REPO_ROOT) for path in
                      glob.glob(os.path.join(REPO_ROOT, 'configs', 'grids', 'idrid_*.gin')))


@pytest.mark.parametrize('experiment,grid,min_trials', [
    ('configs/debug/debug.gin', 'configs/grids/debug.gin', 4),
    ('configs/quickstart.gin', 'configs/grids/quickstart.gin', 4),
    ('configs/idrid_binary.gin', 'configs/grids/idrid_lr_bs.gin', 4)] + [
    ('configs/idrid_binary.gin', grid, 1) for grid in _IDRID_GRIDS
    if grid != os.path.join('configs', 'grids', 'idrid_lr_bs.gin')])
def test_shipped_grids_parse_for_every_trial(experiment, grid, min_trials, monkeypatch):
  from tuning import search
  from utils import entry
  monkeypatch.chdir(REPO_ROOT)  # Gin includes are relative to the repository.
  entry.parse_gin([experiment, grid], [])
  trials = grid_lib.expand(gin.query_parameter(grid_lib.GRID_PARAMETER))
  assert len(trials) >= min_trials
  try:
    evaluate_bindings = gin.query_parameter('tune.grid_search.evaluate_bindings')
  except ValueError:
    evaluate_bindings = []  # not bound
  keys, refused = search.check_trials(trials, [experiment, grid], [], evaluate_bindings)
  assert len(keys) == len(trials)
  assert not refused  # every value passes the checks train.py and evaluate.py make first
  # ...and ranks and logs metrics that metrics.json has.
  bound = {'selection_metric': 'balanced_accuracy', 'metrics': search.DEFAULT_METRICS}
  for name in bound:
    try:
      bound[name] = gin.query_parameter(f'tune.grid_search.{name}')
    except ValueError:
      pass  # not bound: the default
  # pylint: disable-next=protected-access
  search._check_metrics(bound['selection_metric'], bound['metrics'])


def test_summary_without_a_completed_trial_lists_failures():
  rows = [results.make_row('optimizer=x', {'train.optimizer': 'x'}, None, 'failed',
                           'train.py exit 1: unknown optimizer', 3.0)]
  report = results.Report('/runs/t', ['train.optimizer'], ['balanced_accuracy'],
                          'balanced_accuracy', 'max', rows,
                          {'optimizer=x': ["train.optimizer = 'x'"]})
  text = results.format_summary(report)
  assert report.best is None and 'best trial' not in text
  assert '0 of 1 trials completed' in text
  assert 'FAILED optimizer=x: train.py exit 1: unknown optimizer' in text


def test_a_failed_trial_is_reported_by_its_error_not_gins_last_line(tmp_path):
  from tuning import runner
  log = tmp_path / 'trial.log'
  log.write_text('$ train.py --run_dir=a\nerror: an earlier attempt\n'
                 '$ train.py --run_dir=a\nI1124 training\nTraceback (most recent call last):\n'
                 '  File "x.py", line 1, in <module>\nValueError: high - low < 0\n'
                 "  In call to configurable 'train' (<function train at 0x7f>)\n")
  assert runner.last_line(str(log)) == 'ValueError: high - low < 0'
  log.write_text('$ train.py\nI1124 records\nerror: train.mixup must be a number >= 0\n')
  assert runner.last_line(str(log)) == 'train.mixup must be a number >= 0'
  log.write_text('$ train.py\nsomething odd\n')
  assert runner.last_line(str(log)) == 'something odd'
  # An earlier attempt's error is not this one's, even when this one printed nothing.
  log.write_text('$ train.py\nerror: an earlier attempt\n$ train.py\n')
  assert runner.last_line(str(log)) == ''


def test_trial_past_its_time_limit_is_stopped_and_run_again_by_a_rerun(tmp_path, cache_dir):
  grid = _grid_file(tmp_path, "{'train.learning_rate': [1e-3]}")
  run_dir = tmp_path / 'run'
  proc = _tune(run_dir, grid, cache_dir, '--gin_bindings=tune.grid_search.trial_timeout = 2')
  assert proc.returncode == 1, proc.stderr[-3000:]
  row, = _read_csv(run_dir)
  assert row['status'] == 'failed'
  assert row['error'] == 'stopped by tune.grid_search.trial_timeout = 2 s, during train.py'
  assert row['error'] in (run_dir / row['trial'] / 'train.log').read_text()
  # The limit configures the search only: a rerun without it reuses the folder.
  proc = _tune(run_dir, grid, cache_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row, = _read_csv(run_dir)
  assert row['status'] == 'completed'


def _fake_commands(tmp_path, train_seconds, evaluate_seconds):
  """commands() of a trial whose train.py and evaluate.py only sleep."""
  scripts = []
  for name, seconds in (('train.py', train_seconds), ('evaluate.py', evaluate_seconds)):
    script = tmp_path / name
    script.write_text(f'import time\ntime.sleep({seconds})\n')
    scripts.append((f'{name}.log', [sys.executable, str(script)]))
  return lambda *args, **kwargs: scripts


@pytest.mark.parametrize('train_seconds, evaluate_seconds, timeout, error', [
    (30, 0, 1, 'during train.py'),
    (0, 30, 2, 'during evaluate.py'),
    (2.7, 0, 2.4, 'before evaluate.py started'),  # train.py ends past the limit
])
def test_time_limit_names_the_command_it_stopped(tmp_path, monkeypatch, train_seconds,
                                                 evaluate_seconds, timeout, error):
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from tuning import runner  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(runner, 'commands', _fake_commands(tmp_path, train_seconds,
                                                         evaluate_seconds))
  start = time.monotonic()
  outcome = runner.run_trial(str(tmp_path / 'trial'), [], [], None, [], dict(os.environ),
                             threading.Event(), timeout=timeout)
  assert outcome.status == 'failed'
  assert outcome.error == f'stopped by tune.grid_search.trial_timeout = {timeout} s, {error}'
  assert time.monotonic() - start < 15  # the 30 s sleeper was stopped


def test_trial_timeout_must_be_positive(tmp_path, cache_dir):
  grid = _grid_file(tmp_path, "{'train.learning_rate': [1e-3]}")
  proc = _tune(tmp_path / 'run', grid, cache_dir,
               '--gin_bindings=tune.grid_search.trial_timeout = 0')
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 1 and len(errors) == 1 and 'trial_timeout' in errors[0]
  assert not (tmp_path / 'run').exists()


def test_rerun_may_change_the_searchs_own_settings_but_not_what_trials_do(tmp_path):
  from training import run_dir as rd  # pylint: disable=g-import-not-at-top
  from tuning import search  # pylint: disable=g-import-not-at-top
  trial, = grid_lib.expand({'train.learning_rate': [1e-3]})
  dirs = {trial.name: str(tmp_path / trial.name)}
  os.makedirs(dirs[trial.name])
  rd.write_json(os.path.join(dirs[trial.name], 'trial.json'),
                dict(gin_files=['a.gin'], gin_bindings=['train.epochs = 1'],
                     evaluate_bindings=[]))
  same = (['a.gin'], ['train.epochs = 1\ngrid_search.trial_timeout = 60',
                      "tune.grid_search.selection_metric = 'roc_auc'"], [])
  search._check_same_base(str(tmp_path), [trial], dirs, *same)  # nothing raised
  for files, bindings, evaluate in [
      (['b.gin'], ['train.epochs = 1'], []),
      (['a.gin'], ['train.epochs = 2\ngrid_search.trial_timeout = 60'], []),
      (['a.gin'], ['train.epochs = 1'], ['evaluate.tta = 8'])]:
    with pytest.raises(ValueError, match='holds trials run with other base'):
      search._check_same_base(str(tmp_path), [trial], dirs, files, bindings, evaluate)

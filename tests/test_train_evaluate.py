"""train.py and evaluate.py through their real entry points, on the debug config."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from evaluation import metrics
from evaluation import predictions
from tests.conftest import REPO_ROOT

DEBUG = 'configs/debug/debug.gin'


@pytest.fixture
def env(tmp_path):
  return dict(os.environ, DR_CACHE_DIR=str(tmp_path / 'cache'))


def _run(script, *args, env, timeout=600):
  return subprocess.run([sys.executable, script, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _event_tags(folder):
  """{'scalars': tags, 'images': tags} of the TensorBoard event files in `folder`."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(folder), size_guidance={'tensors': 0})
  acc.Reload()
  tags = acc.Tags()
  return set(tags['scalars']) | set(tags['tensors']), set(tags['images']) | set(tags['tensors'])


def test_train_then_evaluate_writes_the_run_directory(tmp_path, env):
  run = tmp_path / 'run'
  # An evaluation setting of the experiment is applied by evaluate.py later on.
  result = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}',
                '--gin_bindings=evaluate.tta = 2', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'best val_balanced_accuracy' in result.stdout
  for path in ('operative_config.gin', 'config.gin', 'checkpoints/best.keras',
               'checkpoints/best.json', 'history.csv', 'run.json'):
    assert (run / path).is_file(), path
  assert 'train.epochs = 2' in (run / 'operative_config.gin').read_text()
  for folder in ('train', 'validation'):
    scalars, images = _event_tags(run / folder)
    for metric in ('loss', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity',
                   'auc'):
      assert f'epoch_{metric}' in scalars, (folder, metric, scalars)
  assert 'confusion_matrix' in _event_tags(run / 'validation')[1]
  info = json.loads((run / 'run.json').read_text())
  assert info['status'] == 'completed' and info['class_names'] == ['NRDR', 'RDR']
  with open(run / 'history.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2
  for key in ('loss', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'auc',
              'val_balanced_accuracy', 'val_auc'):
    assert key in rows[0], key

  result = _run('evaluate.py', f'--run_dir={run}', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'balanced_accuracy' in result.stdout and 'decision threshold' in result.stdout
  results = json.loads((run / 'metrics.json').read_text())
  assert results['tta'] == 2  # from the training command's bindings
  test = results['splits']['test']
  assert test['n'] == 8 and set(results['splits']) == {'val', 'test'}
  assert 0.0 <= test['balanced_accuracy'] <= 1.0
  assert np.array(test['confusion_matrix']).sum() == 8
  for name in ('confusion_matrix_val.png', 'confusion_matrix_test.png', 'roc.png'):
    assert (run / 'figures' / name).stat().st_size > 1000
  assert len(list((run / 'eval').glob('events.out.tfevents.*'))) > 1  # figures, scalars
  assert 'roc' in _event_tags(run / 'eval')[1]
  with open(run / 'predictions_test.csv') as f:
    assert len(list(csv.DictReader(f))) == 8
  # The metrics rebuild from the predictions files: the threshold is one validation
  # photograph's P(RDR), and the files keep every bit of it.
  for split in ('val', 'test'):
    _, labels, probs = predictions.read_referable(str(run), split)
    rebuilt = metrics.binary_metrics(labels, probs, results['threshold'])
    assert rebuilt['confusion_matrix'] == results['splits'][split]['confusion_matrix']
    assert rebuilt['roc_auc'] == pytest.approx(results['splits'][split]['roc_auc'], abs=1e-12)
  assert results['threshold'] in predictions.read_referable(str(run), 'val')[2]

  # A finished run is not trained again; the same run dir with another config is refused.
  mtime = (run / 'checkpoints/best.keras').stat().st_mtime
  # Evaluation settings are not part of what was trained.
  again = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}',
               "--gin_bindings=evaluate.threshold_rule = 'argmax'", env=env)
  assert again.returncode == 0 and 'nothing to train' in again.stderr
  other = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}',
               '--gin_bindings=train.epochs = 3', env=env)
  assert other.returncode == 1 and 'another configuration' in other.stderr
  assert (run / 'checkpoints/best.keras').stat().st_mtime == mtime

  # Bad evaluation settings: one line naming the parameter, the last results left as they are.
  written = (run / 'metrics.json').read_bytes()
  for binding, message in (("evaluate.splits = ['valid']", 'evaluate.splits'),
                           ('evaluate.min_sensitivity = 95', 'evaluate.min_sensitivity')):
    bad = _run('evaluate.py', f'--run_dir={run}', f'--gin_bindings={binding}',
               "--gin_bindings=evaluate.threshold_rule = 'sensitivity'", env=env)
    errors = [l for l in bad.stderr.splitlines() if l.startswith('error:')]
    assert bad.returncode == 1 and len(errors) == 1 and message in errors[0], bad.stderr[-2000:]
  assert (run / 'metrics.json').read_bytes() == written
  # The sensitivity rule's target is kept, for the ensembles and cross-validation that
  # choose thresholds again from the predictions.
  target = _run('evaluate.py', f'--run_dir={run}',
                '--gin_bindings=evaluate.min_sensitivity = 0.75',
                "--gin_bindings=evaluate.threshold_rule = 'sensitivity'",
                '--gin_bindings=evaluate.write_figures = False', env=env)
  assert target.returncode == 0, target.stderr[-2000:]
  kept = json.loads((run / 'metrics.json').read_text())
  assert kept['threshold_rule'] == 'sensitivity' and kept['min_sensitivity'] == 0.75
  assert kept['splits']['val']['sensitivity'] >= 0.75
  # eval/ holds the last evaluation alone (it had no figures), as metrics.json does.
  assert len(list((run / 'eval').glob('events.out.tfevents.*'))) == 1  # its scalars alone
  scalars, images = _event_tags(run / 'eval')
  assert 'test/balanced_accuracy' in scalars and 'roc' not in images
  assert sorted(p.name for p in run.iterdir() if p.name.startswith('.eval')) == []

  # Records changed since training: evaluation refuses instead of mixing splits.
  manifest_path = os.path.join(info['records_dir'], 'manifest.json')
  manifest = json.loads(open(manifest_path).read())
  manifest['fingerprint'] = 'changed'
  with open(manifest_path, 'w') as f:
    json.dump(manifest, f)
  changed = _run('evaluate.py', f'--run_dir={run}', env=env)
  assert changed.returncode == 1 and 'changed since' in changed.stderr


def test_five_grade_run_is_also_scored_for_referable_dr(tmp_path, env):
  """A model of grades 0-4 gets referable metrics on P(grades 2-4), threshold from val."""
  from sklearn.metrics import roc_auc_score
  run = tmp_path / 'run'
  result = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}',
                "--gin_bindings=tfrecords.build_tfrecords.label_mapping = 'grades'",
                "--gin_bindings=train.monitor = 'val_referable_auc'", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'best val_referable_auc' in result.stdout
  result = _run('evaluate.py', f'--run_dir={run}',
                '--gin_bindings=evaluate.write_figures = False', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'RDR roc_auc' in result.stdout and 'decision threshold on P(RDR)' in result.stdout
  results = json.loads((run / 'metrics.json').read_text())
  assert len(results['class_names']) == 5

  val_labels, val_p = predictions.read_referable(str(run), 'val')[1:]
  assert results['threshold'] == pytest.approx(
      metrics.choose_threshold(val_labels, val_p), abs=1e-5)
  labels, p_rdr = predictions.read_referable(str(run), 'test')[1:]
  test = results['splits']['test']
  assert 'quadratic_kappa' in test  # the grade metrics stay
  assert test['referable_roc_auc'] == pytest.approx(roc_auc_score(labels, p_rdr), abs=1e-4)
  # Predictions are rounded to six decimals: a photograph at the threshold may flip.
  from_file = metrics.binary_metrics(labels, p_rdr, results['threshold'])
  assert test['referable_sensitivity'] == pytest.approx(
      from_file['sensitivity'], abs=1.01 / max(1, labels.sum()))


def test_validation_split_without_a_class_is_reported(tmp_path, env):
  # One NRDR photograph among twelve: it stays in training, validation holds RDR only.
  result = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={tmp_path / "run"}',
                '--gin_bindings=data.synthetic_data.num_train = 12',
                '--gin_bindings=synthetic.generate.grade_probs = [0.01, 0, 1, 1, 1]',
                '--gin_bindings=train.epochs = 1', env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'the validation split has no NRDR photographs' in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize('args, message', [
    (['--gin_bindings=train.epoch = 3'], 'epoch'),
    (['--gin_bindings=epochs = 3'], "'epochs' names no configurable"),
    (['--gin_bindings=train.epochs = "2"'], 'train.epochs'),
    (['--gin_bindings=augment.Augmentation.rotation = -30.0'], 'augment.Augmentation.rotation'),
    (['--gin_bindings=augment.Augmentation.shift = 2.0'], 'augment.Augmentation.shift'),
    (['--gin_bindings=train.mixup = -0.2'], 'train.mixup'),
    (['--gin_bindings=train.mixup = None'], 'train.mixup'),
    (['--gin_bindings=train.oversample_by = "grades"'], 'train.oversample_by'),
    (['--gin_bindings=train.init_weights = "/no/such/run"'], 'train.init_weights'),
    (['--gin_file=configs/no_such.gin'], 'no_such.gin'),
    (['--run_dir='], '--run_dir is empty'),  # would have written into the current folder
    (['--gin_binding=train.epochs = 3'], "Unknown command line flag 'gin_binding'"),
    (['--gin_bindings=evaluate.tta = 0'], 'evaluate.tta'),  # found after training before
    (['--gin_bindings=data.prepare_records.source = "idrid"', '--data_dir=/no/such/dir'],
     '/no/such/dir'),
])
def test_bad_input_is_one_line(tmp_path, env, args, message):
  run = tmp_path / 'run'
  assert message in _train_error(run, args, env)
  assert not run.exists()


def _train_error(run, args, env):
  """The one `error:` line of a train.py run that must fail with exit code 1."""
  result = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}', *args, env=env)
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
  return errors[0]


@pytest.mark.parametrize('binding, message', [
    # Each of these trained silently or ended in a traceback before they were checked.
    ('train.learning_rate = -0.1', 'train.learning_rate must be a number >= 0, got -0.1'),
    ('train.label_smoothing = 2.0', 'train.label_smoothing must be a number in [0, 1)'),
    ('resnet_v2.build_resnet_v2.dropout = "x"', 'resnet_v2.build_resnet_v2.dropout must be'),
    ('resnet_v2.build_resnet_v2.widths = 32', 'resnet_v2.build_resnet_v2.widths must list 3'),
    ('tfrecords.build_tfrecords.image_size = "x"', 'tfrecords.build_tfrecords.image_size must'),
    ('tfrecords.build_tfrecords.contrast = "clahee"', 'tfrecords.build_tfrecords.contrast'),
    ('augment.Augmentation.zoom = 1.0', 'augment.Augmentation.zoom must be a number in [0, 1)'),
    ('data.synthetic_data.width = 10',
     'data.synthetic_data.width must be a whole number in [32, 8192], got 10'),
    # These two were found only once the records had been built.
    ('train.monitor = "val_kappa"', "train.monitor = 'val_kappa' is not a logged metric"),
    ('train.monitor_mode = "maximum"', "train.monitor_mode must be one of ['min', 'max']"),
])
def test_bad_values_fail_before_any_data_is_written(tmp_path, env, binding, message):
  run = tmp_path / 'run'
  assert message in _train_error(run, [f'--gin_bindings={binding}'], env)
  # Neither the run folder nor the synthetic set or records of the cache.
  assert not run.exists() and not (tmp_path / 'cache').exists()


def test_every_metric_a_run_logs_may_be_monitored():
  from training import metrics as metrics_lib
  from training import trainer
  logged = {'loss'} | {m.name for classes in (2, 5)  # binary and grade label mappings
                       for m in metrics_lib.training_metrics(classes)}
  assert set(trainer._MONITORABLE) == logged  # pylint: disable=protected-access


@pytest.mark.parametrize('mode', [None, '', 'min', 'max'])
def test_monitor_mode_may_be_left_to_the_metric(mode, monkeypatch):
  import gin
  from training import trainer
  from utils import entry
  monkeypatch.chdir(REPO_ROOT)
  try:
    entry.parse_gin([DEBUG], [f'train.monitor_mode = {mode!r}'])
    trainer.check_config()  # nothing raised: '' and None both mean "from the metric"
  finally:
    gin.clear_config()


class _Stopped(Exception):
  """Stands for a Ctrl-C or kill at one moment of a run."""


def _train_in_process(tmp_path, monkeypatch, run, bindings=()):
  import gin
  from training import trainer
  from utils import entry
  monkeypatch.setenv('DR_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.chdir(REPO_ROOT)
  entry.parse_gin([DEBUG], list(bindings))
  try:
    return trainer.train(str(run))
  finally:
    gin.clear_config()


def test_grade_sampling_reaches_the_training_pipeline(tmp_path, monkeypatch):
  from input_pipeline import datasets
  calls = []
  real = datasets.make_dataset

  def spy(records_dir, split, **kwargs):
    calls.append((split, kwargs))
    return real(records_dir, split, **kwargs)

  monkeypatch.setattr(datasets, 'make_dataset', spy)
  info = _train_in_process(tmp_path, monkeypatch, tmp_path / 'run',
                           ["train.oversample_by = 'grade'", 'train.oversample = 0.5',
                            'train.epochs = 1'])
  assert info['status'] == 'completed'
  train_kwargs = [kwargs for split, kwargs in calls if split == 'train']
  assert train_kwargs and train_kwargs[0]['oversample_by'] == 'grade'
  assert train_kwargs[0]['oversample'] == 0.5


def test_evaluate_without_training_is_one_line(tmp_path, env):
  result = _run('evaluate.py', f'--run_dir={tmp_path}', env=env)
  assert result.returncode == 1 and 'not a trained run' in result.stderr


def test_killed_run_resumes_from_last_epoch(tmp_path, env):
  run = tmp_path / 'run'
  args = [f'--gin_file={DEBUG}', f'--run_dir={run}', '--gin_bindings=train.epochs = 6']
  proc = subprocess.Popen([sys.executable, 'train.py', *args], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  history = run / 'history.csv'
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if history.is_file() and len(history.read_text().splitlines()) >= 3:  # 2 epochs done
      break
    time.sleep(0.05)
  assert proc.poll() is None, 'training ended before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = len(history.read_text().splitlines()) - 1
  with open(history) as f:
    rows_before = list(csv.reader(f))
  assert 2 <= done_before < 6
  seconds_before = json.loads((run / 'run.json').read_text())['train_seconds']
  assert seconds_before > 0  # the epochs done before the kill are counted
  unfinished = _run('evaluate.py', f'--run_dir={run}',
                    '--gin_bindings=evaluate.write_figures = False', env=env)
  assert unfinished.returncode == 0 and 'has not finished training' in unfinished.stderr
  assert (run / 'metrics.json').is_file()

  # Resuming on other records (another --data_dir) is refused, the run left as it is.
  info_file = run / 'run.json'
  saved = info_file.read_text()
  info_file.write_text(json.dumps(dict(json.loads(saved), records_fingerprint='other')))
  other = _run('train.py', *args, env=env)
  assert other.returncode == 1 and 'holds a run on other records' in other.stderr
  assert len(history.read_text().splitlines()) - 1 == done_before
  info_file.write_text(saved)
  # As if the kill had come after the history row of the next epoch was written but
  # before that epoch was backed up: the resumed run trains it again, and keeps one row.
  with open(history, 'a') as f:
    f.write(f'{done_before},' + ','.join(['0.0'] * (len(rows_before[0]) - 1)) + '\n')
  result = _run('train.py', *args, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  # The backup is of the last completed epoch, or of the one before if the kill came
  # while it was being written.
  assert (f'after epoch {done_before}' in result.stderr or
          f'after epoch {done_before - 1}' in result.stderr), result.stderr[-3000:]
  assert 'moved to history_stopped.csv' in result.stderr
  with open(history) as f:
    epochs = [int(r['epoch']) for r in csv.DictReader(f)]
  # The second run starts after the last completed epoch and ends at epoch 6: every epoch
  # has one row.
  assert epochs == list(range(6))
  best = json.loads((run / 'checkpoints/best.json').read_text())
  with open(history) as f:
    rows = list(csv.DictReader(f))
  with open(run / 'history_stopped.csv') as f:  # the stopped attempt's extra epoch(s)
    stopped = list(csv.DictReader(f))
  assert 1 <= len(stopped) <= 2 and int(stopped[-1]['epoch']) == done_before
  best_row = max(rows + stopped, key=lambda r: float(r['val_balanced_accuracy']))
  assert best['value'] == pytest.approx(float(best_row['val_balanced_accuracy']))
  info = json.loads((run / 'run.json').read_text())
  assert info['status'] == 'completed' and info['train_seconds'] > seconds_before
  # The evaluation of the unfinished run is gone: it would pass for the finished run's.
  assert not (run / 'metrics.json').exists()
  # Started again, the finished run is not trained again; on other records it is refused
  # too, not reported complete.
  again = _run('train.py', *args, env=env)
  assert again.returncode == 0 and 'already completed 6 epochs' in again.stderr
  saved = info_file.read_text()
  info_file.write_text(json.dumps(dict(json.loads(saved), records_fingerprint='other')))
  other = _run('train.py', *args, env=env)
  assert other.returncode == 1 and 'holds a run on other records' in other.stderr
  assert len(history.read_text().splitlines()) == 7  # nothing trained


def test_a_second_train_py_on_a_run_in_training_is_refused(tmp_path, env):
  from training import run_dir as rd
  run = tmp_path / 'run'
  run.mkdir()
  args = [f'--gin_file={DEBUG}', f'--run_dir={run}']
  with rd.training_lock(str(run)):  # as a train.py training this folder holds it
    second = _run('train.py', *args, env=env)
  errors = [l for l in second.stderr.splitlines() if l.startswith('error:')]
  assert second.returncode == 1 and len(errors) == 1, second.stderr[-2000:]
  assert f'is being trained by process {os.getpid()}' in errors[0]
  assert sorted(p.name for p in run.iterdir()) == ['.lock']  # nothing else written
  # The lock goes with its holder: the run trains.
  assert _run('train.py', *args, env=env).returncode == 0


def test_run_stopped_as_it_finishes_is_not_trained_again(tmp_path, monkeypatch):
  from training import run_dir as rd
  run = tmp_path / 'run'
  real_write = rd.write_json

  def stop_before_completed(path, data):
    if data.get('status') == 'completed':
      raise _Stopped  # as a Ctrl-C after the last epoch, before run.json says so
    real_write(path, data)

  monkeypatch.setattr(rd, 'write_json', stop_before_completed)
  with pytest.raises(_Stopped):
    _train_in_process(tmp_path, monkeypatch, run)
  monkeypatch.setattr(rd, 'write_json', real_write)
  assert json.loads((run / 'run.json').read_text())['status'] == 'running'
  best_model = (run / 'checkpoints/best.keras').read_bytes()
  with open(run / 'history.csv') as f:
    history = f.read()
  info = _train_in_process(tmp_path, monkeypatch, run)
  # Keras deleted the backup at the end of fit(), and the run started over from epoch 1,
  # deleting its best model; now the backup says both epochs were done.
  assert info['status'] == 'completed'
  assert (run / 'checkpoints/best.keras').read_bytes() == best_model
  with open(run / 'history.csv') as f:
    assert f.read() == history  # no epoch trained again
  assert not (run / 'checkpoints/backup').exists()  # removed once 'completed' is written


def test_a_run_finished_by_another_process_meanwhile_is_not_trained_again(tmp_path,
                                                                          monkeypatch):
  import contextlib
  from training import run_dir as rd
  done = tmp_path / 'done'
  _train_in_process(tmp_path, monkeypatch, done)
  real_lock = rd.training_lock

  @contextlib.contextmanager
  def finished_while_waiting(run_dir):
    # What a first train.py leaves when it ends while this one builds data and model.
    (tmp_path / 'run' / 'run.json').write_text((done / 'run.json').read_text())
    with real_lock(run_dir):
      yield

  monkeypatch.setattr(rd, 'training_lock', finished_while_waiting)
  info = _train_in_process(tmp_path, monkeypatch, tmp_path / 'run')
  assert info['status'] == 'completed'
  assert not (tmp_path / 'run' / 'history.csv').exists()  # nothing trained over it


def test_a_failed_save_of_the_best_model_keeps_the_previous_one(tmp_path):
  import keras
  from training import callbacks as cb
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  (tmp_path / 'checkpoints').mkdir()
  (tmp_path / 'checkpoints/best.tmp.keras').write_bytes(b'PK')  # a killed save's leftover
  best = cb.BestCheckpoint(str(tmp_path), 'val_auc', 'max')
  assert not (tmp_path / 'checkpoints/best.tmp.keras').exists()
  best.set_model(model)
  best.on_epoch_end(0, {'val_auc': 0.7})
  saved = (tmp_path / 'checkpoints/best.keras').read_bytes()
  real_save = model.save

  def stopped_while_saving(path, **kwargs):
    real_save(path, **kwargs)
    with open(path, 'r+b') as f:
      f.truncate(100)  # half-written, as a kill during the write leaves it
    raise _Stopped

  model.save = stopped_while_saving
  with pytest.raises(_Stopped):
    best.on_epoch_end(1, {'val_auc': 0.9})
  assert (tmp_path / 'checkpoints/best.keras').read_bytes() == saved
  assert json.loads((tmp_path / 'checkpoints/best.json').read_text())['epoch'] == 1
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['best.json',
                                                                         'best.keras']
  keras.models.load_model(tmp_path / 'checkpoints/best.keras')
  model.save = real_save
  best.on_epoch_end(2, {'val_auc': 0.8})  # still better than 0.7: saved
  assert json.loads((tmp_path / 'checkpoints/best.json').read_text())['epoch'] == 3


def test_run_stopped_before_its_first_backup_starts_over(tmp_path, env):
  run = tmp_path / 'run'
  args = [f'--gin_file={DEBUG}', f'--run_dir={run}']
  assert _run('train.py', *args, env=env).returncode == 0
  # What a kill during the first epoch's callbacks leaves: a history row, a best
  # checkpoint and its value, no backup.
  info = json.loads((run / 'run.json').read_text())
  (run / 'run.json').write_text(json.dumps(dict(info, status='running')))
  best = json.loads((run / 'checkpoints/best.json').read_text())
  (run / 'checkpoints/best.json').write_text(json.dumps(dict(best, value=2.0, epoch=1)))
  with open(run / 'history.csv') as f:
    first_rows = f.read().splitlines()[:2]
  (run / 'history.csv').write_text('\n'.join(first_rows) + '\n')
  result = _run('train.py', *args, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'training from the start' in result.stderr
  with open(run / 'history.csv') as f:
    assert [int(r['epoch']) for r in csv.DictReader(f)] == [0, 1]
  with open(run / 'history_stopped.csv') as f:
    assert [int(r['epoch']) for r in csv.DictReader(f)] == [0]
  # The value of the attempt that was not continued no longer has to be beaten.
  assert json.loads((run / 'checkpoints/best.json').read_text())['value'] <= 1.0


def test_deterministic_runs_are_identical(tmp_path, env):
  outputs = []
  for name in ('a', 'b'):
    run = tmp_path / name
    result = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}',
                  '--gin_bindings=train.deterministic = True', env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _run('evaluate.py', f'--run_dir={run}', env=env).returncode == 0
    outputs.append(((run / 'history.csv').read_text(),
                    (run / 'predictions_test.csv').read_text()))
  assert outputs[0] == outputs[1]


def test_weight_averaging_changes_what_is_validated_not_what_is_trained(tmp_path, env):
  histories = {}
  for name, ema in (('raw', 'None'), ('ema', '0.5')):
    run = tmp_path / name
    result = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}',
                  '--gin_bindings=train.deterministic = True',
                  '--gin_bindings=train.learning_rate = 0.01',
                  f'--gin_bindings=train.ema_momentum = {ema}', env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / 'history.csv') as f:
      histories[name] = list(csv.DictReader(f))
  for raw, ema in zip(histories['raw'], histories['ema']):
    # Training metrics come from the raw weights, validation from their moving average
    # (swapping them in and out may change the last bits, hence approx).
    assert float(ema['loss']) == pytest.approx(float(raw['loss']), rel=1e-4)
  assert any(abs(float(r['val_loss']) - float(e['val_loss'])) > 1e-4
             for r, e in zip(histories['raw'], histories['ema']))
  # The best checkpoint holds the averaged weights that were validated: evaluating it
  # gives the validation loss logged at its epoch.
  run = tmp_path / 'ema'
  assert _run('evaluate.py', f'--run_dir={run}', env=env).returncode == 0
  best_epoch = json.loads((run / 'checkpoints' / 'best.json').read_text())['epoch']
  _, labels, p_rdr = predictions.read_referable(str(run), 'val')
  p_true = np.where(labels == 1, p_rdr, 1.0 - p_rdr)
  assert -np.mean(np.log(p_true)) == pytest.approx(
      float(histories['ema'][best_epoch - 1]['val_loss']), rel=1e-3)


def test_binary_metrics_against_hand_computed_values():
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
  probs = np.array([0.1, 0.2, 0.6, 0.3, 0.9, 0.8, 0.4, 0.7, 0.55, 0.2])
  m = metrics.binary_metrics(labels, probs, threshold=0.5)
  # Predictions: 0 0 1 0 | 1 1 0 1 1 0 -> TN 3, FP 1, TP 4, FN 2.
  assert m['confusion_matrix'] == [[3, 1], [2, 4]]
  assert m['accuracy'] == pytest.approx(7 / 10)
  assert m['sensitivity'] == pytest.approx(4 / 6)
  assert m['specificity'] == pytest.approx(3 / 4)
  assert m['balanced_accuracy'] == pytest.approx((4 / 6 + 3 / 4) / 2)
  assert m['precision'] == pytest.approx(4 / 5)
  assert m['f1'] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
  # AUC: share of (positive, negative) pairs ranked correctly, ties count half.
  pairs = [(p, n) for p in probs[labels == 1] for n in probs[labels == 0]]
  auc = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
  assert m['roc_auc'] == pytest.approx(auc)


def test_metric_name_lists_match_what_metrics_json_holds():
  # tune.py refuses names outside SCALAR_METRICS, so the lists must follow the functions.
  labels, probs = np.array([0, 1, 2, 3, 4]), np.eye(5)
  binary = metrics.binary_metrics(labels > 1, probs[:, 2:].sum(axis=1), 0.5)
  grades = metrics.multiclass_metrics(labels, probs)
  scalar = lambda m: {k for k, v in m.items() if isinstance(v, float)} - {'threshold'}
  assert scalar(binary) == set(metrics.BINARY_METRICS)
  assert scalar(grades) == set(metrics.GRADE_METRICS)


def test_threshold_rules():
  labels = np.array([0, 0, 0, 1, 1, 1])
  probs = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.9])
  assert metrics.choose_threshold(labels, probs, 'argmax') == 0.5
  youden = metrics.choose_threshold(labels, probs, 'youden')
  assert 0.2 < youden <= 0.3
  assert metrics.binary_metrics(labels, probs, youden)['balanced_accuracy'] == 1.0
  assert metrics.choose_threshold(labels, probs, 'sensitivity', min_sensitivity=0.3) == 0.9
  with pytest.raises(ValueError, match="unknown threshold_rule 'median'"):
    metrics.choose_threshold(labels, probs, 'median')
  # A percentage instead of a fraction: no threshold reaches 95, so it is refused by name.
  with pytest.raises(ValueError, match=r'min_sensitivity must be a number in \(0, 1\], got 95'):
    metrics.choose_threshold(labels, probs, 'sensitivity', min_sensitivity=95)


def test_threshold_rules_see_every_point_of_the_roc_curve():
  # Straight stretches of the ROC curve: sklearn's default thinning drops their inner
  # points, which hold these answers.
  labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
  probs = np.array([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9])
  # The highest threshold reaching 60 % sensitivity: 0.7 calls 3 of the 5 RDR.
  assert metrics.choose_threshold(labels, probs, 'sensitivity', min_sensitivity=0.6) == 0.7
  # Youden ties at 0.9, 0.8 and 0.7 (J = 1/3 at each): the middle one.
  labels = np.array([1, 1, 1, 0, 0, 0])
  probs = np.array([0.9, 0.8, 0.7, 0.8, 0.7, 0.1])
  assert metrics.choose_threshold(labels, probs, 'youden') == 0.8


def test_keras_metrics_match_sklearn():
  import keras
  from training import metrics as keras_metrics
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 50)
  probs = rng.random(50)
  y_pred = np.stack([1 - probs, probs], axis=1).astype('float32')
  expected = metrics.binary_metrics(labels, probs, 0.5)
  for metric, key in ((keras_metrics.BalancedAccuracy(2), 'balanced_accuracy'),
                      (keras_metrics.ClassRecall(1, 2), 'sensitivity'),
                      (keras_metrics.ClassRecall(0, 2), 'specificity')):
    metric.update_state(labels[:20], y_pred[:20])
    metric.update_state(labels[20:], y_pred[20:])
    assert float(metric.result()) == pytest.approx(expected[key], abs=1e-6), key
  auc = keras_metrics.PositiveClassAUC(num_thresholds=2000)
  auc.update_state(labels, y_pred)
  assert float(auc.result()) == pytest.approx(expected['roc_auc'], abs=0.01)
  del keras


def test_keras_metrics_count_soft_labels_as_their_most_probable_class():
  from training import metrics as keras_metrics
  rng = np.random.default_rng(3)
  lam = rng.random(40).astype('float32')
  labels = rng.integers(0, 2, 40)
  onehot = np.eye(2, dtype='float32')[labels]
  soft = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[::-1]  # as mixup gives them
  probs = rng.random(40)
  y_pred = np.stack([1 - probs, probs], axis=1).astype('float32')
  for make in (keras_metrics.SoftSparseAccuracy, lambda: keras_metrics.BalancedAccuracy(2),
               lambda: keras_metrics.ClassRecall(1, 2), keras_metrics.PositiveClassAUC):
    on_soft, on_hard = make(), make()
    on_soft.update_state(soft, y_pred)
    on_hard.update_state(soft.argmax(axis=1), y_pred)
    assert float(on_soft.result()) == pytest.approx(float(on_hard.result())), on_soft.name
  assert (soft.argmax(axis=1) != labels).any()  # some blends are dominated by the partner


def test_soft_label_loss_is_the_cross_entropy_of_the_blended_labels():
  import keras
  from training import trainer
  rng = np.random.default_rng(4)
  probs = rng.dirichlet([1, 1], 12).astype('float32')
  labels = rng.integers(0, 2, 12)
  lam = rng.random(12).astype('float32')
  onehot = np.eye(2, dtype='float32')[labels]
  soft = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[::-1]
  loss = trainer._soft_label_loss(2, 0.0)
  assert float(loss(soft, probs)) == pytest.approx(
      np.mean(-np.sum(soft * np.log(probs), axis=1)), rel=1e-5)
  # Sparse labels (the validation batches) give Keras' sparse cross-entropy.
  assert float(loss(labels, probs)) == pytest.approx(
      float(keras.losses.SparseCategoricalCrossentropy()(labels, probs)), rel=1e-5)
  # Label smoothing moves each label towards uniform: y (1 - e) + e / 2.
  smoothed = trainer._soft_label_loss(2, 0.2)
  target = soft * 0.8 + 0.1
  assert float(smoothed(soft, probs)) == pytest.approx(
      np.mean(-np.sum(target * np.log(probs), axis=1)), rel=1e-5)
  assert float(smoothed(labels, probs)) == pytest.approx(
      np.mean(-np.sum((onehot * 0.8 + 0.1) * np.log(probs), axis=1)), rel=1e-5)


def test_mixup_run_trains_validates_and_evaluates(tmp_path, env):
  run = tmp_path / 'run'
  result = _run('train.py', f'--gin_file={DEBUG}', f'--run_dir={run}',
                '--gin_bindings=train.mixup = 0.2', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(run / 'history.csv') as f:
    rows = list(csv.DictReader(f))
  for row in rows:  # training metrics on blended batches, validation on plain photographs
    assert 0.0 <= float(row['balanced_accuracy']) <= 1.0 and 0.0 <= float(row['auc']) <= 1.0
    assert np.isfinite(float(row['loss'])) and np.isfinite(float(row['val_loss']))
  assert "train.mixup = 0.2" in (run / 'operative_config.gin').read_text()
  assert _run('evaluate.py', f'--run_dir={run}', env=env).returncode == 0
  assert (run / 'predictions_test.csv').is_file()


def test_five_grade_models_log_the_referable_auc():
  """A model trained on grades 0-4 is scored for referable DR: P(grade >= 2) vs grade >= 2."""
  from sklearn.metrics import roc_auc_score
  from training import metrics as keras_metrics
  rng = np.random.default_rng(1)
  grades = rng.integers(0, 5, 60)
  y_pred = rng.dirichlet(np.ones(5), 60).astype('float32')
  names = [m.name for m in keras_metrics.training_metrics(5)]
  assert 'referable_auc' in names and 'auc' not in names
  auc = keras_metrics.PositiveClassAUC('referable_auc', first_positive=2, num_thresholds=2000)
  auc.update_state(grades, y_pred)
  expected = roc_auc_score(grades >= 2, y_pred[:, 2:].sum(axis=1))
  assert float(auc.result()) == pytest.approx(expected, abs=0.01)
  # A checkpoint's compiled metric comes back as the referable one.
  restored = keras_metrics.PositiveClassAUC.from_config(auc.get_config())
  restored.update_state(grades, y_pred)
  assert float(restored.result()) == pytest.approx(float(auc.result()), abs=1e-6)


def test_tta_averages_the_eight_views(synthetic_records):
  """With all eight views, a model that rotates or flips its input first scores the same."""
  import keras
  import tensorflow as tf
  import models
  from evaluation import evaluator
  keras.utils.set_random_seed(0)
  model = models.build_model(name='resnet_v2', input_shape=(64, 64, 3), num_classes=2)
  inputs = keras.Input((64, 64, 3))
  turned = keras.layers.Lambda(lambda x: tf.image.flip_left_right(tf.image.rot90(x, 1)))(inputs)
  turned_model = keras.Model(inputs, model(turned))
  one, labels, names = evaluator.predict(model, str(synthetic_records), 'test', tta=1)
  assert len(names) == len(labels) == one.shape[0] > 0
  one_turned = evaluator.predict(turned_model, str(synthetic_records), 'test', tta=1)[0]
  assert np.abs(one - one_turned).max() > 1e-4  # the untrained model is not invariant
  eight = evaluator.predict(model, str(synthetic_records), 'test', tta=8)[0]
  eight_turned = evaluator.predict(turned_model, str(synthetic_records), 'test', tta=8)[0]
  np.testing.assert_allclose(eight, eight_turned, atol=1e-5)
  np.testing.assert_allclose(eight.sum(axis=1), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match='evaluate.tta'):
    evaluator.predict(model, str(synthetic_records), 'test', tta=9)


def test_cross_validated_seed_from_run_seeds(tmp_path, env):
  results = tmp_path / 'results'
  args = ['results/run_seeds.py', f'--gin_file={DEBUG}', '--seeds=0', '--folds=2', '--name=cv',
          f'--runs_dir={tmp_path / "runs"}', f'--results_dir={results}']
  proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  seed = results / 'cv' / 'seed_0'
  m = json.loads((seed / 'metrics.json').read_text())
  assert m['cross_validation']['num_folds'] == 2 and len(m['folds']) == 2
  # Every training photograph of the records is scored once, by the fold that held it out.
  held_out = [predictions.read_referable(str(seed / f'fold_{k}'), 'val')[0] for k in (0, 1)]
  oof = predictions.read_referable(str(seed), 'val')[0]
  assert sorted(oof) == sorted(held_out[0] + held_out[1]) and not set(held_out[0]) & set(held_out[1])
  assert m['splits']['val']['n'] == len(oof) and m['splits']['test']['n'] == 8
  assert 'out-of-fold' in proc.stdout
  assert '--normalise=logit_z' in proc.stdout and m['cross_validation']['normalise'] == 'logit_z'
  again = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
  assert again.returncode == 0 and 'seed 0: already in' in again.stdout
  bad = subprocess.run([sys.executable, *args[:-3], '--folds=1'], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and '--folds must be 0' in bad.stderr


@pytest.mark.parametrize('args, message', [
    (['--seeds=0,x'], "--seeds must be whole numbers in [0, 4294967295], got 'x'"),
    (['--seeds=0,4294967296'], "got '4294967296'"),
    (['--seeds='], '--seeds is empty'),
    (['--folds=1'], 'error: --folds must be 0 (no cross-validation) or at least 2, got 1'),
    (['--results_dir= '], 'error: --results_dir is empty'),
    (['--seeds=0', '--gin_bindings=train.label_smoothing = 2.0'],
     'error: train.py exited with status 1 (its error is above)'),
])
def test_run_seeds_fails_in_one_line_and_keeps_no_result(tmp_path, env, args, message):
  results = tmp_path / 'results'
  proc = subprocess.run([sys.executable, 'results/run_seeds.py', f'--gin_file={DEBUG}',
                         '--name=bad', f'--runs_dir={tmp_path / "runs"}',
                         f'--results_dir={results}', *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  assert 'Where the runs go' not in proc.stderr  # one line, not the whole --help
  assert not results.exists()


def test_macros_are_refused_only_when_nothing_uses_them():
  import gin
  from training import trainer  # pylint: disable=unused-import  (registers train)
  from utils import gin_utils
  try:
    for used in (['E = 3', 'train.epochs = %E'], ['E = 3', 'train.epochs = % E'],
                 ['train.monitor = """\nepochs = 3\n"""']):
      gin.clear_config()
      gin_utils.parse_gin([], used, finalize=False)
    gin.clear_config()
    with pytest.raises(gin_utils.ConfigError, match="'epochs = 3'.*names no configurable"):
      gin_utils.parse_gin([], ['epochs = 3'], finalize=False)
  finally:
    gin.clear_config()

"""TFRecords: manifest, reuse, rebuild, atomic writes, rejects, the command line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from input_pipeline import idrid
from input_pipeline import tfrecords
from tests.conftest import REPO_ROOT

TRAIN = 'B. Disease Grading/1. Original Images/a. Training Set'
TEST = 'B. Disease Grading/1. Original Images/b. Testing Set'


def _copy(synthetic_dir, tmp_path):
  data = tmp_path / 'data'
  shutil.copytree(synthetic_dir, data)
  return data


def _build(data, out, **kwargs):
  kwargs.setdefault('image_size', 32)
  kwargs.setdefault('num_workers', 1)
  return tfrecords.build_tfrecords(str(data), str(out), **kwargs)


def test_manifest_counts_and_shards(synthetic_records):
  manifest = tfrecords.read_manifest(str(synthetic_records))
  counts = manifest['counts']
  assert counts['train']['total'] + counts['val']['total'] == 36
  assert counts['test']['total'] == 12
  for split in ('train', 'val', 'test'):
    c = counts[split]
    assert sum(c['per_class'].values()) == c['total'] == sum(c['per_grade'].values())
    assert all(os.path.isfile(p) for p in tfrecords.shard_paths(str(synthetic_records), split))
  # shard_size 8: 36 * 0.8 training photographs need several shards.
  assert len(manifest['shards']['train']) == -(-counts['train']['total'] // 8)
  assert len(manifest['sources']) == 48 and manifest['params']['image_size'] == 64
  lines = (synthetic_records / 'splits.csv').read_text().splitlines()
  assert lines[0] == 'split,name,grade,label,sha256' and len(lines) == 49


def test_second_build_reuses_and_changed_params_rebuild(synthetic_dir, tmp_path):
  out = tmp_path / 'tfr'
  first = _build(synthetic_dir, out)
  shard = tfrecords.shard_paths(str(out), 'test')[0]
  mtime = os.path.getmtime(shard)
  again = _build(synthetic_dir, out)
  assert again['reused'] and not first['reused']
  assert os.path.getmtime(shard) == mtime
  changed = _build(synthetic_dir, out, image_size=40)
  assert not changed['reused'] and changed['params']['image_size'] == 40


def test_changed_input_rebuilds(synthetic_dir, tmp_path):
  data = _copy(synthetic_dir, tmp_path)
  out = tmp_path / 'tfr'
  first = _build(data, out)
  shutil.copy(data / TRAIN / 'IDRiD_002.jpg', data / TRAIN / 'IDRiD_001.jpg')
  second = _build(data, out)
  assert not second['reused'] and second['fingerprint'] != first['fingerprint']


def test_duplicates_dropped_with_reasons(synthetic_dir, tmp_path):
  data = _copy(synthetic_dir, tmp_path)
  shutil.copy(data / TEST / 'IDRiD_001.jpg', data / TRAIN / 'IDRiD_005.jpg')
  manifest = _build(data, tmp_path / 'tfr')
  assert [(d['name'], 'test leakage' in d['reason']) for d in manifest['dropped']] == [
      ('IDRiD_005', True)]
  assert manifest['counts']['train']['total'] + manifest['counts']['val']['total'] == 35


def test_corrupt_jpeg_is_rejected_and_listed(synthetic_dir, tmp_path):
  data = _copy(synthetic_dir, tmp_path)
  bad = data / TRAIN / 'IDRiD_004.jpg'
  bad.write_bytes(bad.read_bytes()[:500])
  manifest = _build(data, tmp_path / 'tfr')
  assert [r['name'] for r in manifest['rejected']] == ['IDRiD_004']
  assert 'IDRiD_004.jpg' in manifest['rejected'][0]['reason']
  assert manifest['counts']['train']['total'] + manifest['counts']['val']['total'] == 35


def test_strict_fails_and_leaves_nothing(synthetic_dir, tmp_path):
  data = _copy(synthetic_dir, tmp_path)
  (data / TRAIN / 'IDRiD_004.jpg').write_bytes(b'not a jpeg')
  out = tmp_path / 'tfr'
  with pytest.raises(idrid.DataError, match='IDRiD_004.jpg'):
    _build(data, out, strict=True)
  assert not out.exists()
  assert os.listdir(tmp_path) == ['data']


def test_interrupted_build_leaves_nothing(synthetic_dir, tmp_path, monkeypatch):
  out = tmp_path / 'tfr'

  def boom(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(tfrecords, 'serialize', boom)
  with pytest.raises(KeyboardInterrupt):
    _build(synthetic_dir, out)
  assert os.listdir(tmp_path) == []


def test_empty_split_after_rejects_is_an_error(synthetic_dir, tmp_path):
  data = _copy(synthetic_dir, tmp_path)
  for jpg in (data / TEST).glob('*.jpg'):
    jpg.write_bytes(b'')
  with pytest.raises(idrid.DataError, match='split test is empty'):
    _build(data, tmp_path / 'tfr')
  assert not (tmp_path / 'tfr').exists()


@pytest.mark.parametrize('force', [False, True])
def test_refuses_foreign_folder(synthetic_dir, tmp_path, force):
  out = tmp_path / 'tfr'
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  with pytest.raises(FileExistsError, match='not a TFRecords folder'):
    _build(synthetic_dir, out, force=force)  # a rebuild would replace the whole folder
  assert (out / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('where', ['.', '..'])
def test_refuses_to_build_over_the_data(synthetic_dir, tmp_path, where):
  data = _copy(synthetic_dir, tmp_path / 'parent')
  before = sorted(p.relative_to(data) for p in data.rglob('*'))
  with pytest.raises(FileExistsError, match='holds the data folder'):
    _build(data, data / where, force=True)
  assert sorted(p.relative_to(data) for p in data.rglob('*')) == before


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'input_pipeline.make_tfrecords', *args],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_command_line_summary_and_reuse(synthetic_dir, tmp_path):
  out = tmp_path / 'tfr'
  args = [f'--data_dir={synthetic_dir}', f'--out_dir={out}',
          '--gin_bindings=tfrecords.build_tfrecords.image_size = 32']
  first = _cli(*args)
  assert first.returncode == 0, first.stderr
  assert 'built' in first.stdout and 'test    12 images' in first.stdout
  second = _cli(*args)
  assert 'reused' in second.stdout
  manifest = json.loads((out / 'manifest.json').read_text())
  assert manifest['params']['image_size'] == 32
  umask = os.umask(0)
  os.umask(umask)
  assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0o700


def test_command_line_takes_an_experiment_gin_file(synthetic_dir, tmp_path):
  out = tmp_path / 'tfr'
  result = _cli(f'--data_dir={synthetic_dir}', f'--out_dir={out}',
                '--gin_file=configs/debug/debug.gin')  # binds train, models, augment too
  assert result.returncode == 0, result.stderr[-2000:]
  manifest = json.loads((out / 'manifest.json').read_text())
  assert manifest['params']['image_size'] == 64  # debug.gin's, not the default 256


@pytest.mark.parametrize('args, message', [
    (['--data_dir=/no/such/folder'], 'data folder not found: /no/such/folder'),
    (['--gin_bindings=tfrecords.build_tfrecords.image_sise = 32'], 'image_sise'),
    (["--gin_bindings=tfrecords.build_tfrecords.contrast = 'bogus'"], 'bogus'),
])
def test_command_line_errors_are_one_line(synthetic_dir, tmp_path, args, message):
  base = [f'--data_dir={synthetic_dir}', f'--out_dir={tmp_path / "tfr"}']
  result = _cli(*(base + args))
  assert result.returncode == 1
  error_lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(error_lines) == 1 and message in error_lines[0]
  assert 'In call to configurable' not in result.stderr  # gin's detail stays out
  assert not (tmp_path / 'tfr').exists()


def test_real_idrid_manifest(idrid_800, tmp_path):
  manifest = tfrecords.build_tfrecords(str(idrid_800), str(tmp_path / 'tfr'), image_size=64)
  counts = manifest['counts']
  assert counts['test']['per_class'] == {'NRDR': 39, 'RDR': 64}
  dropped = {d['name'] for d in manifest['dropped']}
  assert dropped == {'IDRiD_118', 'IDRiD_021', 'IDRiD_391'}
  assert counts['train']['total'] + counts['val']['total'] == 413 - len(dropped)


def _alive(pid: str) -> bool:
  """Whether a process runs (a zombie, ended but not yet reaped, does not)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[-1].split()[0] != 'Z'
  except OSError:
    return False


def _children(pid: int) -> list[str]:
  listed = subprocess.run(['pgrep', '-P', str(pid)], capture_output=True, text=True)
  return [c for c in listed.stdout.split() if _alive(c)]


@pytest.mark.parametrize('how', [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_build_leaves_no_worker_and_no_records(idrid_800, tmp_path, how):
  out, log = tmp_path / 'tfr', tmp_path / 'build.log'
  with open(log, 'w') as stderr:  # a file: workers left behind would hold a pipe open
    build = subprocess.Popen(
        [sys.executable, '-m', 'input_pipeline.make_tfrecords', f'--data_dir={idrid_800}',
         f'--out_dir={out}', '--gin_bindings=tfrecords.build_tfrecords.num_workers = 2'],
        cwd=REPO_ROOT, stderr=stderr, text=True)
  deadline = time.time() + 120
  while 'preprocessed' not in log.read_text():  # the workers are busy with the photographs
    assert build.poll() is None and time.time() < deadline, log.read_text()[-2000:]
    time.sleep(0.05)
  workers = _children(build.pid)
  assert workers, 'no preprocessing workers found'
  build.send_signal(how)
  assert build.wait(timeout=120) == (130 if how == signal.SIGTERM else -signal.SIGKILL)
  if how == signal.SIGTERM:  # one line, as for Ctrl-C
    assert 'interrupted: run the same command again to resume' in log.read_text()
    assert 'Traceback' not in log.read_text()
  deadline = time.time() + 30  # the workers notice within about a second
  while time.time() < deadline and any(_alive(w) for w in workers):
    time.sleep(0.2)
  assert not [w for w in workers if _alive(w)], 'workers outlived the build'
  assert not out.exists() and not list(tmp_path.glob('.tfr.tmp-*'))


def test_out_dir_that_is_a_file_is_refused(synthetic_dir, tmp_path):
  target = tmp_path / 'labels.csv'
  target.write_text('precious')
  with pytest.raises(FileExistsError, match='is a file'):
    _build(synthetic_dir, target)
  assert target.read_text() == 'precious'


def test_missing_shard_triggers_rebuild(synthetic_dir, tmp_path):
  out = tmp_path / 'tfr'
  _build(synthetic_dir, out)
  os.remove(tfrecords.shard_paths(str(out), 'val')[0])
  again = _build(synthetic_dir, out)
  assert not again['reused']
  assert all(os.path.isfile(p) for p in tfrecords.shard_paths(str(out), 'val'))


def test_fold_records_hold_out_each_training_photograph_once(synthetic_dir, tmp_path):
  plain = _build(synthetic_dir, tmp_path / 'plain')
  assert 'fold' not in plain['params']  # records without folds keep their fingerprint
  held_out, train_total = [], None
  for fold in range(3):
    out = tmp_path / f'fold_{fold}'
    manifest = _build(synthetic_dir, out, fold=fold, num_folds=3)
    assert manifest['params']['fold'] == fold and manifest['params']['num_folds'] == 3
    rows = [line.split(',') for line in (out / 'splits.csv').read_text().splitlines()[1:]]
    held_out += [r[1] for r in rows if r[0] == 'val']
    total = sum(1 for r in rows if r[0] in ('train', 'val'))
    assert train_total in (None, total)
    train_total = total
    assert manifest['counts']['test']['total'] == plain['counts']['test']['total']
  assert len(held_out) == len(set(held_out)) == train_total


def test_bad_fold_is_refused_before_anything_is_written(synthetic_dir, tmp_path):
  with pytest.raises(ValueError, match=r'build_tfrecords.fold must be a whole number in \[0, 2\]'):
    _build(synthetic_dir, tmp_path / 'tfr', fold=3, num_folds=3)
  assert not (tmp_path / 'tfr').exists()


def test_preprocessing_workers_import_no_tensorflow():
  # Each worker imports the module of its task and initializer: TensorFlow there would
  # cost every worker seconds and hundreds of MB.
  code = ('import sys; from input_pipeline import encode; '
          'print(encode.preprocess_to_png.__module__, encode.exit_with_parent.__module__, '
          "'tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.stdout.split() == ['input_pipeline.encode', 'input_pipeline.encode', 'False']

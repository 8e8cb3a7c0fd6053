"""The benchmark scripts: a bad flag is one `error:` line, before any timing runs."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize('script, args, message', [
    ('inference.py', ['--repeats=0'], '--repeats must be a whole number >= 1, got 0'),
    ('inference.py', ['--photo=/no/such/photo.jpg'], '--photo: no file /no/such/photo.jpg'),
    ('input_pipeline.py', ['--batches=0'], '--batches must be a whole number >= 1, got 0'),
    ('train_step.py', ['--settings=default'], "--settings takes mode:batch_size"),
    ('train_step.py', ['--settings=xla:32,turbo:32'], "unknown mode 'turbo' in --settings"),
    ('train_step.py', ['--records_dir=/no/such/records'], '/no/such/records/manifest.json'),
    ('train_memory.py', ['--data_dir=x', '--run_dir=y', '--epochs=0'], '--epochs must be'),
    ('train_memory.py', ['--run_dir=y'], 'Flag --data_dir must have a value other than None'),
    ('inference.py', ['--repeats=many'], "flag --repeats=many: invalid literal for int()"),
    ('train_memory.py', ['--data_dir=/no/such/idrid', '--run_dir=/no/such/run'],
     'train.py exited with status 1: data folder not found: /no/such/idrid'),
    ('build_tfrecords.py', ['--data_dir=/no/such/idrid'], '/no/such/idrid'),
])
def test_bad_flag_is_one_line_before_any_timing(script, args, message):
  proc = subprocess.run([sys.executable, f'benchmarks/{script}', *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
  assert message in errors[0]
  assert 'Traceback' not in proc.stderr and 'Flags:' not in proc.stderr  # no --help either
  assert 'GFLOP/s' not in proc.stdout and 'images/s' not in proc.stdout  # nothing timed

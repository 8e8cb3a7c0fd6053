"""benchmarks/run_all.sh: one-line errors before any benchmark starts."""

import os
import stat
import subprocess

from tests.conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, 'benchmarks', 'run_all.sh')


def _run(args, env=None):
  return subprocess.run(['bash', SCRIPT, *args], capture_output=True, text=True, env=env,
                        timeout=60, check=False)


def test_missing_idrid_folder_is_named(tmp_path):
  missing = tmp_path / 'no_idrid'
  result = _run([str(missing)])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f'run_all.sh: IDRiD folder not found: {missing} (give its path as the first argument)']
  assert result.stdout == ''


def test_python_without_tensorflow_says_to_activate_the_environment(tmp_path):
  """A `python` on PATH that cannot import TensorFlow (no environment activated)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fake = bin_dir / 'python'
  fake.write_text('#!/bin/sh\necho "ModuleNotFoundError: No module named absl" >&2\nexit 1\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  result = _run([str(tmp_path)], env=env)  # an existing folder: the check comes next
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and str(fake) in lines[0] and '.venv/bin/activate' in lines[0]
  assert 'machine:' not in result.stdout  # stopped before any benchmark

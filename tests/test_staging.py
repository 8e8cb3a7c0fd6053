"""Staging folders: complete output replaces its target; killed jobs' leftovers go."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT
from utils import staging


def test_a_complete_folder_replaces_the_target(tmp_path):
  target = tmp_path / 'records'
  target.mkdir()
  (target / 'old.txt').write_text('old')
  with staging.staged(str(target)) as folder:
    (tmp_path / 'records' / 'old.txt').read_text()  # the old one is intact meanwhile
    with open(os.path.join(folder, 'new.txt'), 'w') as f:
      f.write('new')
  assert sorted(p.name for p in target.iterdir()) == ['new.txt']  # no lock file either
  assert sorted(p.name for p in tmp_path.iterdir()) == ['records']
  umask = os.umask(0)
  os.umask(umask)
  assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0o700


@pytest.mark.parametrize('error', [ValueError, KeyboardInterrupt])
def test_a_failed_or_stopped_job_leaves_the_target_as_it_was(tmp_path, error):
  target = tmp_path / 'records'
  target.mkdir()
  (target / 'old.txt').write_text('old')
  with pytest.raises(error):
    with staging.staged(str(target)) as folder:
      with open(os.path.join(folder, 'half.txt'), 'w') as f:
        f.write('half')
      raise error
  assert sorted(p.name for p in tmp_path.iterdir()) == ['records']
  assert sorted(p.name for p in target.iterdir()) == ['old.txt']


def _stage_and_wait(target):
  """A process inside staged(target), as a build writing its files; returns it and the folder."""
  code = ('import sys, time\n'
          'from utils import staging\n'
          'with staging.staged(sys.argv[1]) as folder:\n'
          '  print(folder, flush=True)\n'
          '  time.sleep(600)\n')
  job = subprocess.Popen([sys.executable, '-c', code, str(target)], cwd=REPO_ROOT,
                         stdout=subprocess.PIPE, text=True)
  return job, job.stdout.readline().strip()


def test_the_folder_of_a_killed_job_is_removed_by_the_next_one(tmp_path):
  target = tmp_path / 'records'
  job, folder = _stage_and_wait(target)
  try:
    assert os.path.isdir(folder) and os.path.basename(folder).startswith('.records.tmp-')
    # Another job beside a running one leaves its folder alone.
    with staging.staged(str(target)):
      pass
    assert os.path.isdir(folder)
  finally:
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
  assert os.path.isdir(folder)  # SIGKILL: nothing could remove it
  with staging.staged(str(target)) as mine:
    assert not os.path.exists(folder)  # removed before the next job writes
    assert os.path.isdir(mine)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['records']


def test_unlocked_leftovers_are_removed_only_when_old(tmp_path):
  target = tmp_path / 'records'
  fresh = tmp_path / '.records.tmp-fresh123'  # as one being created right now
  old = tmp_path / '.records.old-a1b2c3d4'  # a job killed between its two renames
  earlier = tmp_path / '.records.a1b2c3d4.tmp'  # earlier versions' synthetic sets
  other = tmp_path / '.other.tmp-a1b2c3d4'  # another target's: not ours to judge
  mine = tmp_path / '.records.tmp-mine'  # not a name the project makes
  for folder in (fresh, old, earlier, other, mine):
    folder.mkdir()
    (folder / 'shard.tfrecord').write_bytes(b'x')
  long_ago = time.time() - 2 * staging.UNLOCKED_LEFTOVER_AGE_S
  for folder in (old, earlier, other, mine):
    os.utime(folder, (long_ago, long_ago))
  assert staging.remove_leftovers(str(target)) == [str(earlier), str(old)]
  assert fresh.is_dir() and other.is_dir() and mine.is_dir()


@pytest.mark.parametrize('error', [KeyboardInterrupt, OSError(errno.EIO, 'I/O error')])
def test_a_job_stopped_between_its_two_renames_puts_the_old_folder_back(
    tmp_path, monkeypatch, error):
  target = tmp_path / 'records'
  target.mkdir()
  (target / 'old.txt').write_text('old')
  real_rename = os.rename

  def rename(src, dst):
    if os.path.basename(src).startswith('.records.tmp-'):  # the staging folder's turn
      raise error
    real_rename(src, dst)

  monkeypatch.setattr(os, 'rename', rename)
  with pytest.raises(type(error) if isinstance(error, OSError) else error):
    with staging.staged(str(target)) as folder:
      (tmp_path / folder / 'new.txt').write_text('new')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['records']
  assert sorted(p.name for p in target.iterdir()) == ['old.txt']


def test_without_locks_a_running_jobs_folder_is_kept(tmp_path, monkeypatch):
  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(staging.fcntl, 'flock', no_locks)
  target = tmp_path / 'records'
  with staging.staged(str(target)) as running:
    (tmp_path / running / 'half.txt').write_text('half')
    # Files written into subfolders leave a folder's time as it was: it looks old.
    long_ago = time.time() - 2 * staging.UNLOCKED_LEFTOVER_AGE_S
    os.utime(running, (long_ago, long_ago))
    with staging.staged(str(target)):  # a second job beside it
      pass
    assert (tmp_path / running / 'half.txt').read_text() == 'half'
  assert sorted(p.name for p in target.iterdir()) == ['half.txt']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['records']


def test_a_free_lock_of_another_host_is_kept_until_a_day_old(tmp_path):
  target = tmp_path / 'records'
  folders = {}
  for age in ('fresh', 'day_old'):
    folder = folders[age] = tmp_path / f'.records.tmp-{age[:3]}45678'
    folder.mkdir()
    # Written by a job on another machine, whose lock this machine may not see.
    (folder / staging.LOCK).write_text('other-host.example 1234')
  long_ago = time.time() - 2 * staging.OTHER_HOST_LEFTOVER_AGE_S
  os.utime(folders['day_old'], (long_ago, long_ago))
  assert staging.remove_leftovers(str(target)) == [str(folders['day_old'])]
  assert folders['fresh'].is_dir()


def test_a_free_lock_of_a_running_process_is_kept(tmp_path):
  # A job where the file system had no locks, seen by one where flock works.
  target = tmp_path / 'records'
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  folders = {}
  for who, pid in (('running', os.getpid()), ('gone', dead.pid)):
    folder = folders[who] = tmp_path / f'.records.tmp-{who[:3]}45678'
    folder.mkdir()
    (folder / staging.LOCK).write_text(f'{socket.gethostname()} {pid}')
  assert staging.remove_leftovers(str(target)) == [str(folders['gone'])]
  assert folders['running'].is_dir()


def test_a_target_left_aside_by_a_killed_job_is_put_back(tmp_path):
  target = tmp_path / 'records'
  aside = tmp_path / '.records.old-a1b2c3d4'  # killed between its two renames
  (aside / 'records').mkdir(parents=True)
  (aside / 'records' / 'old.txt').write_text('old')
  long_ago = time.time() - 2 * staging.UNLOCKED_LEFTOVER_AGE_S
  os.utime(aside, (long_ago, long_ago))
  assert staging.remove_leftovers(str(target)) == [str(aside)]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['records']
  assert (target / 'old.txt').read_text() == 'old'


def test_two_jobs_publishing_at_once_keep_the_last_folder(tmp_path, monkeypatch):
  target = tmp_path / 'records'
  target.mkdir()
  first, second = tmp_path / '.records.tmp-aaaaaaaa', tmp_path / '.records.tmp-bbbbbbbb'
  for folder in (first, second):
    folder.mkdir()
    (folder / 'job.txt').write_text(folder.name)
  real_move_aside = staging._move_aside
  calls = []

  def other_job_publishes_meanwhile(path):
    moved = real_move_aside(path)
    calls.append(path)
    if len(calls) == 1:  # between the first job's two renames
      staging.publish(str(second), path)
    return moved

  monkeypatch.setattr(staging, '_move_aside', other_job_publishes_meanwhile)
  staging.publish(str(first), str(target))
  assert len(calls) == 3  # the first job moved the second's folder aside in turn
  assert (target / 'job.txt').read_text() == first.name
  assert sorted(p.name for p in tmp_path.iterdir()) == ['records']


def test_a_link_to_a_folder_keeps_pointing_at_the_new_one(tmp_path):
  real = tmp_path / 'data' / 'records'
  real.mkdir(parents=True)
  (real / 'old.txt').write_text('old')
  link = tmp_path / 'records'
  link.symlink_to(real)
  with staging.staged(str(link)) as folder:
    with open(os.path.join(folder, 'new.txt'), 'w') as f:
      f.write('new')
  assert link.is_symlink() and sorted(p.name for p in link.iterdir()) == ['new.txt']
  assert sorted(p.name for p in real.parent.iterdir()) == ['records']


def test_a_record_build_removes_the_folder_of_a_killed_job_beside_it(synthetic_dir, tmp_path):
  from input_pipeline import tfrecords
  out = tmp_path / 'tfr'
  job, folder = _stage_and_wait(out)  # as a job killed while writing these records
  job.send_signal(signal.SIGKILL)
  job.wait(timeout=60)
  tfrecords.build_tfrecords(str(synthetic_dir), str(out), image_size=64, num_workers=1)
  assert not os.path.exists(folder)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['tfr']

"""Folders written beside their target and renamed into place when complete.

A folder of records, a synthetic dataset or a run's eval/ log is written to a hidden
staging folder `.<name>.tmp-*` beside it; only a complete one replaces the target, so a
failed or stopped job leaves the old folder (or none) and no half-written one.

A job killed outright (SIGKILL, a lost machine) cannot remove its staging folder. Each
staging folder therefore holds a lock file, locked while its job runs (the operating system
releases the lock when the process ends, however it ends); the next job that stages into
the same parent folder removes staging folders whose lock is free.
"""

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from typing import Iterator

from absl import logging

LOCK = '.staging.lock'
# A staging folder without a lock file is left by a job killed before it made its lock, or
# by a version of the project without locks. Its age tells it from one being made now.
UNLOCKED_LEFTOVER_AGE_S = 60.0
# The errors of flock on a file system without locks.
NO_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)
_RANDOM = '[a-z0-9_]{8}'  # tempfile.mkdtemp's part of a name


def _prefixes(name: str) -> tuple[str, str]:
  """Prefixes of the folder a job writes and of the one the replaced target is moved to."""
  return f'.{name}.tmp-', f'.{name}.old-'


def _is_staging_name(entry: str, name: str) -> bool:
  """Whether `entry` is a staging folder of `name`, or of earlier versions' synthetic sets."""
  return bool(re.fullmatch(rf'\.{re.escape(name)}\.(?:(?:tmp|old)-{_RANDOM}|{_RANDOM}\.tmp)',
                           entry))


def _is_leftover(path: str) -> bool:
  """Whether a staging folder belongs to no running job."""
  try:
    # Read-write: an exclusive flock on NFS needs a file open for writing.
    fd = os.open(os.path.join(path, LOCK), os.O_RDWR)
  except FileNotFoundError:
    try:
      return time.time() - os.stat(path).st_mtime > UNLOCKED_LEFTOVER_AGE_S
    except FileNotFoundError:
      return False  # removed meanwhile
  except OSError:
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:  # held by a running job, or the file system has no locks: keep it
    return False
  finally:
    os.close(fd)
  return True


def remove_leftovers(target: str) -> list[str]:
  """Removes the staging folders of `target` left by jobs that are gone; returns them."""
  parent, name = os.path.split(os.path.abspath(target))
  try:
    entries = os.listdir(parent)
  except FileNotFoundError:
    return []
  removed = []
  for entry in sorted(entries):
    path = os.path.join(parent, entry)
    if (_is_staging_name(entry, name) and os.path.isdir(path)
        and not os.path.islink(path) and _is_leftover(path)):
      shutil.rmtree(path, ignore_errors=True)
      logging.info('removed %s, left by a job that was stopped', path)
      removed.append(path)
  return removed


def _lock(folder: str) -> int | None:
  """Locks a new lock file in folder; the lock lasts while the returned descriptor is open.

  The file is locked under another name and then renamed to LOCK, so that no other job
  finds it unlocked and takes the folder for a leftover.
  """
  path = os.path.join(folder, f'{LOCK}.{os.getpid()}')
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    os.remove(path)
    if e.errno not in NO_LOCKS:
      raise
    return None  # nothing tells a running job's folder from a leftover: kept as if running
  os.rename(path, os.path.join(folder, LOCK))
  return fd


def _move_aside(target: str) -> str | None:
  """Moves `target` into a new `.<name>.old-*` folder, which it returns; None if none."""
  parent, name = os.path.split(target)
  if not os.path.lexists(target):
    return None
  old = tempfile.mkdtemp(prefix=_prefixes(name)[1], dir=parent)
  try:
    os.rename(target, os.path.join(old, name))
  except FileNotFoundError:
    pass  # moved by another job meanwhile
  return old


def publish(staging: str, target: str) -> None:
  """Replaces `target` (a folder, or nothing) with the complete `staging` folder.

  When two jobs publish the same target at once, the last one's folder is kept.
  """
  target = os.path.abspath(target)
  lock = os.path.join(staging, LOCK)
  if os.path.exists(lock):
    os.remove(lock)  # the descriptor keeps the lock until the caller closes it
  # mkdtemp's 0o700 would hide a shared folder from other users; the umask decides.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(staging, 0o777 & ~umask)
  for attempt in range(3):
    old = _move_aside(target)
    try:
      os.rename(staging, target)
      return
    except OSError as e:
      # Another job put its folder in place after this one moved the target aside.
      if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 2:
        raise
    finally:
      if old:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged(target: str) -> Iterator[str]:
  """Yields a new staging folder that replaces `target` when the block ends normally.

  The folder holds only its lock file, which is removed before it replaces `target`.

  On an exception, or Ctrl-C, the staging folder is removed and `target` is left as it
  was. Leftovers of killed jobs beside `target` are removed first.
  """
  target = os.path.realpath(target)  # a link to a folder: the folder is replaced
  parent, name = os.path.split(target)
  os.makedirs(parent, exist_ok=True)
  remove_leftovers(target)
  staging = tempfile.mkdtemp(prefix=_prefixes(name)[0], dir=parent)
  fd = None
  try:
    fd = _lock(staging)
    yield staging
    publish(staging, target)
  finally:
    if fd is not None:
      os.close(fd)
    shutil.rmtree(staging, ignore_errors=True)

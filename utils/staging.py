"""Folders written beside their target and renamed into place when complete.

A folder of records, a synthetic dataset or a run's eval/ log is written to a hidden
staging folder `.<name>.tmp-*` beside it; only a complete one replaces the target, so a
failed or stopped job leaves the old folder (or none) and no half-written one.

A job killed outright (SIGKILL, a lost machine) cannot remove its staging folder. Each
staging folder therefore holds a lock file, locked while its job runs (the operating system
releases the lock when the process ends, however it ends) and naming the job's host; the
next job on the same host that stages into the same parent folder removes staging folders
whose lock is free and whose process is gone. A folder of another host is removed only when
a day old (a file system shared by several machines may lock for each machine alone; hosts
are told apart by their names). A job killed while replacing its target left the target
in a `.<name>.old-*` folder; the next job puts it back.
"""

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import string
import time
from typing import Iterator

from absl import logging

LOCK = '.staging.lock'
# A staging folder without a lock file is left by a job killed before it made its lock, or
# by a version of the project without locks. Its age tells it from one being made now.
UNLOCKED_LEFTOVER_AGE_S = 60.0
# A folder locked on another machine: its lock may not be seen from here.
OTHER_HOST_LEFTOVER_AGE_S = 24 * 3600.0
# The errors of flock on a file system without locks.
NO_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)
_RANDOM = '[a-z0-9_]{8}'  # the random part of a name (as tempfile.mkdtemp's)
_RANDOM_CHARS = string.ascii_lowercase + string.digits + '_'


def _prefixes(name: str) -> tuple[str, str]:
  """Prefixes of the folder a job writes and of the one the replaced target is moved to."""
  return f'.{name}.tmp-', f'.{name}.old-'


def _make_dir(prefix: str, parent: str) -> str:
  """Creates a new folder `parent/<prefix><8 random characters>` and returns its path.

  Unlike tempfile.mkdtemp (mode 0o700), the folder follows the umask, so a shared folder
  of records stays readable by others; the umask is not changed, not even for an instant.
  """
  for _ in range(100):
    path = os.path.join(parent, prefix + ''.join(secrets.choice(_RANDOM_CHARS)
                                                 for _ in range(8)))
    try:
      os.mkdir(path, 0o777)
      return path
    except FileExistsError:
      continue
  raise FileExistsError(errno.EEXIST, 'no unused staging folder name', parent)


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
    return _older_than(path, UNLOCKED_LEFTOVER_AGE_S)
  except OSError:
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    host, _, pid = os.read(fd, 256).decode(errors='replace').partition(' ')
  except OSError:  # held by a running job, or the file system has no locks: keep it
    return False
  finally:
    os.close(fd)
  if host and host != socket.gethostname():  # its lock may be invisible from this host
    return _older_than(path, OTHER_HOST_LEFTOVER_AGE_S)
  # A job that could not lock (no locks where it ran) is told by its process.
  return not (pid.isdigit() and _process_exists(int(pid)))


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # another user's process
    return True
  return True


def _older_than(path: str, seconds: float) -> bool:
  """Whether `path` was last changed over `seconds` ago (False if it is gone)."""
  try:
    return time.time() - os.stat(path).st_mtime > seconds
  except FileNotFoundError:
    return False  # removed meanwhile


def remove_leftovers(target: str) -> list[str]:
  """Removes the staging folders of `target` left by jobs that are gone; returns them.

  A job killed between moving `target` aside and putting its own folder in place left
  `target` inside its `.<name>.old-*` folder: that is put back, not removed.
  """
  target = os.path.abspath(target)
  parent, name = os.path.split(target)
  try:
    entries = os.listdir(parent)
  except FileNotFoundError:
    return []
  removed = []
  for entry in sorted(entries):
    path = os.path.join(parent, entry)
    if (_is_staging_name(entry, name) and os.path.isdir(path)
        and not os.path.islink(path) and _is_leftover(path)):
      if entry.startswith(_prefixes(name)[1]) and not os.path.lexists(target):
        _put_back(path, target)
        if os.path.lexists(path):
          continue  # could not be put back: kept, and said so
        if os.path.lexists(target):
          logging.warning('put %s back: a job was stopped while replacing it', target)
      shutil.rmtree(path, ignore_errors=True)
      logging.info('removed %s, left by a job that was stopped', path)
      removed.append(path)
  return removed


def _lock(folder: str) -> int | None:
  """Locks a new lock file in folder; the lock lasts while the returned descriptor is open.

  The file names this host and process. It is locked under another name and then renamed
  to LOCK, so that no other job finds it unlocked and takes the folder for a leftover. On
  a file system without locks the file is kept all the same (None is returned): no other
  job can lock it, so none takes the folder for a leftover.
  """
  path = os.path.join(folder, f'{LOCK}.{os.getpid()}')
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
  try:
    os.write(fd, f'{socket.gethostname()} {os.getpid()}'.encode())
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    if e.errno not in NO_LOCKS:
      os.remove(path)
      raise
    os.rename(path, os.path.join(folder, LOCK))
    logging.warning('%s: this file system has no locks (%s); a folder left there by a killed '
                    'job is not removed', os.path.dirname(folder), e.strerror)
    return None
  os.rename(path, os.path.join(folder, LOCK))
  return fd


def _move_aside(target: str) -> str | None:
  """Moves `target` into a new `.<name>.old-*` folder, which it returns; None if none."""
  parent, name = os.path.split(target)
  if not os.path.lexists(target):
    return None
  old = _make_dir(_prefixes(name)[1], parent)
  try:
    os.rename(target, os.path.join(old, name))
  except FileNotFoundError:
    pass  # moved by another job meanwhile
  return old


def _put_back(old: str, target: str) -> None:
  """Puts the folder moved aside into `old` back at `target`, unless another job put its
  own there meanwhile; then removes `old`."""
  moved = os.path.join(old, os.path.basename(target))
  if os.path.lexists(moved) and not os.path.lexists(target):
    try:
      os.rename(moved, target)
    except OSError as e:
      logging.warning('could not put %s back (%s); it is in %s', target, e.strerror, old)
      return  # kept in `old`: a later job puts it back once `old` is a leftover
  shutil.rmtree(old, ignore_errors=True)


def publish(staging: str, target: str) -> None:
  """Replaces `target` (a folder, or nothing) with the complete `staging` folder.

  When two jobs publish the same target at once, the last one's folder is kept. If the
  replacement fails or is interrupted, the previous `target` is put back.
  """
  target = os.path.abspath(target)
  lock = os.path.join(staging, LOCK)
  if os.path.exists(lock):
    os.remove(lock)  # the descriptor keeps the lock until the caller closes it
  for attempt in range(3):
    old = _move_aside(target)
    try:
      os.rename(staging, target)
    except BaseException as e:
      if old:
        _put_back(old, target)
      # Another job put its folder in place after this one moved the target aside.
      if (isinstance(e, OSError) and e.errno in (errno.ENOTEMPTY, errno.EEXIST)
          and attempt < 2):
        continue
      raise
    if old:
      shutil.rmtree(old, ignore_errors=True)
    return


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
  staging = _make_dir(_prefixes(name)[0], parent)
  fd = None
  try:
    fd = _lock(staging)
    yield staging
    publish(staging, target)
  finally:
    if fd is not None:
      os.close(fd)
    shutil.rmtree(staging, ignore_errors=True)

"""What the command-line entry points share: gin parsing and one-line user errors."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Callable, Iterator, Sequence

from absl import app
from absl import flags
from absl import logging

from utils import gin_utils


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Imports every configurable module, then parses gin (typos are errors)."""
  from evaluation import evaluator  # pylint: disable=g-import-not-at-top,unused-import
  import models  # pylint: disable=g-import-not-at-top,unused-import
  from input_pipeline import augment, tfrecords  # pylint: disable=g-import-not-at-top,unused-import
  from training import data, trainer  # pylint: disable=g-import-not-at-top,unused-import
  gin_utils.parse_gin(gin_files, gin_bindings)
  logging.info('gin configuration:\n%s', __import__('gin').config_str())


def check_folder_flag(flag: str, value: str | None) -> None:
  """Refuses an empty folder flag (`--run_dir=`), which would write into the current folder."""
  if value is not None and not value.strip():
    raise ValueError(f'{flag} is empty; name a folder')


def check_output_file(flag: str, path: str | None, extension: str) -> None:
  """Refuses an output flag that names a folder or a file of another kind (None: default)."""
  if path is None:
    return
  if os.path.isdir(path):
    raise ValueError(f'{flag}={path} is a folder; name a {extension} file in it')
  if os.path.splitext(path)[1].lower() != extension:
    raise ValueError(f'{flag} must name a {extension} file, got {path!r}')


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
  """Turns errors caused by the user's input into one line on stderr and exit code 1.

  The project's own (gin_utils.ConfigError, idrid.DataError, preprocessing.ImageError) are
  ValueErrors; OSError is a missing or unreadable file, a full disk, ...
  """
  try:
    yield
  except (OSError, ValueError, app.UsageError) as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    logging.debug('details', exc_info=True)  # --verbosity=1 shows the traceback
    print(f'error: {message}', file=sys.stderr)  # once: not also as a log line
    sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a flag it refuses (unknown, missing, not a number) as one
  `error:` line instead of its two (`FATAL Flags parsing error: ...` and a hint)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = ' '.join(str(e).split()) or type(e).__name__
    print(f'error: {message} (--helpshort lists the flags)', file=sys.stderr)
    sys.exit(1)


def _interrupt(signum: int, frame: Any) -> None:
  del frame
  raise KeyboardInterrupt(f'signal {signum}')


def run(main: Callable[[list[str]], Any]) -> None:
  """`app.run(main)` with the errors of `user_errors`, a bad flag (`app.UsageError`) and a
  flag absl refuses as one `error:` line and exit code 1, instead of a traceback or the
  whole --help. Ctrl-C and `kill` (SIGTERM, which would end the process without its
  clean-up) are one `interrupted:` line and exit code 130; every script keeps what it had
  finished, and a run or search resumes when the same command is run again."""
  def one_line_errors(argv: list[str]) -> Any:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
      with user_errors():
        return main(argv)
    except KeyboardInterrupt:
      logging.debug('details', exc_info=True)
      print('interrupted: run the same command again to resume', file=sys.stderr)
      sys.exit(130)
  app.run(one_line_errors, flags_parser=_parse_flags)

"""Gin helpers shared by the entry points.

Outside symbols (Keras optimizers, losses, schedules) are registered here, once, so gin
files can name them as `@Adam`, `@CosineDecay`, ... without importing `gin.tf`
(which does not import on TensorFlow >= 2.16).
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any, Callable, Sequence

import gin

_REGISTERED = False
# `name = value` with no configurable in front: gin takes it for a macro, used as %name.
_MACRO = re.compile(r'^[ \t]*([A-Za-z_]\w*)[ \t]*=', re.M)
_INCLUDE = re.compile(r'''^[ \t]*include[ \t]+['"]([^'"]+)['"]''', re.M)


class ConfigError(ValueError):
  """A gin file or binding could not be parsed; the message is one line."""


def configured_arguments(fn: Callable[..., Any]) -> dict[str, Any]:
  """The keyword arguments a call of configurable `fn` would get: defaults, then gin's."""
  values = {name: param.default for name, param in inspect.signature(fn).parameters.items()
            if param.default is not inspect.Parameter.empty}
  values.update(gin.get_bindings(fn))
  return values


def register_external_configurables() -> None:
  """Makes Keras optimizers, losses and learning-rate schedules known to gin."""
  global _REGISTERED
  if _REGISTERED:
    return
  import keras  # pylint: disable=g-import-not-at-top  (light modules use the rest)
  for cls in (keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.SGD,
              keras.optimizers.RMSprop):
    gin.external_configurable(cls, module='keras.optimizers')
  for cls in (keras.optimizers.schedules.CosineDecay,
              keras.optimizers.schedules.ExponentialDecay,
              keras.optimizers.schedules.PiecewiseConstantDecay):
    gin.external_configurable(cls, module='keras.optimizers.schedules')
  for cls in (keras.losses.SparseCategoricalCrossentropy,
              keras.losses.CategoricalCrossentropy):
    gin.external_configurable(cls, module='keras.losses')
  _REGISTERED = True


def parse_gin(gin_files: Sequence[str] | None,
              gin_bindings: Sequence[str] | None,
              finalize: bool = True) -> None:
  """Parses gin files and bindings; unknown names are errors, never ignored.

  Args:
    gin_files: Paths of gin files, applied in order.
    gin_bindings: Bindings such as `'train.epochs = 3'`, applied after the files.
    finalize: Lock the config after parsing.

  Raises:
    ConfigError: With a one-line message naming the file or binding at fault.
  """
  register_external_configurables()
  gin_files = list(gin_files or [])
  for path in gin_files:
    if not os.path.isfile(path):
      raise ConfigError(f'gin file not found: {path}')
  try:
    gin.parse_config_files_and_bindings(
        gin_files, list(gin_bindings or []), skip_unknown=False,
        finalize_config=finalize)
  except Exception as e:  # gin raises several types; all become one line.
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f'gin configuration error: {first_line}') from e
  _check_macros_used(gin_files, list(gin_bindings or []))


def _check_macros_used(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Refuses a macro that nothing uses: `epochs = 1` for `train.epochs = 1` would
  otherwise be accepted and change nothing."""
  sources = [(f'gin binding {b!r}', b) for b in gin_bindings]
  pending, seen = list(gin_files), set()
  while pending:  # the files and the files they include
    path = pending.pop()
    if path in seen or not os.path.isfile(path):
      continue
    seen.add(path)
    with open(path) as f:
      text = f.read()
    sources.append((path, text))
    pending += [p if os.path.isfile(p) else os.path.join(os.path.dirname(path), p)
                for p in _INCLUDE.findall(text)]
  # Triple-quoted strings hold text, not bindings.
  sources = [(where, re.sub(r'("""|\'\'\')(.*?)\1', '', text, flags=re.S))
             for where, text in sources]
  everything = '\n'.join(text for _, text in sources)
  for where, text in sources:
    for name in _MACRO.findall(text):
      if not re.search(rf'%\s*{name}\b', everything):
        raise ConfigError(f'{where}: {name!r} names no configurable (gin takes it for a macro '
                          f'that nothing uses); write configurable.{name}, e.g. train.epochs')

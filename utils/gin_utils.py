"""Gin helpers shared by the entry points.

Outside symbols (Keras optimizers, losses, schedules) are registered here, once, so gin
files can name them as `@Adam`, `@CosineDecay`, ... without importing `gin.tf`
(which does not import on TensorFlow >= 2.16).
"""

from __future__ import annotations

import os
from typing import Sequence

import gin
import keras

_REGISTERED = False


class ConfigError(ValueError):
  """A gin file or binding could not be parsed; the message is one line."""


def register_external_configurables() -> None:
  """Makes Keras optimizers, losses and learning-rate schedules known to gin."""
  global _REGISTERED
  if _REGISTERED:
    return
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

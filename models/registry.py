"""Model registry: architectures are looked up by name, never through if/elif chains.

A builder is any function `builder(input_shape, num_classes) -> keras.Model` (further keyword
arguments come from gin). Register it once, at import time of its module:

  @register('my_net')
  @gin.configurable(module='my_net', denylist=['input_shape', 'num_classes'])
  def build_my_net(input_shape, num_classes, width: int = 32) -> keras.Model:
    ...

and choose it in a gin file with `models.build_model.name = 'my_net'`. The module must be
imported for its builder to be registered: add it to the imports of `models/__init__.py`,
or put `import models.my_net` at the top of the gin file. Without that, gin reports
"No configurable matching 'my_net.build_my_net'" or `build_model` lists the models it knows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import gin
import keras

from utils import gin_utils

_MODELS: dict[str, Callable[..., keras.Model]] = {}
_CHECKS: dict[str, Callable[[], None]] = {}


def register(name: str, check: Callable[[], None] | None = None
             ) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
  """Returns a decorator that registers a model builder under `name`.

  Args:
    name: The key `build_model(name=...)` will find the builder under.
    check: Optional; checks the builder's gin parameters without building the model
      (`check_config` calls it before training writes anything) and raises ValueError
      naming a bad one.

  Returns:
    A decorator that records the builder and returns it unchanged.

  Raises:
    ValueError: If another builder is already registered under `name`.
  """

  def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    if name in _MODELS and _MODELS[name] is not builder:
      raise ValueError(f'a model builder is already registered as {name!r}')
    _MODELS[name] = builder
    if check is not None:
      _CHECKS[name] = check
    return builder

  return decorator


def available() -> list[str]:
  """Returns the registered model names, sorted."""
  return sorted(_MODELS)


@gin.configurable(module='models')
def build_model(name: str = 'resnet_v2',
                input_shape: Sequence[int] = (256, 256, 3),
                num_classes: int = 2) -> keras.Model:
  """Builds the registered model `name`.

  Args:
    name: A registered model name, see `available()`.
    input_shape: (height, width, channels) of one input image.
    num_classes: Number of output classes (2 for NRDR/RDR, 5 for the grades).

  Returns:
    An uncompiled `keras.Model` whose output is the softmax over the classes.

  Raises:
    ValueError: If `name` is not registered; the message lists the registered names.
  """
  _check_name(name)
  return _MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes)


def _check_name(name: str) -> None:
  if name not in available():  # a list: an unhashable value is refused, not a TypeError
    raise ValueError(
        f'unknown model {name!r}; available models: {", ".join(available()) or "(none)"}')


def check_config() -> None:
  """Checks the configured model's name and, where its builder has one, its parameters.

  Raises:
    ValueError: The name is not registered, or its check refuses a parameter.
  """
  name = gin_utils.configured_arguments(build_model)['name']
  _check_name(name)
  if name in _CHECKS:
    _CHECKS[name]()

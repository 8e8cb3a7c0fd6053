"""Attribution methods, looked up by name through a registry.

A method is any function `fn(model, images, class_index=None, **options) -> heatmaps`
returning float32 heatmaps in [0, 1] of shape (batch, height, width) at the images' size.
Register it once, at import time of its module:

  @register('my_method')
  def my_method(model, images, class_index=None, steps: int = 8) -> np.ndarray:
    ...

and call it with `attribute('my_method', model, images)`. Importing the `visualization`
package imports every method module, so all built-in methods are registered.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

AttributionFn = Callable[..., np.ndarray]

_METHODS: dict[str, AttributionFn] = {}


def register(name: str) -> Callable[[AttributionFn], AttributionFn]:
  """Returns a decorator that registers an attribution method under `name`.

  Raises:
    ValueError: If another function is already registered under `name`.
  """

  def decorator(fn: AttributionFn) -> AttributionFn:
    if name in _METHODS and _METHODS[name] is not fn:
      raise ValueError(f'an attribution method is already registered as {name!r}')
    _METHODS[name] = fn
    return fn

  return decorator


def available() -> list[str]:
  """Names of the registered attribution methods, sorted."""
  return sorted(_METHODS)


def get(method: str) -> AttributionFn:
  """The function registered as `method`.

  Raises:
    ValueError: Unknown method; the message lists the registered ones.
  """
  if not isinstance(method, str) or method not in _METHODS:
    raise ValueError(f'unknown attribution method {method!r}; available methods: '
                     f'{", ".join(available()) or "(none)"}')
  return _METHODS[method]


def check_class_index(class_index: int | None, class_names: list[str]) -> None:
  """Raises ValueError unless class_index is None (a default class) or names a class."""
  if class_index is not None and not 0 <= class_index < len(class_names):
    raise ValueError(f'class_index {class_index} out of range for classes {class_names}')


def attribute(method: str, model: keras.Model, images: Any,
              class_index: int | np.ndarray | None = None, **options: Any) -> np.ndarray:
  """Heatmaps of `images` by the registered attribution `method`.

  Args:
    method: A registered name, see `available()`.
    model: The classifier to explain.
    images: float32 images in [0, 1], shape (batch, height, width, 3) or one image
      (height, width, 3).
    class_index: Class to explain: None for the predicted class of each image, an int
      for all images, or one int per image.
    **options: Keyword options of the method (e.g. `steps` of integrated gradients).

  Returns:
    float32 heatmaps in [0, 1] of shape (batch, height, width).

  Raises:
    ValueError: Unknown method, bad class index or bad images.
  """
  return get(method)(model, images, class_index=class_index, **options)

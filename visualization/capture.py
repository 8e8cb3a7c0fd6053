"""Gradient models: a classifier re-wired to also return an inner layer's output.

Grad-CAM needs d(score)/d(feature map). Reading `model.get_layer(name).output` only works
when that layer lives in the model's own graph; when the classifier nests a backbone
(`keras.Sequential([resnet, ...])`, or a functional wrapper that calls a sub-model), the
inner tensor belongs to the backbone's graph and `keras.Model(model.inputs, inner_tensor)`
fails with "graph disconnected". `capture_model` avoids the trap by calling every layer
again, nested sub-models flattened into one graph, on a fresh input:

    x = keras.Input(...)  --call each layer, recursing into sub-models-->  outputs
                           ^ outputs of the named layers are recorded on the way

The layers (and so the weights) are shared with the original model, never copied.
`layer_override` swaps a layer for another callable as the graph is rebuilt (guided
backpropagation replaces the ReLUs that way).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import keras
from keras import tree

import models

LOGITS_LAYER = 'logits'

LayerOverride = Callable[[keras.layers.Layer], Callable[..., Any] | None]


def iter_layers(model: keras.Model):
  """Every layer of `model`, nested sub-models' layers included (depth first)."""
  for layer in model.layers:
    yield layer
    if isinstance(layer, keras.Model):
      yield from iter_layers(layer)


def has_layer(model: keras.Model, name: str) -> bool:
  """Whether `model` or one of its nested sub-models holds a layer called `name`."""
  return any(layer.name == name for layer in iter_layers(model))


def default_layer(model: keras.Model) -> str:
  """The layer Grad-CAM explains: `models.LAST_CONV_LAYER` wherever it is nested,
  else `models.find_last_conv_layer(model)`."""
  if has_layer(model, models.LAST_CONV_LAYER):
    return models.LAST_CONV_LAYER
  return models.find_last_conv_layer(model)


@dataclasses.dataclass
class _Trace:
  """What re-calling the layers recorded: named outputs, last layer with weights."""
  outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
  last_weighted: str | None = None


def _is_graph_model(layer: keras.layers.Layer) -> bool:
  """Whether `layer` is a sequential or functional model, whose layers can be re-called."""
  return isinstance(layer, keras.Sequential) or any(
      cls.__name__ == 'Functional' for cls in type(layer).__mro__)


def _call(model: keras.Model, inputs: Any, names: frozenset[str], trace: _Trace,
          override: LayerOverride | None) -> Any:
  """Calls the layers of `model` on symbolic `inputs`, recording the named outputs."""

  def call_layer(layer, *args, **kwargs):
    replacement = override(layer) if override is not None else None
    if replacement is not None:
      outputs = replacement(*args, **kwargs)
    elif _is_graph_model(layer):
      sub_inputs = args[0] if args else kwargs['inputs']
      outputs = _call(layer, sub_inputs, names, trace, override)
    else:
      outputs = layer(*args, **kwargs)
      if layer.weights:
        trace.last_weighted = layer.name
    if layer.name in names:
      trace.outputs[layer.name] = outputs
    return outputs

  if isinstance(model, keras.Sequential):
    x = inputs
    for layer in model.layers:
      x = call_layer(layer, x)
    return x
  if not _is_graph_model(model):
    raise ValueError(f'model {model.name!r} is not a functional or sequential Keras model')
  inputs = tree.pack_sequence_as(model.input, tree.flatten(inputs))
  clone = keras.models.clone_model(model, input_tensors=inputs,
                                   clone_function=lambda layer: layer,
                                   call_function=call_layer)
  return clone.output


def capture_model(model: keras.Model, layer_names: Sequence[str],
                  layer_override: LayerOverride | None = None) -> keras.Model:
  """A model with the same weights returning [score, *outputs of `layer_names`].

  Args:
    model: A functional or sequential classifier, possibly nesting sub-models.
    layer_names: Layers whose outputs to return; each may sit at any depth.
    layer_override: Optional `fn(layer) -> callable or None`; a callable returned for a
      layer is called in its place.

  Returns:
    A functional model mapping the images to a list: first the target score, then the
    requested layer outputs, in order. The score is the output of the layer 'logits'
    (pre-softmax) when the model has one and no layer with weights follows it (a head
    stacked on a nested classifier makes the model output the score again); else the
    model output.

  Raises:
    ValueError: A name in `layer_names` is not a layer of `model` or cannot be reached
      (inside a subclassed sub-model), or the model is not functional or sequential.
  """
  for name in layer_names:
    if not has_layer(model, name):
      raise ValueError(f'model {model.name!r} has no layer {name!r}')
  wanted = frozenset(layer_names) | {LOGITS_LAYER}
  reference = model.inputs[0]
  inputs = keras.Input(batch_shape=reference.shape, dtype=reference.dtype)
  trace = _Trace()
  output = _call(model, inputs, wanted, trace, layer_override)
  captured = trace.outputs
  missing = [n for n in layer_names if n not in captured]
  if missing:
    raise ValueError(f'layers {missing} of model {model.name!r} cannot be reached '
                     '(nested inside a subclassed model?)')
  use_logits = trace.last_weighted == LOGITS_LAYER and LOGITS_LAYER in captured
  score = captured[LOGITS_LAYER] if use_logits else output
  return keras.Model(inputs, [score] + [captured[n] for n in layer_names],
                     name=f'{model.name}_capture')


def run(gradient_model: keras.Model, images: Any) -> list[Any]:
  """Calls a `capture_model` in inference mode; always returns [score, *captured]."""
  outputs = gradient_model(images, training=False)
  return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

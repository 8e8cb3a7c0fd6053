"""Starting a run from the weights of an earlier one (`train.init_weights`).

`train.init_weights` names a run folder of this framework (its `checkpoints/best.keras` is
used) or a Keras model file (`.keras`) on disk; nothing is downloaded. `{seed}` in it is
replaced by the run's seed, so a sweep over seeds starts each seed from its own source:

  train.init_weights = 'runs/idrid_binary/seed_{seed}'

Weights are copied layer by layer, by name, batch-normalisation statistics included; the
optimizer starts afresh. The classification head (the last layer with weights) keeps its
fresh initialisation where its shape differs, e.g. a binary run started from a five-grade
one. Any other layer that is missing or has other shapes means another architecture, which
is an error. The input size may differ: the network is convolutional up to a global pool.

Leakage: a source that trained on photographs this run validates on, or that saw (trained
or validated on) photographs this run tests on, would carry them into this run's scores.
When the source is a run whose records are still on disk, photographs are compared by the
SHA-256 of their files and any overlap is an error; otherwise a warning says that the check
could not be made.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import keras

import models
from input_pipeline import datasets
from input_pipeline import integrity
from input_pipeline import tfrecords
from training import run_dir as rd

PARAMETER = 'train.init_weights'


def resolve(spec: str, seed: int) -> tuple[str, str | None]:
  """(model file, run folder or None) that `train.init_weights = spec` names for `seed`.

  Raises:
    ValueError: If neither a run folder with a checkpoint nor a `.keras` file is there.
  """
  path = spec.replace('{seed}', str(seed))
  if os.path.isdir(path):
    model_file, run = os.path.join(path, rd.BEST_MODEL), path
    if not os.path.isfile(model_file):
      raise ValueError(f'{PARAMETER}: {path} is a folder without {rd.BEST_MODEL}; '
                       'name a trained run or a .keras file')
  elif not os.path.isfile(path):
    raise ValueError(f'{PARAMETER}: no such run folder or file {path}')
  elif not path.endswith('.keras'):
    raise ValueError(f'{PARAMETER}: {path} is not a Keras model file (.keras)')
  else:  # a run's checkpoint named directly still counts as that run
    model_file, run = path, os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if os.path.abspath(path) != os.path.abspath(os.path.join(run, rd.BEST_MODEL)):
      run = None
  is_run = run is not None and os.path.isfile(os.path.join(run, rd.RUN_INFO))
  return model_file, run if is_run else None


def _weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
  return {layer.name: layer for layer in model.layers if layer.weights}


def load_into(model: keras.Model, model_file: str) -> list[str]:
  """Copies the weights of the model in `model_file` into `model`, layer by layer.

  Returns:
    Names of the layers left as initialised (the head, where its shape differs).

  Raises:
    ValueError: If the file is not a readable Keras model, or its layers do not match
      `model`'s apart from the head; nothing is changed then.
  """
  try:
    source = models.load_model_file(model_file)
  except (OSError, ValueError) as e:
    raise ValueError(f'{PARAMETER}: {e}') from e
  target_layers, source_layers = _weighted_layers(model), _weighted_layers(source)
  # The head is the last layer with weights, if it is a plain layer (not a nested model).
  last = list(target_layers)[-1]
  head = None if isinstance(target_layers[last], keras.Model) else last
  fits, fresh, mismatched = [], [], []
  for name, layer in target_layers.items():
    other = source_layers.get(name)
    same = other is not None and [w.shape for w in layer.weights] == [
        w.shape for w in other.weights]
    if same:
      fits.append(name)
    elif name == head and other is not None:
      fresh.append(name)
    else:
      mismatched.append(name)
  mismatched += sorted(set(source_layers) - set(target_layers))
  if mismatched or not fits:
    shown = ', '.join(mismatched[:4]) + (f' and {len(mismatched) - 4} more'
                                         if len(mismatched) > 4 else '')
    raise ValueError(f'{PARAMETER}: {model_file} holds another architecture (layers missing '
                     f'or of other shapes: {shown})')
  for name in fits:
    target_layers[name].set_weights(source_layers[name].get_weights())
  return fresh


def _hashes(records_dir: str, *splits: str) -> set[str]:
  """SHA-256 of the photographs of the given splits of some records."""
  return set().union(*(datasets.split_hashes(records_dir, s) for s in splits))


def _source_records(source_run: str, records_dir: str) -> tuple[str | None, str]:
  """(the source run's records, or None with the reason they cannot be compared)."""
  info_path = os.path.join(source_run, rd.RUN_INFO)
  try:
    info = rd.read_json(info_path)
  except (OSError, ValueError) as e:
    raise ValueError(f'{PARAMETER}: cannot read {info_path} ({type(e).__name__})') from e
  if info.get('init_weights'):
    logging.warning('%s: %s was itself started from %s, which is not checked here',
                    PARAMETER, source_run, info['init_weights'].get('file'))
  theirs = info.get('records_dir') or ''
  try:
    manifest = tfrecords.read_manifest(theirs)
  except (OSError, ValueError):
    return None, f'its records {theirs or "(none named)"} are gone'
  if (manifest.get('fingerprint') != info.get('records_fingerprint')
      or not tfrecords.shards_present(theirs, manifest)):
    return None, f'its records {theirs} have changed since'
  ours = tfrecords.read_manifest(records_dir).get('data_dir')
  if os.path.realpath(manifest.get('data_dir') or '') != os.path.realpath(ours or ''):
    # Copies of a photograph at other sizes have other hashes: nothing would match.
    return None, f'it was trained on another data folder ({manifest.get("data_dir")})'
  return theirs, ''


def check_no_leak(source_run: str | None, model_file: str, records_dir: str) -> bool:
  """Raises ValueError if the source saw photographs this run validates or tests on.

  Photographs are compared by the SHA-256 of their files, so the check needs the source's
  run folder, its records, and the same data folder as this run.

  Args:
    source_run: The source's run folder, or None for a bare model file.
    model_file: The source model file (named in messages).
    records_dir: This run's records.

  Returns:
    Whether the check could be made; when not, a warning says why.
  """
  records, reason = (_source_records(source_run, records_dir) if source_run is not None
                     else (None, 'it is not a run folder of this framework'))
  if records is None:
    logging.warning('%s: cannot check which photographs %s saw (%s); make sure it saw none '
                    'of this run\'s validation or test photographs', PARAMETER, model_file,
                    reason)
    return False
  trained = _hashes(records, 'train')
  for seen, split, verb in ((trained, 'val', 'validates'),
                            (trained | _hashes(records, 'val'), 'test', 'tests')):
    overlap = seen & _hashes(records_dir, split)
    if overlap:
      raise ValueError(f'{PARAMETER}: {source_run} saw {len(overlap)} of the photographs this '
                       f'run {verb} on; start from a run whose training and validation '
                       f'photographs exclude them')
  return True


def initialise(model: keras.Model, spec: str, seed: int, records_dir: str) -> dict[str, Any]:
  """Loads `train.init_weights` into `model` after the leakage check; returns a summary."""
  model_file, source_run = resolve(spec, seed)
  checked = check_no_leak(source_run, model_file, records_dir)
  fresh = load_into(model, model_file)
  loaded = len(_weighted_layers(model)) - len(fresh)
  logging.info('%s: %d layers from %s%s', PARAMETER, loaded, model_file,
               f'; kept as initialised: {", ".join(fresh)}' if fresh else '')
  return dict(file=os.path.abspath(model_file), sha256=integrity.file_hash(model_file),
              fresh_layers=fresh, leakage_checked=checked)

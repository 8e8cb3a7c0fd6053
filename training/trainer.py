"""Training loop: Keras `fit` with TensorBoard, best checkpoint and resume."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from typing import Any

from absl import logging
import gin
import keras
import tensorflow as tf

import models
from input_pipeline import augment as augment_lib
from input_pipeline import datasets
from input_pipeline import tfrecords
from training import callbacks as cb
from training import data
from training import initial_weights
from training import metrics as metrics_lib
from training import run_dir as rd
from utils import checks
from utils import gin_utils

# Configurables whose bindings do not change what is trained: a run may be resumed or
# evaluated with other values for them (a grid that gained values, another threshold rule).
_NOT_TRAINING = ('evaluate', 'grid_search')

OPTIMIZERS = {'adam': keras.optimizers.Adam, 'adamw': keras.optimizers.AdamW,
              'sgd': functools.partial(keras.optimizers.SGD, momentum=0.9, nesterov=True)}
SCHEDULES = ('cosine', 'constant')


def check_optimizer(name: str, learning_rate: float, schedule: str,
                    ema_momentum: float | None) -> None:
  """Raises ValueError naming the train.* parameter of an unusable optimizer setting."""
  checks.check_choice('train.optimizer', name, sorted(OPTIMIZERS))
  checks.check_number('train.learning_rate', learning_rate, low=0)
  checks.check_choice('train.schedule', schedule, SCHEDULES)
  checks.check_number('train.ema_momentum', ema_momentum, low=0, high=1, low_open=True,
                      high_open=True, none_ok=True)


def make_optimizer(name: str, learning_rate: float, schedule: str, total_steps: int,
                   warmup_steps: int, ema_momentum: float | None = None
                   ) -> keras.optimizers.Optimizer:
  """Optimizer by name with a constant or cosine learning rate.

  With `ema_momentum`, the optimizer also keeps an exponential moving average of the
  weights (Keras' `use_ema`), which `callbacks.SwapEMAWeights` validates and saves.
  """
  check_optimizer(name, learning_rate, schedule, ema_momentum)
  if schedule == 'cosine':
    lr = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate, decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
  else:
    lr = learning_rate
  ema = dict(use_ema=True, ema_momentum=ema_momentum) if ema_momentum is not None else {}
  return OPTIMIZERS[name](learning_rate=lr, **ema)


def training_config_str() -> str:
  """gin's config string less the sections of `_NOT_TRAINING` configurables."""
  sections = re.split(r'\n(?=# Parameters for )', gin.config_str())
  skip = re.compile(r'# Parameters for (?:%s):' % '|'.join(_NOT_TRAINING))
  return '\n'.join(s for s in sections if not skip.match(s))


class _SaveOperativeConfig(keras.callbacks.Callback):
  """Writes gin's operative config once training has started, and again at the end."""

  def __init__(self, path: str):
    super().__init__()
    self.path = path

  def _write(self):
    rd.write_text(self.path, gin.operative_config_str())

  def on_train_begin(self, logs=None):
    self._write()

  def on_train_end(self, logs=None):
    self._write()


# Metric names a run may log, whatever its classes (`metrics.training_metrics`); which of
# them a run logs is known once its records are: train() checks train.monitor again then.
_MONITORABLE = ('loss', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'auc',
                'referable_auc')


def _check_args(*, epochs, batch_size, learning_rate, schedule, warmup_epochs, optimizer,
                label_smoothing, mixup, ema_momentum, init_weights, oversample,
                oversample_by, monitor, monitor_mode, seed, **unchecked) -> None:
  """The checks of `train`'s arguments that need no data, then the model's, the
  augmentation's and the records' parameters: all before the records (minutes of
  preprocessing on IDRiD) or the run folder are written."""
  del unchecked  # flags, or read only once the data is known (deterministic, jit_compile)
  for name, value, least in (('epochs', epochs, 1), ('batch_size', batch_size, 1),
                             ('warmup_epochs', warmup_epochs, 0)):
    checks.check_number(f'train.{name}', value, low=least, whole=True)
  checks.check_number('train.seed', seed, low=0, high=2**32 - 1, whole=True)
  check_optimizer(optimizer, learning_rate, schedule, ema_momentum)
  checks.check_number('train.label_smoothing', label_smoothing, low=0, high=1, high_open=True)
  checks.check_number('train.mixup', mixup, low=0, note='0 is off')
  checks.check_number('train.oversample', oversample, low=0, high=1, none_ok=True,
                      note='1 balanced, 0 natural mix')
  datasets.check_oversample_by(oversample_by, 'train.oversample_by')
  if not isinstance(monitor, str) or monitor.removeprefix('val_') not in _MONITORABLE:
    raise ValueError(f'train.monitor = {monitor!r} is not a logged metric; choose one of '
                     f"{list(_MONITORABLE)}, or one of them with the prefix 'val_'")
  if monitor_mode:  # None (or empty): from the monitored metric
    checks.check_choice('train.monitor_mode', monitor_mode, ('min', 'max'))
  if init_weights is not None and not isinstance(init_weights, str):
    raise ValueError(f'train.init_weights must be a run folder or .keras file (or None), '
                     f'got {init_weights!r}')
  models.check_config()
  augment_lib.Augmentation()
  data.check_config()


def check_config() -> None:
  """Checks what train.py would check before writing anything, from gin's bindings, so
  that tune.py can refuse a trial's values before building its records.

  Raises:
    ValueError: One line naming the gin parameter at fault.
  """
  _check_args(**gin_utils.configured_arguments(train))


@gin.configurable(module='train', denylist=['run_dir', 'data_dir'])
def train(run_dir: str,
          data_dir: str | None = None,
          # Schedule.
          epochs: int = 30,                  # passes over the oversampled training set
          batch_size: int = 16,              # photographs per step
          learning_rate: float = 1e-3,       # peak learning rate
          schedule: str = 'cosine',          # 'cosine' or 'constant'
          warmup_epochs: int = 0,            # linear warm-up, epochs
          optimizer: str = 'adam',           # key of OPTIMIZERS
          label_smoothing: float = 0.0,
          mixup: float = 0.0,                # Beta parameter of mixup (e.g. 0.2); 0 off
          ema_momentum: float | None = None,  # e.g. 0.99: validate/save averaged weights
          # Start: None (random) or a run folder / .keras file; '{seed}' -> the seed.
          init_weights: str | None = None,
          # Data.
          oversample: float | None = 1.0,    # 1.0 balanced, None natural mix
          oversample_by: str = 'class',      # balance classes, or 'grade': DR grades
          augment: bool = True,
          # Selection and reproducibility.
          monitor: str = 'val_balanced_accuracy',
          monitor_mode: str | None = None,   # 'max'/'min'; None: 'min' for losses
          seed: int = 0,
          deterministic: bool = False,       # bit-for-bit repeatable ops (slower)
          jit_compile: bool | str = 'auto') -> dict[str, Any]:
  """Trains a model into `run_dir`; resumes an interrupted run; skips a finished one.

  Returns:
    A summary: best monitored value and epoch, epochs run, seconds.
  """
  _check_args(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
              schedule=schedule, warmup_epochs=warmup_epochs, optimizer=optimizer,
              label_smoothing=label_smoothing, mixup=mixup, ema_momentum=ema_momentum,
              init_weights=init_weights, oversample=oversample, oversample_by=oversample_by,
              monitor=monitor, monitor_mode=monitor_mode, seed=seed)
  if warmup_epochs and schedule == 'constant':
    logging.warning('train.warmup_epochs = %d has no effect with the constant schedule',
                    warmup_epochs)
  info_path = os.path.join(run_dir, rd.RUN_INFO)
  config_hash = hashlib.sha256(training_config_str().encode()).hexdigest()[:16]
  previous = rd.read_json(info_path) if os.path.isfile(info_path) else {}
  if previous and previous.get('config_hash') != config_hash:
    raise ValueError(f'{run_dir} holds a run with another configuration (run.json); '
                     'use a new --run_dir')
  keras.utils.set_random_seed(seed)
  if deterministic:
    tf.config.experimental.enable_op_determinism()
  # The records first (a cache hit takes seconds): a finished run on other data is refused
  # as an unfinished one is, not reported complete.
  data_dir, records_dir = data.prepare_records(data_dir)
  manifest = tfrecords.read_manifest(records_dir)
  if previous and previous.get('records_fingerprint') != manifest['fingerprint']:
    raise ValueError(f'{run_dir} holds a run on other records (data_dir '
                     f'{previous.get("data_dir")}); resume it with that --data_dir, or use a '
                     'new --run_dir')
  if previous.get('status') == 'completed':
    logging.info('run %s already completed %d epochs: nothing to train', run_dir, epochs)
    shutil.rmtree(os.path.join(run_dir, rd.BACKUP_DIR), ignore_errors=True)  # if stopped
    return previous
  class_names = manifest['class_names']
  size = manifest['params']['image_size']
  has_val = manifest['counts']['val']['total'] > 0
  if not has_val and monitor.startswith('val_'):
    monitor = monitor[len('val_'):]
    logging.warning('no validation split: selecting the checkpoint on %s', monitor)

  _warn_missing_val_classes(manifest, monitor)

  if mixup and not has_val:
    logging.warning('no validation split: %s is measured on mixup-blended training batches, '
                    'each counted as its most probable class', monitor)
  if ema_momentum is not None and not has_val:
    logging.warning('no validation split: %s comes from the raw weights, the checkpoint '
                    'holds their moving average', monitor)
  model = models.build_model(input_shape=(size, size, 3), num_classes=len(class_names))
  # A resumed run gets its weights back from the backup; only a new one is initialised.
  resumed_at = _backup_epoch(os.path.join(run_dir, rd.BACKUP_DIR))
  init_info = previous.get('init_weights')
  if init_weights and not resumed_at:
    init_info = initial_weights.initialise(model, init_weights, seed, records_dir)
  metrics = metrics_lib.training_metrics(len(class_names))
  logged = ['loss'] + [m.name for m in metrics]
  logged += [f'val_{k}' for k in logged] if has_val else []
  if monitor not in logged:
    raise ValueError(f'train.monitor = {monitor!r} is not logged; choose one of {logged}')
  monitor_mode = monitor_mode or ('min' if monitor.endswith('loss') else 'max')
  steps = datasets.steps_per_epoch(manifest, batch_size, oversample, oversample_by)
  model.compile(
      optimizer=make_optimizer(optimizer, learning_rate, schedule, epochs * steps,
                               warmup_epochs * steps, ema_momentum),
      loss=keras.losses.SparseCategoricalCrossentropy()
      if not (label_smoothing or mixup) else _soft_label_loss(len(class_names), label_smoothing),
      metrics=metrics, jit_compile=jit_compile)
  logging.info('model %s: %d parameters; %d steps of %d per epoch, %d epochs',
               model.name, model.count_params(), steps, batch_size, epochs)

  # A resumed run draws a new data order and new augmentations for its remaining
  # epochs (replaying epoch 1's would repeat them); it is not bit-identical to an
  # uninterrupted run.
  data_seed = seed + 7919 * resumed_at
  train_ds = datasets.make_dataset(records_dir, 'train', batch_size=batch_size,
                                   oversample=oversample, augment=augment, seed=data_seed,
                                   mixup=mixup, oversample_by=oversample_by)
  val_ds = datasets.make_dataset(records_dir, 'val', batch_size=batch_size) if has_val else None
  os.makedirs(run_dir, exist_ok=True)  # only once data and model are known to be usable
  # Held to the end: a second train.py on this folder is refused, not mixed in.
  with rd.training_lock(run_dir):
    # Another train.py may have trained this folder while this one built data and model.
    now = rd.read_json(info_path) if os.path.isfile(info_path) else {}
    if (now.get('status'), _backup_epoch(os.path.join(run_dir, rd.BACKUP_DIR))) != (
        previous.get('status'), resumed_at):
      if now.get('status') == 'completed' and now.get('config_hash') == config_hash:
        logging.info('run %s was completed by another process meanwhile', run_dir)
        return now
      raise ValueError(f'{run_dir} was changed by another process meanwhile; run the same '
                       'command again')
    if resumed_at:
      logging.info('resuming %s after epoch %d', run_dir, resumed_at)
    elif previous:  # stopped before its first epoch was backed up: it starts again
      logging.info('%s was stopped before its first epoch was saved: training from the start',
                   run_dir)
      for leftover in (rd.BEST_MODEL, rd.BEST_INFO):  # of the attempt that is not continued
        if os.path.isfile(os.path.join(run_dir, leftover)):
          os.remove(os.path.join(run_dir, leftover))
    _drop_history_after(run_dir, resumed_at)
    # An evaluation of the unfinished run (evaluate.py warns about it) is out of date once
    # training goes on: removed, so that neither tune.py nor explain takes it for the run's.
    _remove_evaluation(run_dir, 'before it finished; evaluate it again when training ends')

    info = dict(status='running', config_hash=config_hash,
                records_fingerprint=manifest['fingerprint'], data_dir=os.path.abspath(data_dir),
                records_dir=os.path.abspath(records_dir), class_names=class_names,
                image_size=size, epochs=epochs, seed=seed, monitor=monitor,
                train_seconds=previous.get('train_seconds', 0.0))
    if init_info:
      info['init_weights'] = init_info
    rd.write_json(info_path, info)
    rd.write_text(os.path.join(run_dir, rd.CONFIG), gin.config_str())
    os.makedirs(os.path.join(run_dir, rd.CHECKPOINT_DIR), exist_ok=True)
    start = time.time()

    def seconds_so_far() -> float:  # this run's earlier parts included
      return round(info['train_seconds'] + time.time() - start, 1)

    # BackupAndRestore comes last, so an epoch is marked done only after its checkpoint,
    # best value and history row are written.
    # With weight averaging, the averaged weights are swapped in at the end of each epoch
    # (after validation has been run on them), so the callbacks below see and save them.
    callbacks = [cb.SwapEMAWeights(resumed=resumed_at > 0)] if ema_momentum is not None else []
    callbacks += [
        cb.BestCheckpoint(run_dir, monitor, monitor_mode),
        # Training time so far, in run.json after every epoch: a run that is stopped and
        # resumed reports the time of all its epochs, not only those after the resume.
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rd.write_json(
            info_path, dict(info, train_seconds=seconds_so_far()))),
        keras.callbacks.TensorBoard(run_dir, write_graph=False, profile_batch=0),
        keras.callbacks.CSVLogger(os.path.join(run_dir, rd.HISTORY), append=True),
        _SaveOperativeConfig(os.path.join(run_dir, rd.OPERATIVE_CONFIG)),
        cb.EpochLogger(epochs),
    ]
    if val_ds is not None:
      callbacks.append(cb.ConfusionMatrixImage(val_ds, class_names,
                                               os.path.join(run_dir, rd.VALIDATION_DIR)))
    # The backup outlives fit(): Keras would delete it before run.json says 'completed', and
    # a run stopped in between would start again from epoch 1. It goes once the status is in.
    callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, rd.BACKUP_DIR),
                                                      double_checkpoint=True,
                                                      delete_checkpoint=False))
    # Keras warns when the (finite) validation set ends, which is intended here.
    warnings.filterwarnings('ignore', message='Your input ran out of data')
    warnings.filterwarnings('ignore', message='`shuffle=True` was passed')
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps,
              callbacks=callbacks, verbose=0)
    best_path = os.path.join(run_dir, rd.BEST_INFO)
    if os.path.isfile(best_path):
      best = rd.read_json(best_path)
    else:  # every epoch's value was NaN: there is no best model to keep
      best = None
      logging.warning('%s was not finite in any epoch: no checkpoint was saved', monitor)
    info.update(status='completed', best=best, train_seconds=seconds_so_far())
    # Removed at the start, so one here evaluated the run while it was training.
    _remove_evaluation(run_dir, 'while it was training; evaluate it again now')
    rd.write_json(info_path, info)
    shutil.rmtree(os.path.join(run_dir, rd.BACKUP_DIR), ignore_errors=True)
    if best:
      logging.info('training finished in %.1f s; best %s %.4f at epoch %d',
                   info['train_seconds'], monitor, best['value'], best['epoch'])
    return info


def _remove_evaluation(run_dir: str, when: str) -> None:
  """Removes the run's metrics.json, if any, saying it evaluated the run `when`."""
  path = os.path.join(run_dir, rd.METRICS)
  if os.path.isfile(path):
    os.remove(path)
    logging.info('removed %s: it evaluated the run %s', path, when)


def _drop_history_after(run_dir: str, epochs_done: int) -> None:
  """Moves history rows of epochs after the backup's last one to history_stopped.csv.

  A run stopped after CSVLogger wrote an epoch's row but before BackupAndRestore saved that
  epoch trains the epoch again on resuming; without this, history.csv would hold it twice.
  The stopped attempt's rows are kept aside, since its best checkpoint (written before the
  row) may come from such an epoch. A half-written last row is dropped.
  """
  path = os.path.join(run_dir, rd.HISTORY)
  if not os.path.isfile(path):
    return
  with open(path, newline='') as f:
    lines = f.read().splitlines(keepends=True)
  if not lines or 'epoch' not in next(csv.reader([lines[0]])):
    return
  header, rows = lines[0], [r for r in lines[1:] if r.endswith('\n')]
  column = next(csv.reader([header])).index('epoch')

  def epoch(row: str) -> int:
    try:
      return int(next(csv.reader([row]))[column])
    except (ValueError, IndexError):
      return -1  # not a row of an epoch: dropped
  epochs = [epoch(r) for r in rows]
  kept = [r for r, e in zip(rows, epochs) if 0 <= e < epochs_done]
  moved = [r for r, e in zip(rows, epochs) if e >= epochs_done]
  if len(kept) == len(lines) - 1:
    return
  if moved:
    stopped = os.path.join(run_dir, rd.HISTORY_STOPPED)
    with open(stopped, 'a', newline='') as f:
      f.write(('' if os.path.getsize(stopped) else header) + ''.join(moved))
  rd.write_text(path, header + ''.join(kept))
  logging.info('history.csv: %d row(s) of epochs the resumed run trains again moved to %s',
               len(moved), rd.HISTORY_STOPPED)
  best_file = os.path.join(run_dir, rd.BEST_INFO)
  best = rd.read_json(best_file) if os.path.isfile(best_file) else {}
  if best.get('epoch', 0) > epochs_done:
    logging.warning('the best checkpoint so far comes from epoch %d of the stopped attempt '
                    '(its row is in %s); epochs trained from here replace it only if better',
                    best['epoch'], rd.HISTORY_STOPPED)


def _backup_epoch(backup_dir: str) -> int:
  """Epochs completed according to a BackupAndRestore folder (0 when none)."""
  path = os.path.join(backup_dir, 'training_metadata.json')
  if not os.path.isfile(path):
    return 0
  with open(path) as f:
    return int(json.load(f).get('epoch', 0))  # Keras stores the epochs completed


def _warn_missing_val_classes(manifest: dict[str, Any], monitor: str) -> None:
  """Warns when the validation split lacks a class: some validation metrics then mislead."""
  counts = manifest['counts']
  if not counts['val']['total']:
    return
  names = manifest['class_names']
  missing = [c for c in names if not counts['val']['per_class'][c]]
  if not missing:
    return
  held = ', '.join(f'{c}: {counts["train"]["per_class"][c]}' for c in missing)
  effects = ['val_balanced_accuracy averages the recall of the classes present only']
  if len(names) == 2:
    effects.append('val_auc is logged as 0')
  elif set(missing) >= set(names[:2]) or set(missing) >= set(names[2:]):
    effects.append('val_referable_auc is logged as 0')
  affected = monitor.startswith('val_') and monitor != 'val_loss'
  logging.warning('the validation split has no %s photographs (training holds %s): too few '
                  'for the split to validate on; %s%s', ', '.join(missing), held,
                  ' and '.join(effects),
                  f', so train.monitor = {monitor!r} may rank epochs wrongly' if affected
                  else '')


def _soft_label_loss(num_classes: int, smoothing: float):
  """Cross-entropy for class probabilities as labels (mixup's training batches) or sparse
  labels (validation), with label smoothing (Keras' sparse loss has none)."""
  cce = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)

  def loss(y_true, y_pred):
    if not metrics_lib.is_soft(y_true, num_classes):
      y_true = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_classes)
    return cce(y_true, y_pred)
  return loss

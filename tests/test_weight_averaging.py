"""Weight averaging (train.ema_momentum): what is validated and saved, and resuming."""

import keras
import numpy as np
import pytest

from training import callbacks as cb
from training import trainer


class _StopAt(keras.callbacks.Callback):
  """Interrupts fit at the start of an epoch, as a killed process would."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      raise KeyboardInterrupt


def _fit(backup_dir, epochs, extra=(), resumed=False, ema=0.8):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation='relu'),
                            keras.layers.Dense(2, activation='softmax')])
  model.compile(trainer.make_optimizer('sgd', 0.05, 'constant', 0, 0, ema_momentum=ema),
                'sparse_categorical_crossentropy')
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype('float32')
  y = (x[:, 0] > 0).astype('int32')
  swap = [cb.SwapEMAWeights(resumed=resumed)] if ema else []
  callbacks = [*swap, *extra,
               keras.callbacks.BackupAndRestore(str(backup_dir))]
  try:
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, callbacks=callbacks,
              validation_data=(x, y), verbose=0)
  except KeyboardInterrupt:
    pass
  return model


def test_interrupted_run_resumes_with_raw_weights_and_matches_uninterrupted(tmp_path):
  whole = _fit(tmp_path / 'a', epochs=4)
  _fit(tmp_path / 'b', epochs=4, extra=[_StopAt(2)])
  resumed = _fit(tmp_path / 'b', epochs=4, resumed=True)
  for w, r in zip(whole.get_weights(), resumed.get_weights()):
    np.testing.assert_allclose(r, w, rtol=1e-5, atol=1e-6)
  # Without the swap back, the resumed run trains on from the averaged weights.
  _fit(tmp_path / 'c', epochs=4, extra=[_StopAt(2)])
  naive = _fit(tmp_path / 'c', epochs=4, resumed=False)
  assert not all(np.allclose(n, w, atol=1e-6)
                 for n, w in zip(naive.get_weights(), whole.get_weights()))


class _Record(keras.callbacks.Callback):
  """The model's weights at the end of each epoch, as a checkpoint would save them."""

  def __init__(self):
    super().__init__()
    self.weights = []

  def on_epoch_end(self, epoch, logs=None):
    self.weights.append([w.copy() for w in self.model.get_weights()])


def test_epoch_end_callbacks_see_the_averaged_weights(tmp_path):
  raw, averaged = _Record(), _Record()
  _fit(tmp_path / 'a', epochs=3, extra=[raw], ema=None)
  model = _fit(tmp_path / 'b', epochs=3, extra=[averaged])
  # Averaging does not change the training trajectory; what callbacks see at the end of
  # an epoch (and what the finished model keeps) is the average, not the raw weights.
  for epoch in range(3):
    assert not np.allclose(averaged.weights[epoch][0], raw.weights[epoch][0], atol=1e-4)
  for w, a in zip(model.get_weights(), averaged.weights[-1]):
    np.testing.assert_allclose(w, a)
  # The average trails the raw weights: closer to the start than the raw weights are.
  start = _fit(tmp_path / 'c', epochs=0, ema=None).get_weights()[0]
  assert (np.abs(averaged.weights[0][0] - start).sum() <
          np.abs(raw.weights[0][0] - start).sum())


@pytest.mark.parametrize('momentum', [0.0, 1.0, -0.5])
def test_bad_momentum_is_rejected(momentum):
  with pytest.raises(ValueError, match='train.ema_momentum'):
    trainer.make_optimizer('adam', 1e-3, 'constant', 10, 0, ema_momentum=momentum)

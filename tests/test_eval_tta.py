"""Flip test-time augmentation averages the predictions of each image and its mirror."""

import jax
import numpy as np

from fgjax import experiment, trainer
from fgjax.evaluation import protocols
from fgjax.data import pipeline


def test_flip_tta_averages_image_and_mirror(make_config, one_device_mesh):
  config = make_config('bcnn')
  with config.unlocked():
    config.eval.flip_tta = True
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  batch = next(pipeline.eval_batches(exp.source('test'), config.dataset, keys=('image', 'label'),
                                     global_batch=16, mesh=one_device_mesh))
  got = jax.device_get(protocols.make_eval_step(exp)(state, batch)['logits'])
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  plain = exp.model.apply(variables, batch['image'], train=False)['logits']
  mirror = exp.model.apply(variables, batch['image'][:, :, ::-1], train=False)['logits']
  np.testing.assert_allclose(got, (np.asarray(plain) + np.asarray(mirror)) / 2, rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(plain, mirror)  # the mirror really is a different input

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


def test_flip_tta_keeps_spatial_outputs_of_the_image_itself(make_config, one_device_mesh):
  """Boxes are in image coordinates: the mirror's boxes averaged in would describe neither image
  (and the region metrics computed from them would be wrong), so flip TTA keeps the image's own;
  the class scores are still averaged."""
  config = make_config('focus_discriminate')
  exp_plain = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  config = config.copy_and_resolve_references()
  config.eval.flip_tta = True
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  batch = next(pipeline.eval_batches(exp.source('test'), config.dataset, keys=('image', 'label'),
                                     global_batch=16, mesh=one_device_mesh))
  outputs = dict(outputs=('logits', 'boxes'), batch_keys=('label',))
  got = jax.device_get(protocols.make_eval_step(exp, **outputs)(state, batch))
  plain = jax.device_get(protocols.make_eval_step(exp_plain, **outputs)(state, batch))
  mirror = jax.device_get(protocols.make_eval_step(exp_plain, **outputs)(
      state, {**batch, 'image': batch['image'][:, :, ::-1]}))
  assert not np.allclose(plain['boxes'], mirror['boxes'])  # the mirror picks other boxes
  np.testing.assert_array_equal(got['boxes'], plain['boxes'])
  np.testing.assert_allclose(got['logits'], (plain['logits'] + mirror['logits']) / 2,
                             rtol=1e-5, atol=1e-6)
  assert protocols.flip_averaged('hybrid_logits_rolled', config)
  assert not protocols.flip_averaged('boxes', config)

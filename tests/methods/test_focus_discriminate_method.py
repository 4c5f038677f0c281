"""focus_discriminate method: loss (image CE + mean region CE + hybrid CE) against a NumPy
log-softmax oracle, the localisation eval metric on hand-made boxes and end to end, config
checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import experiment, methods, trainer
from fgjax.evaluation import protocols

METHOD = methods.get('focus_discriminate')


def _ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -logp[np.arange(len(labels)), labels].mean()


def test_loss_terms(make_config):
  config = make_config('focus_discriminate')
  rng = np.random.default_rng(0)
  labels = np.array([0, 2, 1])
  out = {'image_logits': rng.normal(size=(3, 4)), 'region_logits': rng.normal(size=(3, 6, 4)),
         'hybrid_logits': rng.normal(size=(3, 4))}
  out = {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}
  out['logits'] = out['hybrid_logits']
  loss, metrics = METHOD.loss_fn(out, {'label': jnp.asarray(labels)}, config)
  region = np.mean([_ce(np.asarray(out['region_logits'])[:, r], labels) for r in range(6)])
  want = _ce(out['image_logits'], labels) + region + _ce(out['hybrid_logits'], labels)
  assert abs(float(loss) - want) < 1e-5
  assert abs(float(metrics['region_loss']) - region) < 1e-5
  # "image level only": no hybrid term; image only: no region term either.
  hybrid_ce = _ce(out.pop('hybrid_logits'), labels)
  out['logits'] = out['image_logits']
  loss2, _ = METHOD.loss_fn(out, {'label': jnp.asarray(labels)}, config)
  assert abs(float(loss2) - (want - hybrid_ce)) < 1e-5
  del out['region_logits']
  loss3, _ = METHOD.loss_fn(out, {'label': jnp.asarray(labels)}, config)
  assert abs(float(loss3) - _ce(out['image_logits'], labels)) < 1e-5


def test_eval_metric_on_hand_made_boxes(make_config):
  config = make_config('focus_discriminate')  # 32x32 input
  # Object: rows 8..24, cols 8..24 of the 32x32 image (normalised bbox).
  bbox = np.array([[0.25, 0.25, 0.75, 0.75]] * 4)
  boxes = np.zeros((4, 6, 4))
  boxes[0, 0] = [10, 10, 14, 14]  # inside the object: on object, touches
  boxes[1, 0] = [4, 4, 12, 12]  # 16 of 64 px on the object: touches, not on object
  boxes[2, 0] = [0, 0, 6, 6]  # disjoint
  boxes[3, 0] = [-10, 16, 14, 22]  # clipped to [0, 16, 14, 22]: 6*6 of 14*6 px on object (0.43)
  labels = np.array([0, 1, 1, 0])
  image_logits = np.array([[1., 0], [1, 0], [0, 1], [0, 1]])  # right on images 0 and 2
  region_logits = np.zeros((4, 6, 2))
  region_logits[:, :, 1] = 1  # class 1 everywhere ...
  region_logits[0, 0] = [1, 0]  # ... but the first region of image 0 says class 0
  base = {'label': labels, 'image_logits': image_logits, 'region_logits': region_logits,
          'logits': np.zeros((4, 2))}
  got = METHOD.eval_metrics({**base, 'bbox': bbox, 'boxes': boxes}, config)
  assert got['image_top1'] == 0.5
  assert got['top1_region_top1'] == 0.75  # images 0, 1, 2
  assert got['region_top1'] == 13 / 24  # 1 + 6 + 6 + 0 of the 6 regions of each image
  assert got['top1_region_on_object'] == 0.25
  assert got['top1_region_touches_object'] == 0.75
  ious = [16 / 256, 16 / (64 + 256 - 16), 0, 36 / (84 + 256 - 36)]
  assert abs(got['top1_region_iou'] - np.mean(ious)) < 1e-9
  with config.unlocked():
    config.model.overlap_threshold = 0.4
  assert METHOD.eval_metrics({**base, 'bbox': bbox, 'boxes': boxes},
                             config)['top1_region_on_object'] == 0.5
  assert 0 < got['anchor_on_object_chance'] < 1
  no_boxes = METHOD.eval_metrics({**base, 'boxes': boxes}, config)  # a dataset without boxes
  assert set(no_boxes) == {'image_top1', 'region_top1', 'top1_region_top1',
                           'region_side_frac_mean', 'attention_stride_frac'}
  no_regions = METHOD.eval_metrics({**base, 'region_logits': np.zeros((4, 0, 2))}, config)
  assert no_regions == {'image_top1': 0.5}


def test_end_to_end_eval_reports_region_metrics(make_config, one_device_mesh):
  config = make_config('focus_discriminate')
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  result = protocols.evaluate(exp, state)
  out = protocols.collect(exp, state, 'test', protocols.make_eval_step(exp))
  assert out['boxes'].shape == (48, 6, 4) and out['bbox'].shape == (48, 4)
  # Recompute "on object" from the gathered arrays.
  top1 = np.clip(out['boxes'][:, 0], 0, 32)
  obj = out['bbox'] * 32
  ih = np.clip(np.minimum(top1[:, 2], obj[:, 2]) - np.maximum(top1[:, 0], obj[:, 0]), 0, None)
  iw = np.clip(np.minimum(top1[:, 3], obj[:, 3]) - np.maximum(top1[:, 1], obj[:, 1]), 0, None)
  area = (top1[:, 2] - top1[:, 0]) * (top1[:, 3] - top1[:, 1])
  assert result['top1_region_on_object'] == np.mean(ih * iw / area >= 0.5)
  assert 0 <= result['top1'] <= 1
  assert result['image_top1'] == np.mean(np.argmax(out['image_logits'], -1) == out['label'])
  assert out['region_logits'].shape == (48, 6, 4)


@pytest.mark.parametrize('field,value,match', [
    ('attention', 'mean_cam', 'config.model.attention'),
    ('anchor_score', 'max', 'config.model.anchor_score'),
    ('num_hybrid', 7, 'config.model.num_hybrid'),
    ('use_regions', False, 'use_hybrid'),
    ('pad', 2, 'config.model.pad'),  # checked for the anchor scorings (below)
    ('region_size', 4, 'config.model.region_size'),
    ('overlap_threshold', 0.0, 'overlap_threshold'),
    ('feature_dropout', 1.0, 'config.model.feature_dropout'),
])
def test_check_config_errors(make_config, field, value, match):
  config = make_config('focus_discriminate')
  with config.unlocked():
    config.model[field] = value
    if field == 'pad':  # the padding that NTS-Net's anchors need
      config.model.region_scoring = 'anchor_mean'
  with pytest.raises(ValueError, match=match):
    METHOD.check_config(config)


def test_auto_geometry():
  from configs import synthetic_focus_discriminate, cub_focus_discriminate
  from fgjax.methods.focus_discriminate import configured_model
  geometry = lambda config: configured_model(config).geometry()
  assert geometry(synthetic_focus_discriminate.get_config()) == ((64, 64), 64 / 448, 32, 32)
  assert geometry(cub_focus_discriminate.get_config()) == ((448, 448), 1.0, 224, 224)

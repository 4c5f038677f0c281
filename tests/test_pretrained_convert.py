"""convert CLI -> weight directory -> a B-CNN stream initialised from it, with its preprocessing."""

import os
import sys

import jax
import numpy as np
import pytest

from fgjax import experiment, pretrained, trainer
from fgjax.models import backbones
from fgjax.models.backbones import preprocessing, resnet

sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'parity'))
import seeded_weights  # noqa: E402  pylint: disable=g-import-not-at-top

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'torchvision_resnet50.npz')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """Seeded torchvision-named ResNet-50 weights as .npz, converted with the CLI."""
  root = tmp_path_factory.mktemp('weights')
  with np.load(FIXTURE, allow_pickle=False) as f:
    state = seeded_weights.seeded_state_dict(
        f['names'], seeded_weights.unpad_shapes(f['shapes']), int(f['seed']))
  np.savez(root / 'resnet50.npz', **state)
  out = str(root / 'resnet50_imagenet')
  assert pretrained.main(['convert', '--arch', 'resnet50', '--src',
                          str(root / 'resnet50.npz'), '--out', out]) == 0
  return out, state


def test_convert_writes_weights_preprocessing_and_source(converted):
  out, _ = converted
  assert sorted(os.listdir(out)) == ['preprocessing.json', 'source.json', 'weights']
  assert preprocessing.Preprocessing.load(out) == preprocessing.TORCHVISION
  info = pretrained.read_source_info(out)
  assert info['arch'] == 'resnet50' and len(info['sha256']) == 64
  with pytest.raises(FileExistsError, match='already holds converted weights'):
    pretrained.convert('resnet50', info['source'], out)


def test_bcnn_stream_loads_converted_weights(converted, make_config, tmp_path, one_device_mesh):
  out, state = converted
  config = make_config('bcnn', backbone_a='resnet50', layer_a='layer2', proj_dim_a=8,
                       backbone_a_pretrained=out)
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  assert backbones.of(exp.model, '_a').preprocessing == preprocessing.TORCHVISION
  logs = []
  run = trainer._Run(exp, str(tmp_path / 'w'), logs.append)
  loaded, _, _ = trainer._restore_or_init(run)
  loaded = jax.device_get(loaded)
  expected = resnet.from_torchvision(state, include_top=True)
  del expected['params']['fc']
  for collection in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, getattr(loaded, collection)['backbone_a'],
                 expected[collection])
  assert any('unused in source: 2 (params/backbone_a/fc/bias, params/backbone_a/fc/kernel)' in l
             for l in logs), logs


def test_weights_for_another_arch_are_refused(converted, make_config, tmp_path, one_device_mesh):
  out, _ = converted
  config = make_config('bcnn', backbone_a_pretrained=out)  # backbone_a is small_cnn
  with pytest.raises(ValueError, match="holds resnet50 weights but config.model.backbone_a is "
                                       "'small_cnn'"):
    experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)

"""Input pipeline: deterministic from the seed, resumable at any position, nothing dropped in eval."""

import grain
import jax
import numpy as np
import pytest

from fgjax import experiment
from fgjax.data import augment, pipeline


@pytest.fixture
def exp(make_config, one_device_mesh):
  return experiment.setup(make_config('bcnn'), mesh=one_device_mesh, log=lambda m: None)


def _take(it, n):
  return [jax.device_get(next(it)) for _ in range(n)]


def _train(exp, seed=0, start=0):
  c = exp.config
  return pipeline.train_batches(exp.source('train'), c.dataset, keys=('image', 'label'),
                                global_batch=c.train.global_batch_size, mesh=exp.mesh,
                                seed=seed, start_position=start)


def test_deterministic_and_resumable(exp):
  n = len(exp.source('train')) // exp.config.train.global_batch_size + 2  # crosses an epoch
  first = _take(_train(exp), n)
  again = _take(_train(exp), n)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  resumed = _take(_train(exp, start=3), n - 3)
  for a, b in zip(first[3:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  other = _take(_train(exp, seed=1), 1)[0]
  assert not np.array_equal(other['image'], first[0]['image'])
  assert first[0]['image'].dtype == np.uint8 and first[0]['label'].dtype == np.int32


def test_each_epoch_is_a_permutation(exp):
  """Within an epoch every record appears once: the shuffled stream drops nothing."""
  gb = exp.config.train.global_batch_size
  order = grain.MapDataset.range(len(exp.source('train'))).seed(0).shuffle().repeat()
  n = len(exp.source('train'))
  assert sorted(order[i] for i in range(n)) == list(range(n))
  assert [order[i] for i in range(n)] != [order[i] for i in range(n, 2 * n)]  # reshuffled
  assert gb < n


def test_process_rows_split_a_global_batch_contiguously():
  """Process p of P reads rows [p*B/P, (p+1)*B/P) of each global batch, by global position."""
  base = grain.MapDataset.range(1000)
  gb = 8
  single = pipeline._ProcessRows(base, gb, gb, 0)
  halves = [pipeline._ProcessRows(base, gb, gb // 2, p) for p in range(2)]
  for batch in range(3):
    whole = [single[batch * gb + j] for j in range(gb)]
    parts = [halves[p][batch * gb // 2 + j] for p in range(2) for j in range(gb // 2)]
    assert whole == parts


def test_eval_covers_every_example_once(exp):
  c = exp.config
  source = exp.source('test')
  batches = list(pipeline.eval_batches(source, c.dataset, keys=('image', 'label'),
                                       global_batch=32, mesh=exp.mesh))
  assert len(batches) == pipeline.num_eval_batches(len(source), 32)
  index = np.concatenate([np.asarray(b['index'])[np.asarray(b['mask'])] for b in batches])
  np.testing.assert_array_equal(index, np.arange(len(source)))
  labels = np.concatenate([np.asarray(b['label'])[np.asarray(b['mask'])] for b in batches])
  np.testing.assert_array_equal(labels, [int(source[i]['label']) for i in range(len(source))])
  # eval geometry is deterministic: centre crop of the resized image
  expected = augment.preprocess(source[0], c.dataset, None)['image']
  np.testing.assert_array_equal(np.asarray(batches[0]['image'])[0], expected)


def test_bbox_follows_flip_shift_and_crop():
  img = np.zeros((20, 30, 3), np.uint8)
  img[5:10, 3:12] = 255  # object rows 5..9, cols 3..11
  box = np.asarray([5 / 20, 3 / 30, 10 / 20, 12 / 30], np.float32)
  flipped, fbox = augment.hflip(img, box)
  ys, xs = np.nonzero(flipped[..., 0])
  np.testing.assert_allclose(fbox, [ys.min() / 20, xs.min() / 30, (ys.max() + 1) / 20,
                                    (xs.max() + 1) / 30], atol=1e-6)
  shifted, sbox = augment.shift(img, box, 2, -1)
  ys, xs = np.nonzero(shifted[..., 0])
  np.testing.assert_allclose(sbox, [ys.min() / 20, xs.min() / 30, (ys.max() + 1) / 20,
                                    (xs.max() + 1) / 30], atol=1e-6)
  cropped, cbox = augment.crop(img, box, (16, 16))  # centre crop: y0 = 2, x0 = 7
  ys, xs = np.nonzero(cropped[..., 0])
  np.testing.assert_allclose(cbox, [ys.min() / 16, xs.min() / 16, (ys.max() + 1) / 16,
                                    (xs.max() + 1) / 16], atol=1e-6)
  with pytest.raises(ValueError, match='smaller than the crop'):
    augment.crop(img, None, (25, 25))


def _cfg(**fields):
  from fgjax.default_config import get_base_config  # pylint: disable=g-import-not-at-top
  d = get_base_config().dataset
  d.update(fields)
  return d


def test_padding_free_shift_moves_the_window():
  """Wu & Wang 2017's shifts without padding: the output is the resized image's window moved by
  (dy, dx), never zero-filled."""
  rng_img = np.random.default_rng(0)
  img = rng_img.integers(1, 256, (40, 40, 3), dtype=np.uint8)  # no zeros anywhere
  cfg = _cfg(resize='none', image_size=32, random_crop=False, hflip=False, shift_y=3, shift_x=4,
             shift_padding=False)
  seen = set()
  for seed in range(30):
    out = augment.preprocess({'image': img}, cfg, np.random.default_rng(seed))['image']
    draw = np.random.default_rng(seed)
    dy, dx = int(draw.integers(-3, 4)), int(draw.integers(-4, 5))
    np.testing.assert_array_equal(out, img[4 - dy:36 - dy, 4 - dx:36 - dx])
    assert out.min() > 0
    seen.add((dy, dx))
  assert len(seen) > 10


def test_non_square_input_and_crop_to_bbox():
  img = np.zeros((100, 60, 3), np.uint8)
  img[20:60, 10:30] = 200
  box = np.asarray([0.2, 10 / 60, 0.6, 0.5], np.float32)
  cfg = _cfg(crop_to_bbox=True, resize='fixed', resize_size=48, resize_width=24, image_size=48,
             image_width=24)
  out = augment.preprocess({'image': img, 'bbox': box}, cfg, None)
  assert out['image'].shape == (48, 24, 3)
  assert np.all(out['image'] == 200)  # only the box's pixels remain
  np.testing.assert_array_equal(out['bbox'], [0, 0, 1, 1])
  with pytest.raises(ValueError, match='needs a `bbox`'):
    augment.preprocess({'image': img}, cfg, None)

"""The PyTorch (and NumPy) peers of the benchmark suite: what users would run instead of fgjax.

Each `torch_*` function does the same work as its `benchmarks.heads.fgjax_*` counterpart, the way
the public PyTorch code does it, eager, on the same CPU threads, and returns `common.times`'s
timing. `torch` is passed in (imported by `common.torch_or_none`), so this module imports without
PyTorch: the NumPy peers (`hard_nms_ntsnet`, `eval_market1501`, `numpy_distance`) work anyway.

Peers and where they come from:
- ResNet-50 train step: torchvision `resnet50(num_classes=...)`, `nn.CrossEntropyLoss`,
  `torch.optim.SGD(momentum=0.9)`: zero_grad, forward, loss, backward, step; NCHW (torch's
  default) or `channels_last` (model and input converted once, outside the timing).
- B-CNN head: cvl-umass/bilinear-cnn `BCNN.py`'s head on an NCHW map: `bmm(X, Y^T) / (H*W)`,
  `view(N, -1)`, signed sqrt (`sign(z) * sqrt(|z| + 1e-5)`, fgjax's default variant), `F.normalize`,
  `nn.Linear`, cross entropy; backward to the map(s) and the linear layer.
- B-CNN train step: torchvision `vgg16().features[:-1]` (to relu5_3) + that head, SGD momentum.
- A3M head: a PyTorch port of `fgjax.models.a3m.A3M(variant='paper')` (the paper's eq. 1-9): the
  category and K attribute branches as `nn.Linear` on the (B, L, C) map (= 1x1 convs), ReLU, mean
  pooling, classifiers, attribute-guided (max over k of sigmoid(V a_k)) and category-guided
  (sigmoid(A v)) attention, final classifier; loss = CE(final) + CE(category) + sum_k CE(attr k).
- NMS + crop-and-resize: NTS-Net's `attention_net.forward` path (yangze0930/NTS-Net
  `core/model.py`, commit e6c98df; see tests/fixtures/README.md): scores to NumPy, per image
  greedy hard NMS on (score, y0, x0, y1, x1, index) rows (NTS-Net `core/anchors.py` conventions;
  an independent NumPy implementation, not NTS-Net's code), then per kept box
  `F.interpolate(x_pad[i:i+1, :, y0:y1, x0:x1], size=(224, 224), mode='bilinear',
  align_corners=True)` from the zero-padded image.
- CMC/mAP: torchreid (KaiyangZhou/deep-person-reid, MIT licence) `torchreid/metrics/rank.py`
  `eval_market1501`, its pure-Python path (the one used when the Cython extension is not built),
  re-written here statement for statement; distances as torchreid's `compute_distance_matrix`
  ('euclidean': `addmm_` on float32 torch tensors), or float32 NumPy when PyTorch is missing.
"""
from __future__ import annotations

import numpy as np

from benchmarks import common


def describe(torch, torchvision=None) -> str:
  tv = f'torchvision {torchvision.__version__}, ' if torchvision is not None else ''
  return f'{tv}torch {torch.__version__} ({torch.get_num_threads()} threads, eager)'


def _sgd(torch, module):
  return torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)


def _train_timing(torch, module, x, y, iters, min_time):
  opt = _sgd(torch, module)
  loss_fn = torch.nn.CrossEntropyLoss()
  module.train()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(module(x), y)
    loss.backward()
    opt.step()
    return loss

  return common.times(step, iters=iters, min_time=min_time)


def torch_resnet50_train_step(torch, torchvision, batch: int, size: int, num_classes: int,
                              channels_last: bool, *, iters: int = 3, min_time: float = 0.0):
  torch.manual_seed(0)
  model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
  x = torch.randn(batch, 3, size, size)
  y = torch.randint(0, num_classes, (batch,))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  return _train_timing(torch, model, x, y, iters, min_time)


def bcnn_head_module(torch, channels: int, num_classes: int):
  nn, F = torch.nn, torch.nn.functional

  class Head(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc = nn.Linear(channels * channels, num_classes)

    def forward(self, a, b=None):
      b = a if b is None else b
      n, c, h, w = a.shape
      x = a.reshape(n, c, h * w)
      y = b.reshape(n, b.shape[1], h * w)
      z = torch.bmm(x, y.transpose(1, 2)) / (h * w)
      z = z.reshape(n, -1)
      z = torch.sign(z) * torch.sqrt(z.abs() + 1e-5)
      z = F.normalize(z)
      return self.fc(z)

  return Head()


def torch_bcnn_head(torch, batch: int, grid: int, channels: int, num_classes: int,
                    symmetric: bool, *, iters: int = 3, min_time: float = 0.0):
  torch.manual_seed(0)
  head = bcnn_head_module(torch, channels, num_classes)
  a = torch.relu(torch.randn(batch, channels, grid, grid)).requires_grad_()
  b = None if symmetric else torch.relu(torch.randn(batch, channels, grid, grid)).requires_grad_()
  y = torch.randint(0, num_classes, (batch,))
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    head.zero_grad(set_to_none=True)
    a.grad = None
    if b is not None:
      b.grad = None
    loss_fn(head(a, b), y).backward()

  return common.times(step, iters=iters, min_time=min_time)


def torch_bcnn_train_step(torch, torchvision, batch: int, size: int, num_classes: int, *,
                          iters: int = 3, min_time: float = 0.0):
  torch.manual_seed(0)
  trunk = torchvision.models.vgg16(weights=None).features[:-1]  # to relu5_3 (pool5 dropped)
  head = bcnn_head_module(torch, 512, num_classes)
  model = torch.nn.Sequential(trunk, head)
  x = torch.randn(batch, 3, size, size)
  y = torch.randint(0, num_classes, (batch,))
  return _train_timing(torch, model, x, y, iters, min_time)


def a3m_head_module(torch, channels: int, num_classes: int, attribute_classes, embed_dim: int):
  nn, F = torch.nn, torch.nn.functional

  class A3MHead(nn.Module):
    def __init__(self):
      super().__init__()
      self.category_conv = nn.Linear(channels, embed_dim)
      self.category_classifier = nn.Linear(embed_dim, num_classes)
      self.attr_conv = nn.ModuleList(nn.Linear(channels, embed_dim) for _ in attribute_classes)
      self.attr_classifier = nn.ModuleList(nn.Linear(embed_dim, c) for c in attribute_classes)
      self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, fmap):  # fmap (B, h, w, C), as the fgjax head gets it
      n = fmap.shape[0]
      x = fmap.reshape(n, -1, fmap.shape[-1])  # (B, L, C)
      big_v = F.relu(self.category_conv(x))  # V (B, L, d)
      v = big_v.mean(1)
      category_logits = self.category_classifier(v)
      pooled, attr_logits = [], []
      for conv, cls in zip(self.attr_conv, self.attr_classifier):
        a_k = F.relu(conv(x)).mean(1)
        pooled.append(a_k)
        attr_logits.append(cls(a_k))
      a = torch.stack(pooled, 1)  # (B, K, d)
      m = torch.sigmoid(torch.einsum('nld,nkd->nkl', big_v, a)).amax(1)  # eq. 5
      f_region = torch.einsum('nld,nl->nd', big_v, m) / big_v.shape[1]  # eq. 6
      s = torch.sigmoid(torch.einsum('nkd,nd->nk', a, v))  # eq. 7
      f_attr = torch.einsum('nkd,nk->nd', a, s) / a.shape[1]  # eq. 8
      return self.classifier(f_region + f_attr), category_logits, attr_logits

  return A3MHead()


def torch_a3m_head(torch, x, labels, attr, num_classes: int, attribute_classes, embed_dim: int, *,
                   iters: int = 3, min_time: float = 0.0):
  torch.manual_seed(0)
  head = a3m_head_module(torch, x.shape[-1], num_classes, attribute_classes, embed_dim)
  x = torch.from_numpy(x).requires_grad_()
  y = torch.from_numpy(labels).long()
  ya = torch.from_numpy(attr).long()
  F = torch.nn.functional

  def step():
    head.zero_grad(set_to_none=True)
    x.grad = None
    logits, category_logits, attr_logits = head(x)
    loss = F.cross_entropy(logits, y) + F.cross_entropy(category_logits, y)
    for k, lg in enumerate(attr_logits):
      loss = loss + F.cross_entropy(lg, ya[:, k])
    loss.backward()

  return common.times(step, iters=iters, min_time=min_time)


# ------------------------------------------------------------------------------------------------
# NTS-Net region proposal (NumPy hard NMS + per-crop F.interpolate)
# ------------------------------------------------------------------------------------------------

def hard_nms_ntsnet(cdds: np.ndarray, topn: int = 10, iou_thresh: float = 0.25) -> np.ndarray:
  """Greedy hard NMS in NumPy with NTS-Net's conventions (written for this benchmark, not copied):
  rows (score, y0, x0, y1, x1, ...); visit rows from the highest score down, keep a row unless its
  IoU with a kept row is >= `iou_thresh` (areas without +1, as NTS-Net's `hard_nms`), stop at
  `topn` kept rows; returns them, highest score first. A per-image Python loop over NumPy arrays,
  the way NTS-Net's `attention_net.forward` runs its proposals."""
  rows = cdds[np.argsort(-cdds[:, 0], kind='stable')]
  y0, x0, y1, x1 = (rows[:, k] for k in range(1, 5))
  area = (y1 - y0) * (x1 - x0)
  alive = np.ones(len(rows), bool)
  kept = []
  for i in range(len(rows)):
    if not alive[i]:
      continue
    kept.append(rows[i])
    if len(kept) == topn:
      break
    h = np.clip(np.minimum(y1[i + 1:], y1[i]) - np.maximum(y0[i + 1:], y0[i]), 0, None)
    w = np.clip(np.minimum(x1[i + 1:], x1[i]) - np.maximum(x0[i + 1:], x0[i]), 0, None)
    inter = h * w
    alive[i + 1:] &= inter / (area[i + 1:] + area[i] - inter) < iou_thresh
  return np.array(kept)


def torch_nms_crop(torch, images: np.ndarray, scores: np.ndarray, boxes: np.ndarray, pad: int,
                   topn: int, out_size: int, *, iters: int = 3, min_time: float = 0.0):
  """NTS-Net's proposal path on (B, S, S, 3) images (converted to NCHW once, outside the timing).

  `boxes` are the unpadded integer anchors; NTS-Net's padded `edge_anchors` are `boxes + pad`.
  """
  F = torch.nn.functional
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  rpn_score = torch.from_numpy(scores)
  edge_anchors = (boxes + pad).astype(np.float64)
  out = {}

  def step():
    x_pad = F.pad(x, (pad, pad, pad, pad), mode='constant', value=0)
    batch = x.shape[0]
    all_cdds = [np.concatenate((s.reshape(-1, 1), edge_anchors.copy(),
                                np.arange(0, len(s)).reshape(-1, 1)), axis=1)
                for s in rpn_score.data.cpu().numpy()]
    top_n_cdds = np.array([hard_nms_ntsnet(c, topn=topn, iou_thresh=0.25) for c in all_cdds])
    part_imgs = torch.zeros([batch, topn, 3, out_size, out_size])
    for i in range(batch):
      for j in range(topn):
        y0, x0, y1, x1 = top_n_cdds[i][j, 1:5].astype(np.int64)
        part_imgs[i:i + 1, j] = F.interpolate(x_pad[i:i + 1, :, y0:y1, x0:x1],
                                              size=(out_size, out_size), mode='bilinear',
                                              align_corners=True)
    out['crops'], out['index'] = part_imgs, top_n_cdds[:, :, -1].astype(np.int64)

  timing = common.times(step, iters=iters, min_time=min_time)
  return timing, out


# ------------------------------------------------------------------------------------------------
# torchreid CMC / mAP
# ------------------------------------------------------------------------------------------------

def eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """torchreid `eval_market1501` (pure-Python path), statement for statement.

  From KaiyangZhou/deep-person-reid, torchreid/metrics/rank.py. MIT License, Copyright (c) 2018
  Kaiyang Zhou. Permission is hereby granted, free of charge, to any person obtaining a copy of
  this software and associated documentation files (the "Software"), to deal in the Software
  without restriction, including without limitation the rights to use, copy, modify, merge,
  publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons to
  whom the Software is furnished to do so, subject to the following conditions: The above
  copyright notice and this permission notice shall be included in all copies or substantial
  portions of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND.
  """
  num_q, num_g = distmat.shape
  if num_g < max_rank:
    max_rank = num_g
  indices = np.argsort(distmat, axis=1)
  matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
  all_cmc, all_ap = [], []
  num_valid_q = 0.
  for q_idx in range(num_q):
    q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
    order = indices[q_idx]
    remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
    keep = np.invert(remove)
    raw_cmc = matches[q_idx][keep]
    if not np.any(raw_cmc):
      continue
    cmc = raw_cmc.cumsum()
    cmc[cmc > 1] = 1
    all_cmc.append(cmc[:max_rank])
    num_valid_q += 1.
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    tmp_cmc = [x / (i + 1.) for i, x in enumerate(tmp_cmc)]
    tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
    all_ap.append(tmp_cmc.sum() / num_rel)
  assert num_valid_q > 0, 'Error: all query identities do not appear in gallery'
  all_cmc = np.asarray(all_cmc).astype(np.float32)
  return all_cmc.sum(0) / num_valid_q, np.mean(all_ap)


def torch_distance(torch, q: np.ndarray, g: np.ndarray) -> np.ndarray:
  """torchreid `compute_distance_matrix(..., 'euclidean')` (squared), float32, as NumPy."""
  input1, input2 = torch.from_numpy(q), torch.from_numpy(g)
  m, n = input1.size(0), input2.size(0)
  mat1 = torch.pow(input1, 2).sum(dim=1, keepdim=True).expand(m, n)
  mat2 = torch.pow(input2, 2).sum(dim=1, keepdim=True).expand(n, m).t()
  distmat = mat1 + mat2
  distmat.addmm_(input1, input2.t(), beta=1, alpha=-2)
  return distmat.numpy()


def numpy_distance(q: np.ndarray, g: np.ndarray) -> np.ndarray:
  """The same squared Euclidean distance in float32 NumPy (the peer when PyTorch is missing)."""
  return (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * (q @ g.T)


def peer_reid_metrics(torch, inputs, *, max_rank: int = 50, iters: int = 1,
                      min_time: float = 0.0):
  """torchreid-style distances + eval_market1501; (timing, {'cmc', 'map'})."""
  q, g, q_ids, g_ids, q_cams, g_cams = inputs
  result = {}

  def run():
    dist = torch_distance(torch, q, g) if torch is not None else numpy_distance(q, g)
    result['cmc'], result['map'] = eval_market1501(dist, q_ids, g_ids, q_cams, g_cams, max_rank)

  timing = common.times(run, iters=iters, min_time=min_time, warmup=0)
  return timing, result

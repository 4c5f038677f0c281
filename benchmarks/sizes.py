"""Problem sizes of every row of the benchmark suite (`python -m benchmarks.run`): `Sizes()` are
the figures to report, `Sizes.quick()` a smoke run (`--quick`)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Sizes:
  """Problem sizes of every row (`full()` = the issue's, `quick()` = a smoke run)."""
  resnet_size: int = 224
  resnet_batch: int = 8
  resnet_bf16_size: int = 448  # gpu suite
  classes: int = 200  # CUB
  bcnn_grid: int = 28
  bcnn_channels: int = 512
  bcnn_head_batch: int = 8
  bcnn_train_size: int = 224
  bcnn_train_batch: int = 4
  nms_batch: int = 8
  nms_size: int = 448
  nms_topn: int = 4
  nms_out: int = 224
  a3m_batch: int = 8
  a3m_grid: int = 7
  a3m_channels: int = 2048
  a3m_embed: int = 512
  a3m_groups: tuple = ()  # () = CUB's 28 groups
  reid_query: int = 3000
  reid_gallery: int = 20000
  reid_ids: int = 750
  reid_cams: int = 6
  reid_dim: int = 512
  pipeline_batches: int = 20
  pipeline_batch: int = 32
  lstm_grid: int = 14
  lstm_hidden: tuple = (16, 64)
  bilinear_lstm_size: int = 448
  bilinear_lstm_batch: int = 8
  overhead_size: int = 224  # cpu suite (float32); the gpu suite uses overhead_gpu_size, bf16
  overhead_gpu_size: int = 448
  overhead_batch: int = 2
  overhead_gpu_batch: int = 16
  overhead_methods: tuple = ()  # () = every method (benchmarks.overhead.METHODS)
  methods_batch: int = 16  # gpu suite: per method at its config's input size
  small_backbones: bool = False  # quick: small_cnn in every method (overhead, methods rows)
  iters: int = 3
  min_time: float = 2.0

  @classmethod
  def quick(cls) -> 'Sizes':
    return cls(resnet_size=64, resnet_batch=2, resnet_bf16_size=64, classes=10, bcnn_grid=7,
               bcnn_channels=64, bcnn_head_batch=2, bcnn_train_size=64, bcnn_train_batch=2,
               nms_batch=2, nms_size=112, nms_out=56, a3m_batch=2, a3m_channels=64, a3m_embed=32,
               a3m_groups=(3, 4, 5), reid_query=60, reid_gallery=400, reid_ids=30, reid_dim=16,
               pipeline_batches=3, pipeline_batch=8, lstm_grid=4, lstm_hidden=(8,),
               bilinear_lstm_size=112, bilinear_lstm_batch=2, overhead_size=64,
               overhead_gpu_size=64, overhead_batch=2, overhead_gpu_batch=2, methods_batch=2,
               small_backbones=True, iters=1, min_time=0.0)

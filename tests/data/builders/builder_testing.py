"""Helpers shared by the builder tests (imported from the test files' own directory)."""

import tensorflow_datasets as tfds


def build_by_image_id(cls, manual, data_dir, splits):
  """Build `cls` from `manual` and read every split back as the pipeline does:
  (builder, {split: {image_id: example}})."""
  cls(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  builder = cls(data_dir=data_dir)
  sources = builder.as_data_source()
  rows = {s: [sources[s][i] for i in range(len(sources[s]))] for s in splits}
  return builder, {s: {int(e['image_id']): e for e in rows[s]} for s in splits}

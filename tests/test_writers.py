"""fgjax.writers.StatusLine: the one-line progress of predict and export; MetricWriter files."""
import io
import json

from fgjax import writers


def test_status_line_rate_after_first_call_newline_at_end_and_clear():
  s = io.StringIO()
  line = writers.StatusLine('export test', s)
  line(8, 24)
  assert s.getvalue() == '\rexport test: 8/24'  # first call: compile included, no rate yet
  line(16, 24)
  assert s.getvalue().endswith(' img/s)') and '\rexport test: 16/24 (' in s.getvalue()
  width = len(s.getvalue().split('\r')[-1])
  line.clear()
  assert s.getvalue().endswith('\r' + ' ' * width + '\r')
  line(16, 24)  # redrawn after clear
  line(24, 24)
  assert s.getvalue().endswith(' img/s)\n')
  n = len(s.getvalue())
  line(24, 24)  # repeated final call: nothing more
  assert len(s.getvalue()) == n


def test_status_line_disabled_or_empty_writes_nothing():
  s = io.StringIO()
  writers.StatusLine('predict', s, enabled=False)(1, 2)
  writers.StatusLine('predict', s)(0, 0)
  assert s.getvalue() == ''


def test_metric_writer_jsonl(tmp_path):
  w = writers.MetricWriter(str(tmp_path))
  w.write(3, {'loss': 1.5}, 'train')
  w.close()
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert rows == [{'step': 3, 'split': 'train', 'loss': 1.5}]
  assert (tmp_path / 'tensorboard').is_dir()

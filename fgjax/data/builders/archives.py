"""Finding a dataset's official files for a builder: manual dir, packed archive, download.

Shared by the builders. ``find`` (cub2011 / cars196 / fgvc_aircraft) looks, in order, for

1. the extracted files in ``dl_manager.manual_dir`` (a marker file such as
   ``CUB_200_2011/images.txt``),
2. an official archive there (``.tgz`` / ``.tar.gz`` / ``.tar``), unpacked once by
   ``common.extract`` (tfds' extractor needs TensorFlow; tarfile with ``filter='data'`` is used),
3. a download of the public URLs (``dl_manager.download``, which works without TensorFlow, then
   the same extraction),

and returns None when none of them exists, so the builder can list every missing file with
``common.require`` (``find_required`` raises that error, naming the archive). The re-id builders
look in ``manual_dirs`` themselves and ``fetch`` a missing public file.

Choice: before downloading, a 10 s TCP connection check on the URL's host skips unreachable
URLs: offline, tfds' ``requests`` session otherwise retries with back-off for about 3.5 minutes
per URL before failing.
"""

from __future__ import annotations

import os
import socket
import tarfile
import urllib.parse
from collections.abc import Sequence

from fgjax.data.builders import common


def manual_dir(dl_manager) -> str | None:
  """The manual dir, or None when it is not configured, missing or empty."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except (AssertionError, ValueError):
    return None


def expected_manual_dir(dl_manager) -> str:
  """Where files are expected (for error messages), even when the manual dir is missing/empty."""
  configured = getattr(dl_manager, '_manual_dir', None)
  return os.fspath(configured or os.path.join(os.fspath(dl_manager.download_dir), 'manual'))


def manual_dirs(dl_manager) -> tuple[str | None, str]:
  """(the manual dir or None, as `manual_dir`; the folder where files are expected: the manual dir,
  or `expected_manual_dir` without one)."""
  manual = manual_dir(dl_manager)
  return manual, manual or expected_manual_dir(dl_manager)


def find(dl_manager, dataset: str, markers: Sequence[str], archives: Sequence[str] = (),
         urls: Sequence[str] = ()) -> tuple[str, str] | None:
  """(root, marker) for the first of `markers` (relative paths) found, or None (see module doc).

  A found archive or download that lacks every marker gives (root, markers[0]), so that
  `common.require` then names what is missing inside it.
  """
  manual = manual_dir(dl_manager)
  roots = []
  if manual:
    roots.append(lambda: manual)
    roots += [lambda a=a: common.extract(dl_manager, os.path.join(manual, a), dataset)
              for a in archives if os.path.isfile(os.path.join(manual, a))]
  roots += [lambda u=u: download(dl_manager, u, dataset) for u in urls]
  for i, get_root in enumerate(roots):
    root = get_root()
    if root is None:
      continue
    for marker in markers:
      if os.path.exists(os.path.join(root, marker)):
        return root, marker
    if i > 0 or not manual:  # an archive or a download: report what it lacks
      return root, markers[0]
  return None


def find_required(dl_manager, dataset: str, markers: Sequence[str], archives: Sequence[str],
                  urls: Sequence[str], what: str) -> tuple[str, str]:
  """`find`, or `common.MissingFiles` naming `archives[0]` in the expected manual dir, with `what`
  (what it is and where to get it), when nothing is found."""
  found = find(dl_manager, dataset, markers, archives, urls)
  if found is None:
    where = expected_manual_dir(dl_manager)
    common.require(where, [common.Required(archives[0], what)], dataset)
    raise common.MissingFiles(f'{dataset}: nothing usable in {where}')
  return found


def fetch(dl_manager, url: str | None) -> str | None:
  """The downloaded file of `url`; None when `url` is empty, unreachable or the download fails
  (the caller then reports the missing file)."""
  if not url or not reachable(url):
    return None
  try:
    return os.fspath(dl_manager.download(url))
  except Exception:  # pylint: disable=broad-except
    return None


def download(dl_manager, url: str, dataset: str) -> str | None:
  """Download and extract `url`; None when unreachable, failed or not a tar archive."""
  path = fetch(dl_manager, url)
  try:
    return common.extract(dl_manager, path, dataset) if path and tarfile.is_tarfile(path) else None
  except Exception:  # pylint: disable=broad-except  # the caller reports the missing files
    return None


def reachable(url: str, timeout: float = 10.0) -> bool:
  u = urllib.parse.urlparse(url)
  port = u.port or {'http': 80, 'https': 443, 'ftp': 21}.get(u.scheme, 443)
  try:
    socket.create_connection((u.hostname, port), timeout=timeout).close()
    return True
  except (OSError, TypeError):
    return False


def require_listed(root: str, relpaths: Sequence[str], what: str, dataset: str,
                   limit: int = 20) -> None:
  """`common.require` for files listed by an annotation file (e.g. images), naming <= `limit`."""
  missing = [p for p in relpaths if not os.path.exists(os.path.join(root, p))]
  if missing:
    note = f' ({len(missing)} missing, first {limit} named)' if len(missing) > limit else ''
    common.require(root, [common.Required(p, what + note) for p in missing[:limit]], dataset)

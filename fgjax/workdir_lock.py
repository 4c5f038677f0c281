"""One training run per workdir: the lock file WORKDIR/.lock.

Two runs writing into one workdir would interleave metrics.jsonl, write two TensorBoard files and
race on the checkpoints. `python -m fgjax.train` therefore takes WORKDIR/.lock before it writes
anything there and removes it when it ends, however it ends (done, an error, Ctrl-C, SIGTERM).

The lock file is JSON, ``{"pid": ..., "host": ..., "started": ...}`` (the holder's process id, host
name and start time, UTC), created with ``O_CREAT | O_EXCL``, so of two runs starting together only
one gets it. While it holds the lock, the run touches the file (its modification time) every
`HEARTBEAT_S` seconds. A second run is refused (`WorkdirLockedError`, a `ConfigError`: exit 2) with
one line naming the holder's pid and host, unless the lock is stale:

- same host: the holder's pid is no longer running (the run crashed or was killed);
- another host (a shared file system; the pid cannot be checked from here), or a lock file that
  cannot be read: the file was not touched for `STALE_AFTER_S` seconds (the holder stopped
  beating: it crashed, or its machine went away).

A stale lock is taken over with a warning. A lock whose holder lives but is not an fgjax run (its
pid was reused after a crash) is not recognised: the error says to delete the file then.

Multi-process runs: only process 0 takes the lock (all processes of one run share the workdir);
the trainer tells the other processes whether it got it, so they stop together.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time

from fgjax import run as run_lib

LOCK_NAME = '.lock'
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


def check_writable(workdir: str) -> None:
  """Creates WORKDIR if needed and checks a file can be written there (ConfigError if not)."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise run_lib.ConfigError(f'workdir {workdir} is not writable: {type(e).__name__}: {e}') from e


class WorkdirLockedError(run_lib.ConfigError):
  """Another run holds the workdir."""


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # a process of another user
    return True
  return True


def read_holder(path: str) -> dict | None:
  """The lock file's JSON, or None when it cannot be read or parsed (being written, or torn)."""
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return None
  return holder if isinstance(holder, dict) else None


def stale_reason(holder: dict | None, age_s: float, host: str) -> str | None:
  """Why a lock is stale (a phrase), or None while its holder may still be running.

  `holder` is the lock's JSON (None: unreadable), `age_s` the seconds since the file was last
  touched, `host` this machine's name.
  """
  if holder is not None and holder.get('host') == host and isinstance(holder.get('pid'), int):
    return None if _pid_running(holder['pid']) else f'process {holder["pid"]} is not running'
  if age_s > STALE_AFTER_S:
    return f'not touched for {age_s:.0f}s (the holder beats every {HEARTBEAT_S:.0f}s)'
  return None


def _describe(holder: dict | None) -> str:
  if holder is None:
    return 'an unknown run (the lock file is unreadable)'
  return (f'pid {holder.get("pid", "?")} on host {holder.get("host", "?")} (started '
          f'{holder.get("started", "?")})')


class WorkdirLock:
  """`with WorkdirLock(workdir, log):` holds WORKDIR/.lock for the block (see the module doc).

  `acquire()` raises `WorkdirLockedError` naming the holder when another live run has it; a stale
  lock is taken over and `log` says so. `release()` removes the file if it is still this lock's.
  """

  def __init__(self, workdir: str, log=print):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.log = log
    self._mine = None  # the JSON text written, while held
    self._stop = threading.Event()
    self._beat = None

  def acquire(self) -> None:
    host = socket.gethostname()
    for _ in range(3):  # a stale lock taken over, or a race with another run starting
      text = json.dumps({'pid': os.getpid(), 'host': host, 'started': datetime.datetime.now(
          datetime.timezone.utc).isoformat(timespec='seconds')})
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = read_holder(self.path)
        try:
          age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:  # released meanwhile: try again
          continue
        why = stale_reason(holder, age, host)
        if why is None:
          raise WorkdirLockedError(
              f'workdir {os.path.dirname(self.path)} is in use by another training run: '
              f'{_describe(holder)}. Wait for it to end or choose another --workdir; if that run '
              f'is gone, delete {self.path}') from None
        self._take_over(holder, why)
        continue
      with os.fdopen(fd, 'w') as f:
        f.write(text)
      self._mine = text
      self._stop.clear()
      self._beat = threading.Thread(target=self._heartbeat, name='fgjax-workdir-lock',
                                    daemon=True)
      self._beat.start()
      return
    raise WorkdirLockedError(f'could not take {self.path}: other runs keep taking it; is another '
                             'training starting in this workdir?')

  def _take_over(self, holder: dict | None, why: str) -> None:
    """Remove a stale lock. It is first renamed aside (atomic), then checked to be the one judged
    stale: a run that took the lock in between gets it back."""
    aside = f'{self.path}.stale.{os.getpid()}'
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:  # another run removed it first
      return
    if read_holder(aside) != holder:
      try:
        os.link(aside, self.path)
      except OSError:
        pass
    else:
      self.log(f'WARNING: took over the stale lock {self.path} of {_describe(holder)}: {why}')
    os.remove(aside)

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:  # removed by hand: nothing left to keep alive
        return

  def release(self) -> None:
    if self._mine is None:
      return
    self._stop.set()
    if self._beat is not None:
      self._beat.join()
    try:
      with open(self.path) as f:
        if f.read() == self._mine:
          os.remove(self.path)
    except OSError:
      pass
    self._mine = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

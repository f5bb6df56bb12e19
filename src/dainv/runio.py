"""Run folders: atomic writes, the provenance record, checkpoints and the one-writer lock.

A run folder keeps what produced it (``config.yaml``, ``meta.json``: versions, device, git
commit, times) and what it produced (``metrics.jsonl``, ``checkpoints/``, ``eval/``). Every
file is written to a temporary name and renamed into place, so a process killed at any moment
leaves either the old or the new version — never half a file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dainv.errors import RunError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "remove_stale_temps",
    "write_json",
    "read_json",
    "write_metrics",
    "read_metrics",
    "environment",
    "git_commit",
    "now",
    "RunLock",
    "is_run_dir",
    "read_meta",
    "run_state",
    "prepare_run_dir",
    "begin_run",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _disk_error(path: Path, e: OSError) -> RunError:
    if e.errno == errno.ENOSPC:
        return RunError(f"no space left on device while writing {path}; free some disk space and resume")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunError(
            f"cannot write {path}: permission denied; choose a writable output folder (--out)"
        )
    return RunError(f"cannot write {path}: {e.strerror or e}")


_slow_saves = 0


def _test_slow_save(path: Path) -> None:
    """Test hook: ``DAINV_TEST_SLOW_SAVE=SECONDS[:N]`` sleeps between writing the temp file of the
    N-th and later checkpoints (``.pt``) of this process and renaming it, so that a test can kill
    the process inside that window deterministically."""
    global _slow_saves
    spec = os.environ.get("DAINV_TEST_SLOW_SAVE")
    if not spec or path.suffix != ".pt":
        return
    _slow_saves += 1
    seconds, _, nth = spec.partition(":")
    if _slow_saves >= int(nth or 1):
        import time

        time.sleep(float(seconds))


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[Any]:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _test_slow_save(path)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _disk_error(path, e) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def remove_stale_temps(run_dir: Path) -> None:
    """Delete temp files that a killed process left in a run folder (call with its lock held)."""
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    with _atomic(path, "w") as f:
        f.write(text)


def atomic_torch_save(obj: Any, path: Path) -> None:
    with _atomic(path, "wb") as f:
        torch.save(obj, f)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e}); the file is damaged") from None


def write_metrics(path: Path, records: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` whole (atomically) from the history held in the checkpoint."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{path}:{i} is not valid JSON; the file is damaged") from None
    return out


def git_commit() -> str | None:
    """Commit of the dainv source tree (suffix ``-dirty`` with uncommitted changes), if it is a checkout."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, machine and device, for a run's ``meta.json`` and benchmark records."""
    import numpy

    from dainv import __version__

    dev = torch.device(device) if device is not None else None
    info: dict[str, Any] = {
        "dainv": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }
    if dev is not None:
        info["device"] = str(dev)
        if dev.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(dev)
            info["cuda"] = torch.version.cuda
    return info


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a dainv run: ``meta.json``, the identity marker, is there.

    :func:`begin_run` writes ``config.yaml`` first and ``meta.json`` (atomically) last, so a
    folder with ``meta.json`` always has its config; one without it never started training.
    """
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "meta.json").is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock file in a run folder: one writer at a time.

    A lock left by a process that no longer runs on this host (killed, crashed) is stale and
    taken over; a live one makes the second writer fail with a clear message.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        """The record of the live process that holds the lock, or None (a stale lock is removed)."""
        if self.path.is_dir() and not self.path.is_symlink():
            raise RunError(
                f"{self.path} is a folder, not a dainv lock file; if no dainv process uses "
                f"{self.path.parent}, remove it (rmdir {self.path}) and run the command again"
            )
        try:
            other = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            other = {}
        if not isinstance(other, dict):
            other = {}
        pid, host = other.get("pid"), other.get("host")
        stale = isinstance(pid, int) and host == socket.gethostname() and not _pid_alive(pid)
        if stale or not other:  # its process is gone, or it was killed between open and write
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return None
        return other

    def _in_use(self, other: dict[str, Any]) -> RunError:
        return RunError(
            f"{self.path.parent} is in use by another dainv process (pid {other.get('pid')} on "
            f"{other.get('host')}, since {other.get('since')}); wait for it to finish, or if it is "
            f"gone, delete {self.path}"
        )

    def check(self) -> None:
        """Raise the 'in use' error if another live process holds the lock (without taking it)."""
        other = self._holder()
        if other is not None:
            raise self._in_use(other)

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._holder()
                if other is None:
                    continue
                raise self._in_use(other) from None
            except OSError as e:
                raise _disk_error(self.path, e) from None
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
            except OSError as e:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise _disk_error(self.path, e) from None
            self.held = True
            return
        raise RunError(f"could not take the lock {self.path}; delete it if no dainv process uses the run")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------- run-folder life cycle
#: Files a run folder holds before its identity marker ``meta.json`` is written.
_BEFORE_MARKER = {"config.yaml", "metrics.jsonl", ".lock"}


def read_meta(run_dir: Path) -> dict[str, Any]:
    """``RUN/meta.json`` as a dict; a damaged or non-object file gets a message saying what to do."""
    path = Path(run_dir) / "meta.json"
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise RunError(
            f"{path} is damaged: it holds a JSON {type(meta).__name__}, not the run record (an "
            f"object with 'status'); restore it, or start the run again with --force"
        )
    return meta


def _incomplete(path: Path) -> bool:
    """Created by a process killed before ``meta.json``: config (and empty metrics) only."""
    names = {p.name for p in path.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
    return "config.yaml" in names and "meta.json" not in names and names <= _BEFORE_MARKER


def run_state(path: Path) -> str:
    """What a would-be run folder holds, for tools that decide whether to start, resume or skip.

    Returns one of:

    * ``"missing"`` — nothing there (or an empty folder): safe to start;
    * ``"incomplete"`` — a run killed while its folder was being created (``config.yaml`` but no
      ``meta.json``, no checkpoint): nothing to lose, safe to restart from scratch;
    * ``"running"`` — a live dainv process holds its lock;
    * ``"interrupted"`` — stopped, killed or failed before the last epoch: ``--resume`` it;
    * ``"finished"`` — trained to its last epoch;
    * ``"foreign"`` — a file, or a non-empty folder that is not a dainv run: leave it alone.

    Raises :class:`RunError` when ``meta.json`` is damaged (the message says what to do).
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "foreign"
    if (path / ".lock").exists():
        try:
            RunLock(path).check()  # removes a stale lock
        except RunError:
            if (path / ".lock").is_dir():
                raise
            return "running"
    if not any(p.name != ".lock" for p in path.iterdir()):
        return "missing"
    if not is_run_dir(path):
        return "incomplete" if _incomplete(path) else "foreign"
    status = read_meta(path).get("status")
    return "finished" if status == "finished" else "interrupted"


def _check_name(run_dir: Path) -> None:
    try:
        limit = os.pathconf(run_dir.parent if run_dir.parent.exists() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in run_dir.parts:
        if len(os.fsencode(part)) > limit:
            raise RunError(
                f"run folder name too long: {part[:40]}… has {len(os.fsencode(part))} bytes, the "
                f"file system allows {limit} per folder name; choose a shorter --out"
            )


def _discard(run_dir: Path) -> None:
    """Move ``run_dir`` aside atomically (one rename), then delete it: after the rename no later
    command can read anything of the old run, even if this process is killed mid-delete."""
    import shutil
    import time

    trash = run_dir.parent / f".dainv-trash-{os.getpid()}-{time.time_ns()}"
    try:
        os.rename(run_dir, trash)
    except OSError as e:
        raise RunError(f"cannot move the old run {run_dir} aside for --force: {e.strerror}") from None
    shutil.rmtree(trash, ignore_errors=True)


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    """Make ``run_dir`` ready for a new run, or raise :class:`RunError` saying why not.

    An empty or missing folder is used as is; an incomplete one (see :func:`run_state`) is
    cleared; an existing run or a foreign folder is refused unless ``force``, which moves the
    whole old folder aside atomically before anything new is written.
    """
    run_dir = Path(run_dir)
    _check_name(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a folder; choose another --out")
    if (run_dir / ".lock").exists() or (run_dir / ".lock").is_symlink():
        RunLock(run_dir).check()  # a live writer (or a .lock folder): say so; a stale lock goes
    try:
        state = run_state(run_dir)
    except RunError:  # a damaged meta.json: --force starts again, otherwise say what to do
        if not force:
            raise
        state = "foreign"
    if state in ("finished", "interrupted") and not force:
        status = read_meta(run_dir).get("status")
        hint = (
            "it is finished"
            if state == "finished"
            else f"it is unfinished (status {status}); continue it with --resume {run_dir}"
        )
        raise RunError(
            f"run folder {run_dir} already holds a run: {hint}. Use another --out, "
            "or --force to start it again from scratch (its results are lost)"
        )
    if state == "foreign" and not force:
        raise RunError(f"{run_dir} exists and is not empty, and is not a dainv run; choose another --out")
    if state in ("finished", "interrupted", "foreign", "incomplete"):
        _discard(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create run folder {run_dir}: {e.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run folder {run_dir} is not writable; choose a writable --out")


def begin_run(run_dir: Path, config_yaml: str, meta: dict[str, Any]) -> None:
    """Write a new run's identity: ``config.yaml`` and empty metrics first, ``meta.json`` last.

    Each file is renamed into place, and ``meta.json`` (the marker :func:`is_run_dir` looks
    for) only once the others exist, so a kill in between leaves an ``"incomplete"`` folder.
    """
    atomic_write_text(Path(run_dir) / "config.yaml", config_yaml)
    write_metrics(Path(run_dir) / "metrics.jsonl", [])
    write_json(Path(run_dir) / "meta.json", meta)

"""Run folders (docs/architecture.md): atomic writes (a kill leaves old or new), the provenance record
(``meta.json``), the one-writer lock and the life cycle of a run folder."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy
import torch

from dainv import __version__
from dainv.errors import RunError

__all__ = [
    "atomic_write", "atomic_write_text", "remove_stale_temps", "remove_leftovers", "staging_folder",
    "swap_in", "move_into", "write_json", "read_json", "write_metrics", "read_metrics", "environment", "now", "RunLock",
    "is_run_dir", "read_meta", "incomplete_run", "run_state", "prepare_run_dir", "begin_run",
]  # fmt: skip

_UMASK = os.umask(0)
os.umask(_UMASK)
_slow_saves = 0


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _disk_error(path: Path, e: OSError) -> RunError:
    if e.errno == errno.ENOSPC:
        return RunError(f"no space left on device while writing {path}; free some disk space and resume")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunError(f"cannot write {path}: permission denied; choose a writable output folder (--out)")
    return RunError(f"cannot write {path}: {e.strerror or e}")


class _KeepsWriteError:
    """A file that remembers its failed write: ``torch.save`` turns a write's ``OSError``
    (``ENOSPC``) into ``RuntimeError: [enforce fail …] unexpected pos``, hiding the cause."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """The one atomic writer: ``write(file)`` fills a temp file beside ``path``, synced and renamed over it; a full
    disk is a RunError naming the file. Test hook ``DAINV_TEST_SLOW_SAVE=SECONDS[:N]``: slow N-th and later ``.pt``."""
    global _slow_saves
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as raw:
            f = _KeepsWriteError(raw)
            try:
                write(f)
            except RuntimeError:  # torch.save's word for a failed write: raise the write's error
                if f.error is None:
                    raise
                raise f.error from None
            raw.flush()
            os.fsync(raw.fileno())
        if (spec := os.environ.get("DAINV_TEST_SLOW_SAVE")) and path.suffix == ".pt":
            _slow_saves += 1
            seconds, _, nth = spec.partition(":")
            if _slow_saves >= int(nth or 1):
                time.sleep(float(seconds))
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _disk_error(path, e) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temps(run_dir: Path) -> None:
    """Delete temp files that a killed process left in a run folder (call with its lock held)."""
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _remove_dead(folder: Path, pattern: str) -> None:
    """Delete what killed processes left: folders matching ``pattern`` whose pid (group 1) no longer runs here."""
    with contextlib.suppress(OSError):
        for p in Path(folder).iterdir():
            if (m := re.match(pattern, p.name)) and p.is_dir():
                try:
                    os.kill(int(m.group(1)), 0)
                except ProcessLookupError:
                    shutil.rmtree(p, ignore_errors=True)
                except OSError:  # e.g. EPERM: it runs, owned by someone else
                    pass


def remove_leftovers(target: Path) -> None:
    """Delete what killed processes left beside ``target`` while replacing it whole."""
    target = Path(target)
    _remove_dead(target.parent, rf"^\.{re.escape(target.name)}\.(?:tmp|old)-(\d+)-")


@contextlib.contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A new hidden folder ``.NAME.tmp-PID-…`` beside ``target`` to build its replacement in (then :func:`swap_in`)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    except OSError as e:
        raise _disk_error(target, e) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_in(new: Path, target: Path) -> None:
    """Rename the folder ``new`` over ``target``: an old one is renamed aside (``.NAME.old-PID-…``)
    and deleted after, so between the two renames neither exists — never a mix of old and new."""
    new, target, old = Path(new), Path(target), None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(new, target)
    except OSError as e:
        raise _disk_error(target, e) from None
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def move_into(src: Path, dst: Path) -> None:
    """Rename the finished file ``src`` over ``dst`` (same file system), as one step."""
    try:
        os.replace(src, dst)
    except OSError as e:
        raise _disk_error(Path(dst), e) from None


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


def read_metrics(path: Path, partial: bool = False) -> list[dict | None]:
    """``metrics.jsonl``'s records (``[]`` without the file); a damaged line is a RunError, or
    with ``partial`` (a run still writing may leave a partial last line) ``None``."""
    out: list[dict | None] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace" if partial else "strict") if Path(path).exists() else ""
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if not partial:
                    raise RunError(f"{path}:{i} is not valid JSON; the file is damaged") from None
                out.append(None)
    return out


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, machine and device, for a run's ``meta.json`` and benchmark records."""
    cpu = commit = None
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), None)  # fmt: skip
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # the dainv source tree's commit, if a checkout
        git = functools.partial(subprocess.run, cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
        head = git(["git", "rev-parse", "HEAD"])
        if head.returncode == 0:
            dirty = git(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
            commit = head.stdout.strip() + ("-dirty" if dirty else "")  # uncommitted changes
    info: dict[str, Any] = {
        "dainv": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(), "host": socket.gethostname(),
        "cpu": cpu if cpu is not None else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "git_commit": commit,
    }  # fmt: skip
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        if dev.type == "cuda":
            info |= {"gpu": torch.cuda.get_device_name(dev), "cuda": torch.version.cuda}
    return info


class RunLock:
    """One writer at a time: the OS lock (``flock``) on ``RUN/.lock``, held by a descriptor open for its lifetime. The
    kernel drops it when that closes (however the process ends): a dead process's lock never blocks, a live one is
    never taken over. The file holds the holder's pid, host and start time."""

    #: Tries, 10 ms apart, before a lock counts as in use (:meth:`holder` holds it an instant to look).
    BUSY_TRIES = 5

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self, create: bool) -> int | None:
        """A descriptor on the lock file; None when it does not exist (and ``create`` is false)."""
        if self.path.is_dir() and not self.path.is_symlink():
            raise RunError(f"{self.path} is a folder, not a dainv lock file; if no dainv process uses "
                           f"{self.path.parent}, remove it (rmdir {self.path}) and run the command again")  # fmt: skip
        # O_NOFOLLOW: a .lock planted as a link must not make dainv truncate the file it points to
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                return os.open(self.path, flags | os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
            except PermissionError:
                if create:
                    raise
                return os.open(self.path, flags | os.O_RDONLY)  # another user's run: flock works read-only
        except FileNotFoundError:
            if create:
                raise RunError(f"cannot create the lock {self.path}: its folder does not exist") from None
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunError(f"{self.path} is a symbolic link, not a dainv lock file; if no dainv process "
                               f"uses {self.path.parent}, remove it (rm {self.path}) and run the command again") from None  # fmt: skip
            raise _disk_error(self.path, e) from None

    def _lock(self, fd: int) -> str:
        """Take the OS lock on ``fd`` without waiting: ``"ours"``, ``"busy"`` (another open file
        holds it) or ``"gone"`` (won on a file a releaser has since unlinked: open it again)."""
        import fcntl  # POSIX only
        for i in range(self.BUSY_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if i == self.BUSY_TRIES - 1:
                    return "busy"
                time.sleep(0.01)
            except OSError as e:
                raise RunError(f"cannot lock {self.path}: {e.strerror or e}") from None
        # a releaser unlinks the file holding the lock: one won on a file no longer at the path guards nothing
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(self.path, follow_symlinks=False), os.fstat(fd)):
                return "ours"
        return "gone"

    def _record(self, fd: int) -> dict[str, Any]:
        """The holder's pid, host and start time as written in the file ({} if unreadable)."""
        with contextlib.suppress(OSError, ValueError):
            if isinstance(other := json.loads(os.pread(fd, 4096, 0) or b"{}"), dict):
                return other
        return {}

    def holder(self) -> dict[str, Any] | None:
        """The record of the process that holds the lock, or None when none does (a lock file
        left by a process that ended is removed). Does not take the lock."""
        for _ in range(3):
            fd = self._open(create=False)
            if fd is None:
                return None
            try:
                state = self._lock(fd)
                if state == "busy":
                    return self._record(fd)
                if state == "ours":  # nobody held it: left by a process that ended
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                    return None
            finally:
                os.close(fd)
        return None

    def _in_use(self, other: dict[str, Any]) -> RunError:
        return RunError(f"{self.path.parent} is in use by another dainv process (pid {other.get('pid', '?')} on "
                        f"{other.get('host', '?')}, since {other.get('since', '?')}); wait for it to finish "
                        "(its lock goes away with the process)")  # fmt: skip

    def check(self) -> None:
        """Raise the 'in use' error if another process holds the lock (without taking it)."""
        if (other := self.holder()) is not None:
            raise self._in_use(other)

    def acquire(self) -> None:
        """Take the lock, or raise the 'in use' error naming the process that holds it."""
        for _ in range(20):
            fd = self._open(create=True)
            state = self._lock(fd)
            if state == "ours":
                break
            other = self._record(fd)
            os.close(fd)
            if state == "busy":
                raise self._in_use(other)
        else:
            raise RunError(f"could not take the lock {self.path}; is another dainv process starting on it?")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError as e:
            os.close(fd)
            raise _disk_error(self.path, e) from None
        self._fd = fd

    def release(self) -> None:
        """Remove the file while it is still ours, then close (which frees the lock); a lock not
        held, or whose file was replaced by another holder's, is left alone."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.stat(self.path, follow_symlinks=False), os.fstat(fd)):
                    os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------- run-folder life cycle
#: Files a run folder holds before its identity marker ``meta.json`` is written.
_BEFORE_MARKER = {"config.yaml", "metrics.jsonl", ".lock"}
_TRASH = ".dainv-trash-"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a dainv run: its identity marker ``meta.json`` (written after ``config.yaml``) is there."""
    return (Path(path) / "config.yaml").is_file() and (Path(path) / "meta.json").is_file()


def incomplete_run(path: Path) -> bool:
    """The one detector of a run folder a kill left between ``config.yaml`` and ``meta.json`` (nothing to resume); not
    with a damaged ``meta.json``, which may hold a trained run (:func:`read_meta` refuses it, saying what to do)."""
    return (Path(path) / "config.yaml").is_file() and not os.path.lexists(Path(path) / "meta.json")


def read_meta(run_dir: Path, strict: bool = True) -> dict[str, Any]:
    """``RUN/meta.json``: the one reader and check of the run record. One that is not a JSON object is damaged, not absent:
    the folder may hold a trained run, so it is refused. ``strict=False`` (to read an entry): ``{}`` instead."""
    if not strict:
        with contextlib.suppress(RunError):
            return read_meta(run_dir)
        return {}
    path = Path(run_dir) / "meta.json"
    try:
        meta = json.loads(path.read_bytes())
        why = f"it holds a JSON {type(meta).__name__}"
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except OSError as e:
        raise RunError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        meta, why = None, f"it is not valid JSON ({e})"
    if not isinstance(meta, dict):
        raise RunError(f"{path} is damaged: {why}, not the run record (an object with 'status'); restore "
                       f"it, or start the run again with --force (its checkpoints and results are lost)")  # fmt: skip
    return meta


def run_state(path: Path) -> str:
    """What a would-be run folder holds: ``"missing"``, ``"incomplete"`` (:func:`incomplete_run`: safe to restart),
    ``"running"`` (a live process holds its lock), ``"interrupted"``, ``"finished"`` or ``"foreign"``."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "foreign"
    if os.path.lexists(path / ".lock") and RunLock(path).holder() is not None:
        return "running"  # (a lock file left by a process that ended is removed)
    entries = [p.name for p in path.iterdir()]
    if not any(n != ".lock" for n in entries):
        return "missing"
    if not is_run_dir(path):
        names = {n for n in entries if not (n.startswith(".") and n.endswith(".tmp"))}
        return "incomplete" if incomplete_run(path) and names <= _BEFORE_MARKER else "foreign"
    return "finished" if read_meta(path).get("status") == "finished" else "interrupted"


def _check_name(run_dir: Path) -> None:
    try:
        limit = os.pathconf(run_dir.parent if run_dir.parent.exists() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in run_dir.parts:
        if len(os.fsencode(part)) > limit:
            raise RunError(f"run folder name too long: {part[:40]}… has {len(os.fsencode(part))} bytes, the "
                           f"file system allows {limit} per folder name; choose a shorter --out")  # fmt: skip


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    """Make ``run_dir`` ready for a new run, or raise :class:`RunError` saying why not: an empty or missing folder
    is used, an incomplete one cleared, another refused unless ``force``: renamed aside (``.dainv-trash-*``)."""
    run_dir = Path(run_dir)
    _check_name(run_dir)
    _remove_dead(run_dir.parent, rf"^{re.escape(_TRASH)}(\d+)-\d+$")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a folder; choose another --out")
    if os.path.lexists(run_dir / ".lock"):
        RunLock(run_dir).check()  # a live writer (or a .lock folder): say so; a dead one's goes
    try:
        state = run_state(run_dir)
    except RunError:  # a damaged meta.json: --force starts again, otherwise say what to do
        if not force:
            raise
        state = "foreign"
    if state in ("finished", "interrupted") and not force:
        status = read_meta(run_dir).get("status")
        hint = "it is finished" if state == "finished" else (
            f"it is unfinished (status {status}); continue it with --resume {run_dir}")  # fmt: skip
        raise RunError(f"run folder {run_dir} already holds a run: {hint}. Use another --out, "
                       "or --force to start it again from scratch (its results are lost)")  # fmt: skip
    if state == "foreign" and not force:
        raise RunError(f"{run_dir} exists and is not empty, and is not a dainv run; choose another --out")
    if state in ("finished", "interrupted", "foreign", "incomplete"):
        trash = run_dir.parent / f"{_TRASH}{os.getpid()}-{time.time_ns()}"
        try:
            os.rename(run_dir, trash)
        except OSError as e:
            raise RunError(f"cannot move the old run {run_dir} aside for --force: {e.strerror}") from None
        shutil.rmtree(trash, ignore_errors=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create run folder {run_dir}: {e.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run folder {run_dir} is not writable; choose a writable --out")


def begin_run(run_dir: Path, config_yaml: str, meta: dict[str, Any]) -> None:
    """Write a new run's identity: ``config.yaml`` and empty metrics first, ``meta.json`` (the
    marker :func:`is_run_dir` looks for) last, so a kill in between leaves an incomplete folder."""
    atomic_write_text(Path(run_dir) / "config.yaml", config_yaml)
    write_metrics(Path(run_dir) / "metrics.jsonl", [])
    write_json(Path(run_dir) / "meta.json", meta)

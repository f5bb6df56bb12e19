"""Checksum manifests next to the data (``FOLDER.sha256`` / ``.md5``), checked before use; a success
is remembered by path, size, times and inode (``DAINV_VERIFY=always`` re-hashes, ``off`` skips)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

from dainv.data.core import user_cache_dir
from dainv.errors import DataError, RunError
from dainv.runio import atomic_write

_ALGOS = {".sha256": ("sha256", 64), ".md5": ("md5", 32)}
_LINE = re.compile(r"^([0-9a-fA-F]+) [ *](.+)$")


def file_digest(path: Path, algo: str) -> str:
    """The hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse(manifest: Path, fix: str) -> list[tuple[str, Path]]:
    algo, width = _ALGOS[manifest.suffix]
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read checksum manifest {manifest}: {exc}.\n{fix}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line.rstrip("\r"))
        if not m or len(m.group(1)) != width:
            raise DataError(f"Checksum manifest {manifest}, line {number}, is not a {algo}sum line ('<{width} hex "
                            f"digits>  <path>'): {line[:80]!r}.\nFix or delete the manifest.")  # fmt: skip
        entries.append((m.group(1).lower(), manifest.parent / m.group(2)))
    return entries


def _remembered(mode: str) -> tuple[Path | None, dict]:
    """The file of remembered verifications (None: no home folder) and its records."""
    try:
        path = user_cache_dir() / "verified.json"
    except (RuntimeError, KeyError):
        return None, {}
    cache = {}
    if mode != "always":
        with contextlib.suppress(OSError, ValueError):
            cache = json.loads(path.read_text(encoding="utf-8"))
    return path, cache if isinstance(cache, dict) else {}


def verify_manifests(target: Path, fix: str = "") -> list[str]:
    """Notes on ``target``'s manifests, or a :class:`DataError` naming the file, digests and ``fix``."""
    fix = fix or f"Restore {target} from where it came from (copy it again)."
    manifests = [m for ext in _ALGOS if (m := target.with_name(target.name + ext)).is_file()]
    mode = os.environ.get("DAINV_VERIFY", "").strip().lower()
    if not manifests or mode in ("off", "0", "no", "false"):
        return []
    cache_path, cache = _remembered(mode)
    hashed = checked = 0
    for manifest in manifests:
        algo = _ALGOS[manifest.suffix][0]
        for expected, path in _parse(manifest, fix):
            checked += 1
            try:
                st = path.stat()
            except OSError as exc:
                raise DataError(f"{path} is listed in the checksum manifest {manifest} but cannot be read "
                                f"({exc.strerror or exc}).\n{fix}") from None  # fmt: skip
            key = f"{algo}:{path.absolute()}"
            # ctime and inode change when a file is replaced, even by a tool that restores the mtime
            record = [expected, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            if cache.get(key) == record:
                continue
            try:
                actual = file_digest(path, algo)
            except OSError as exc:
                raise DataError(f"Cannot read {path} to verify its checksum: {exc}.\n{fix}") from None
            hashed += 1
            if actual != expected:
                raise DataError(f"{path} does not match its {algo} checksum in {manifest}: expected {expected}, "
                                f"got {actual}. The file is damaged or was changed.\n{fix}\n(If you changed it on "
                                f"purpose, update or delete {manifest.name}.)")  # fmt: skip
            cache[key] = record
    if hashed and cache_path is not None:
        body = json.dumps(cache, indent=0, sort_keys=True).encode()
        with contextlib.suppress(RunError):  # no writable cache: verify again next time
            atomic_write(cache_path, lambda f: f.write(body))
    names = ", ".join(m.name for m in manifests)
    how = f"{hashed} hashed" if hashed else "all unchanged since their last verification"
    return [f"checksums: {checked} file(s) of {target.name} match {names} ({how})"]

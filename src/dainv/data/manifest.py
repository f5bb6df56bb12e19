"""Checksum manifests next to the data: ``FOLDER.sha256`` / ``FOLDER.md5`` (or ``FILE.sha256``).

The format is the one ``sha256sum`` / ``md5sum`` write and ``sha256sum -c`` reads: one
``HEXDIGEST  PATH`` line per file (``HEXDIGEST *PATH`` in binary mode), ``PATH`` relative to the
manifest's folder. When such a manifest is present, every file it lists is hashed and compared
before the data is used. A successful verification is remembered in a small JSON file in the
user cache folder, keyed by the file's absolute path, size, modification and change times and
inode, so 180 MB of CIFAR is hashed once, not on every run; set ``DAINV_VERIFY=always`` to re-hash every time or
``DAINV_VERIFY=off`` to skip the check.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from dainv.data.core import user_cache_dir
from dainv.errors import DataError, RunError
from dainv.runio import atomic_write

__all__ = ["find_manifests", "verify_manifests"]

_ALGOS = {".sha256": ("sha256", 64), ".md5": ("md5", 32)}
_LINE = re.compile(r"^([0-9a-fA-F]+) [ *](.+)$")
_CACHE_NAME = "verified.json"


def find_manifests(target: Path) -> list[Path]:
    """The manifests that cover ``target``: ``target.sha256`` and ``target.md5`` where present."""
    return [target.with_name(target.name + ext) for ext in _ALGOS if
            target.with_name(target.name + ext).is_file()]  # fmt: skip


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
            raise DataError(
                f"Checksum manifest {manifest}, line {number}, is not a {algo}sum line "
                f"('<{width} hex digits>  <path>'): {line[:80]!r}.\nFix or delete the manifest."
            )
        entries.append((m.group(1).lower(), manifest.parent / m.group(2)))
    return entries


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_cache(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def verify_manifests(target: Path, fix: str) -> list[str]:
    """Check ``target`` (a folder or file) against its manifests; returns notes for the user.

    ``fix`` is appended to error messages (how to restore a damaged file). Raises
    :class:`DataError` naming the file, the manifest, both digests and the fix when a listed
    file is missing, unreadable or differs.
    """
    manifests = find_manifests(target)
    mode = os.environ.get("DAINV_VERIFY", "").strip().lower()
    if not manifests or mode in ("off", "0", "no", "false"):
        return []
    try:
        cache_path: Path | None = user_cache_dir() / _CACHE_NAME
    except (RuntimeError, KeyError):  # no home folder: verify every time
        cache_path = None
    cache = {} if mode == "always" or cache_path is None else _load_cache(cache_path)
    hashed = checked = 0
    for manifest in manifests:
        algo = _ALGOS[manifest.suffix][0]
        for expected, path in _parse(manifest, fix):
            checked += 1
            try:
                st = path.stat()
            except OSError as exc:
                raise DataError(
                    f"{path} is listed in the checksum manifest {manifest} but cannot be read "
                    f"({exc.strerror or exc}).\n{fix}"
                ) from None
            key = f"{algo}:{path.absolute()}"
            # ctime and inode change when a file is rewritten or replaced, even by a tool
            # that restores the modification time
            record = [expected, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            if cache.get(key) == record:
                continue
            try:
                actual = _digest(path, algo)
            except OSError as exc:
                raise DataError(
                    f"Cannot read {path} to verify its checksum: {exc}.\n{fix}"
                ) from None
            hashed += 1
            if actual != expected:
                raise DataError(
                    f"{path} does not match its {algo} checksum in {manifest}: expected "
                    f"{expected}, got {actual}. The file is damaged or was changed.\n{fix}\n"
                    f"(If you changed it on purpose, update or delete {manifest.name}.)"
                )
            cache[key] = record
    if hashed and cache_path is not None:
        try:
            body = json.dumps(cache, indent=0, sort_keys=True).encode()
            atomic_write(cache_path, lambda f: f.write(body))
        except RunError:
            pass  # no writable cache: verify again next time
    names = ", ".join(m.name for m in manifests)
    how = f"{hashed} hashed" if hashed else "all unchanged since their last verification"
    return [f"checksums: {checked} file(s) of {target.name} match {names} ({how})"]

"""All of CIFAR-10 as two xz parts of at most 55 MB each, for a lent GPU session (the ferry).

A lent GPU machine takes at most 64 MiB (67.1 MB) of files per command, the repository's working
tree included, so the 184 MB of CIFAR-10 cannot travel in one command (``cifar_subset.py`` sends
the first 18,000 + 2,000 images instead). ``pack`` makes a lossless pack of all four arrays
(``x_train`` (50000, 32, 32, 3), ``y_train``, ``x_test`` (10000, 32, 32, 3), ``y_test``; images
NHWC uint8 and labels int64, the layout ``cifar_subset.py`` writes and ``data.dataset=npz:PATH``
reads). Each image is coded as residuals of a predictor, in bytes that xz (LZMA2) then squeezes:

* colour: G, (R - G + 128) mod 256, (B - G + 128) mod 256 (a reversible colour transform);
* each plane: the MED / LOCO-I predictor (the median of left, up and left + up - up-left; the
  first row predicts from the left, the first column from above, the first pixel is 128);
* residuals mod 256, folded to 0, -1, 1, -2, ... -> 0, 1, 2, 3, ... and stored plane after
  plane (all images' first planes, then the second, then the third).

That costs about 4.3 bits per channel value (plain xz: about 6.1, three parts), so all of
CIFAR-10 goes as two parts. ``PACKDIR/manifest.json`` has the format version, the predictor, each
array's shape, dtype and SHA-256 (of its C-order bytes) and each part's size and SHA-256.
``unpack`` checks every part before decoding and every array after it; ``verify`` does the
same and writes nothing (``--parts-only``: only the parts that are there, naming those missing).
Only the standard library and numpy are needed to unpack (``pack`` reads CIFAR-10 with dainv).

On the CPU machine (``.gpupack/`` is git-ignored; under a minute on one core)::

    PYTHONPATH=src .venv/bin/python benchmarks/cifar_pack.py pack .gpupack --root "$DAINV_DATA"

Two parts and the manifest cannot travel together under 64 MiB, so a GPU session carries them in
two commands, each copying what it brought out of the repository's copy (a carried path is gone
in the next call) into a folder that lives as long as the machine stays allocated:

1. ``run`` with carry ``[".gpupack/manifest.json", ".gpupack/pack.xz.001"]``::

       mkdir -p /tmp/ferry && cp .gpupack/* /tmp/ferry/ && \\
       python3 benchmarks/cifar_pack.py verify /tmp/ferry --parts-only

2. ``run`` with carry ``[".gpupack/manifest.json", ".gpupack/pack.xz.002"]`` (while the machine
   is still warm: a fresh machine has lost part 1, and ``verify``/``unpack`` say so)::

       mkdir -p /tmp/ferry && cp .gpupack/* /tmp/ferry/ && \\
       python3 benchmarks/cifar_pack.py unpack /tmp/ferry /tmp/ferry/cifar10.npz && \\
       <the job> --set data.dataset=npz:/tmp/ferry/cifar10.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from dainv.checkpoint import file_digest  # the one file SHA-256

FORMAT, VERSION = "dainv-cifar-pack", 1
KEYS = ("x_train", "y_train", "x_test", "y_test")
MANIFEST = "manifest.json"
PART = "pack.xz.{:03d}"
MB = 1_000_000
PREDICTOR = {
    "name": "rct-med-zigzag",
    "colour": "C=3: planes G, (R-G+128) mod 256, (B-G+128) mod 256 (stored order R', G, B')",
    "plane": "MED/LOCO-I: median(left, up, left+up-upleft); row 0: left; column 0: up; (0,0): 128",
    "residual": "(x - prediction) mod 256 as signed s in [-128, 127], stored 2s (s >= 0) or -2s-1",
    "order": "(C, N, H, W): every image's first plane, then the second, then the third",
}
# Normal mode with a shallow hash-chain match finder: residuals repeat little, so a deep match
# search costs 4x the time for nothing; lc=4 lets the literal coder see the previous residual's
# size. ~4.3 bits per channel value.
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 4, "lp": 0, "pb": 0,
            "mf": lzma.MF_HC3, "nice_len": 8, "depth": 1}]  # fmt: skip
CHUNK = 10_000  # images coded at a time (bounds the memory of the int16 temporaries)


class PackError(Exception):
    """A pack that is incomplete, damaged or not one this script wrote."""


def sha256_of(a: np.ndarray) -> str:
    """The SHA-256 of an array's bytes in C order (its dtype as recorded in the manifest)."""
    return hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).hexdigest()


# --- the predictor -------------------------------------------------------------------------


def _med(p: np.ndarray) -> np.ndarray:
    """The prediction of every pixel of int16 planes ``(..., H, W)`` from its original neighbours."""
    a, b, c = (np.zeros_like(p) for _ in range(3))
    a[..., :, 1:], b[..., 1:, :], c[..., 1:, 1:] = p[..., :, :-1], p[..., :-1, :], p[..., :-1, :-1]
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    pred = np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))
    pred[..., 0, :], pred[..., :, 0] = a[..., 0, :], b[..., :, 0]
    pred[..., 0, 0] = 128
    return pred


def _med_at(rec: np.ndarray, i: int, j: int) -> np.ndarray:
    """The same prediction for pixel (i, j) of decoded planes ``rec`` (H, W, M), from rows < i
    and row i's pixels < j: the decoder's half of :func:`_med`."""
    if i == 0:
        return rec[0, j - 1] if j else np.int16(128)
    if j == 0:
        return rec[i - 1, 0]
    a, b, c = rec[i, j - 1], rec[i - 1, j], rec[i - 1, j - 1]
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def _colour_planes(x: np.ndarray) -> np.ndarray:
    """NHWC uint8 -> int16 planes (C, N, H, W), colour-transformed when C = 3."""
    p = x.transpose(3, 0, 1, 2).astype(np.int16)
    if p.shape[0] == 3:
        p[0] = (p[0] - p[1] + 128) & 255
        p[2] = (p[2] - p[1] + 128) & 255
    return p


def _images(p: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_colour_planes`: int16 planes (C, N, H, W) -> NHWC uint8."""
    if p.shape[0] == 3:
        p[0] = (p[0] + p[1] - 128) & 255
        p[2] = (p[2] + p[1] - 128) & 255
    return np.ascontiguousarray(p.transpose(1, 2, 3, 0).astype(np.uint8))


def encode_images(x: np.ndarray) -> np.ndarray:
    """NHWC uint8 images -> folded residual bytes, uint8 (C, N, H, W)."""
    n, h, w, ch = x.shape
    out = np.empty((ch, n, h, w), np.uint8)
    for s in range(0, n, CHUNK):
        p = _colour_planes(x[s : s + CHUNK])
        r = ((p - _med(p) + 128) & 255) - 128  # signed residual in [-128, 127]
        out[:, s : s + CHUNK] = np.where(r >= 0, 2 * r, -2 * r - 1)
    return out


def decode_images(z: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode_images`: uint8 (C, N, H, W) -> NHWC uint8 images."""
    ch, n, h, w = z.shape
    x = np.empty((n, h, w, ch), np.uint8)
    for s in range(0, n, CHUNK):
        zc = z[:, s : s + CHUNK].astype(np.int16)
        m = zc.shape[1]
        res = np.ascontiguousarray(((zc >> 1) ^ -(zc & 1)).transpose(2, 3, 0, 1)).reshape(h, w, -1)
        rec = np.empty_like(res)
        for i in range(h):
            for j in range(w):
                rec[i, j] = (_med_at(rec, i, j) + res[i, j]) & 255
        x[s : s + m] = _images(rec.reshape(h, w, ch, m).transpose(2, 3, 0, 1))
    return x


# --- pack ------------------------------------------------------------------------------------


def load_cifar10(root: str | Path | None) -> dict[str, np.ndarray]:
    """All of CIFAR-10 as ``cifar_subset.py`` writes it: NHWC uint8 images, int64 labels."""
    from dainv.data import load_dataset  # only packing needs dainv (and torch)

    d = load_dataset("cifar10", root, download=False)
    return {k: (v.permute(0, 2, 3, 1) if k.startswith("x") else v).contiguous().numpy()
            for k, v in ((k, getattr(d, k)) for k in KEYS)}  # fmt: skip


def _segments(arrays: dict[str, np.ndarray]):
    """(manifest entry, bytes) per array, in :data:`KEYS` order, with offsets in the payload."""
    offset = 0
    for name in KEYS:
        a = np.ascontiguousarray(arrays[name])
        image = a.ndim == 4 and a.dtype == np.uint8 and a.shape[3] in (1, 3)
        data = (encode_images(a) if image else a).reshape(-1).view(np.uint8)
        entry = {"name": name, "shape": list(a.shape), "dtype": a.dtype.str, "sha256": sha256_of(a),
                 "encoding": PREDICTOR["name"] if image else "raw", "offset": offset,
                 "nbytes": data.nbytes}  # fmt: skip
        offset += data.nbytes
        yield entry, data


def _write_parts(blob: bytes, outdir: Path, max_part_bytes: int) -> list[dict]:
    """Split ``blob`` into as few parts as fit ``max_part_bytes``, sized evenly; write them."""
    n = max(1, math.ceil(len(blob) / max_part_bytes))
    size = math.ceil(len(blob) / n)
    parts = []
    for k in range(n):
        chunk = blob[k * size : (k + 1) * size]
        path = outdir / PART.format(k + 1)
        path.write_bytes(chunk)
        parts.append(
            {"file": path.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()}
        )
    return parts


def pack(arrays: dict[str, np.ndarray], outdir: Path, max_part_bytes: int = 55 * MB) -> dict:
    """Write ``arrays`` (the four :data:`KEYS`) to ``outdir`` as xz parts + ``manifest.json``;
    returns the manifest."""
    if max_part_bytes < 1:
        raise PackError(f"the largest part must be at least 1 byte (got {max_part_bytes})")
    outdir.mkdir(parents=True, exist_ok=True)
    for old in [*outdir.glob("pack.xz.*"), outdir / MANIFEST]:
        old.unlink(missing_ok=True)  # a stale part of an earlier pack would not be in the manifest
    t0 = time.perf_counter()
    comp, entries, blobs = lzma.LZMACompressor(lzma.FORMAT_XZ, filters=FILTERS), [], []
    for entry, data in _segments(arrays):
        entries.append(entry)
        blobs.append(comp.compress(data))
    blob = b"".join([*blobs, comp.flush()])
    values = sum(math.prod(e["shape"]) for e in entries if e["name"].startswith("x"))
    manifest = {
        "format": FORMAT, "version": VERSION, "layout": "x_*: NHWC uint8; y_*: as given (int64)",
        "predictor": PREDICTOR, "compression": {"container": "xz", "filters": _filters_json()},
        "arrays": entries, "payload_bytes": sum(e["nbytes"] for e in entries),
        "compressed_bytes": len(blob), "bits_per_channel": round(8 * len(blob) / max(values, 1), 4),
        "max_part_bytes": max_part_bytes, "parts": _write_parts(blob, outdir, max_part_bytes),
        "pack_seconds": round(time.perf_counter() - t0, 2),
    }  # fmt: skip
    (outdir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _filters_json() -> list[dict]:
    names = {lzma.MF_HC3: "hc3", lzma.MF_HC4: "hc4", lzma.MF_BT4: "bt4"}
    return [{**f, "id": "lzma2", "mf": names.get(f["mf"], f["mf"])} for f in FILTERS]


# --- unpack / verify -------------------------------------------------------------------------


def read_manifest(packdir: Path) -> dict:
    path = packdir / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackError(f"cannot read {path}: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != VERSION:
        raise PackError(f"{path} is not a {FORMAT} version {VERSION} manifest")
    return m


def check_parts(packdir: Path, manifest: dict, *, allow_missing: bool = False) -> list[str]:
    """Check each part's size and SHA-256; returns the names of the missing parts (an error
    unless ``allow_missing``)."""
    missing = []
    for k, part in enumerate(manifest["parts"], 1):
        path, where = (
            packdir / part["file"],
            f"part {k} of {len(manifest['parts'])} ({part['file']})",
        )
        if not path.is_file():
            missing.append(part["file"])
            continue
        got = file_digest(path)
        if got != part["sha256"] or path.stat().st_size != part["bytes"]:
            raise PackError(
                f"{where} is damaged: SHA-256 expected {part['sha256']}, got {got} "
                f"({path.stat().st_size} bytes, expected {part['bytes']}). Copy it again."
            )
    if missing and not allow_missing:
        raise PackError(f"{packdir} lacks {', '.join(missing)} (carry it, then copy it there)")
    return missing


def _payload(packdir: Path, manifest: dict) -> np.ndarray:
    """The decompressed payload of the (checked) parts, as one uint8 buffer."""
    out, pos = np.empty(manifest["payload_bytes"], np.uint8), 0
    dec = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    try:
        for part in manifest["parts"]:
            data = dec.decompress((packdir / part["file"]).read_bytes())
            if pos + len(data) > out.size:
                raise PackError("the parts decompress to more bytes than the manifest says")
            out[pos : pos + len(data)] = np.frombuffer(data, np.uint8)
            pos += len(data)
    except lzma.LZMAError as exc:
        raise PackError(f"the parts do not decompress: {exc}") from None
    if pos != out.size or not dec.eof:
        raise PackError(f"the parts decompress to {pos} bytes, the manifest says {out.size}")
    return out


def unpack(packdir: Path) -> dict[str, np.ndarray]:
    """Check the parts, decode every array and check its SHA-256; returns the arrays."""
    manifest = read_manifest(packdir)
    check_parts(packdir, manifest)
    payload, arrays = _payload(packdir, manifest), {}
    for e in manifest["arrays"]:
        data = payload[e["offset"] : e["offset"] + e["nbytes"]]
        shape, dtype = tuple(e["shape"]), np.dtype(e["dtype"])
        if e["encoding"] == "raw":
            a = data.copy().view(dtype).reshape(shape)
        elif e["encoding"] == PREDICTOR["name"]:
            a = decode_images(data.reshape(shape[3], shape[0], shape[1], shape[2]))
        else:
            raise PackError(f"array {e['name']}: unknown encoding {e['encoding']!r}")
        got = sha256_of(a)
        if got != e["sha256"]:
            raise PackError(
                f"array {e['name']} decodes wrong: SHA-256 expected {e['sha256']}, got {got}"
            )
        arrays[e["name"]] = a
    return arrays


def write_npz(arrays: dict[str, np.ndarray], out: Path) -> None:
    """``numpy.savez`` the arrays to ``out`` (written beside it, then renamed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, out)


# --- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="pack all of CIFAR-10 into OUTDIR")
    a.add_argument("outdir", type=Path)
    a.add_argument(
        "--root", default=os.environ.get("DAINV_DATA"), help="folder holding cifar-10-batches-py/"
    )
    a.add_argument(
        "--max-part-mb", type=float, default=55.0, help="largest part, MB (10^6 bytes; default 55)"
    )
    a = sub.add_parser("unpack", help="check and decode PACKDIR into an npz (data.dataset=npz:OUT)")
    a.add_argument("packdir", type=Path)
    a.add_argument("out", type=Path)
    a = sub.add_parser("verify", help="check PACKDIR (parts, then decoded arrays); write nothing")
    a.add_argument("packdir", type=Path)
    a.add_argument(
        "--parts-only", action="store_true", help="only the parts present; name those missing"
    )
    return p


def _run(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    if a.cmd == "pack":
        m = pack(load_cifar10(a.root), a.outdir, int(a.max_part_mb * MB))
        sizes = ", ".join(f"{p['file']} {p['bytes'] / MB:.2f} MB" for p in m["parts"])
        print(f"{a.outdir}: {len(m['parts'])} part(s): {sizes}; {m['bits_per_channel']} bits per "
              f"channel; {time.perf_counter() - t0:.1f} s (xz and predictor {m['pack_seconds']} s)")  # fmt: skip
    elif a.cmd == "verify" and a.parts_only:
        m = read_manifest(a.packdir)
        missing = check_parts(a.packdir, m, allow_missing=True)
        print(f"{a.packdir}: {len(m['parts']) - len(missing)} of {len(m['parts'])} part(s) present and "
              f"intact" + (f"; missing: {', '.join(missing)}" if missing else ""))  # fmt: skip
    else:
        arrays = unpack(a.packdir)
        if a.cmd == "unpack":
            write_npz(arrays, a.out)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
        done = f"wrote {a.out}" if a.cmd == "unpack" else "verified"
        print(f"{a.packdir}: every part and array matches the manifest ({shapes}); {done} "
              f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        _run(a)
    except PackError as exc:
        print(f"cifar_pack {a.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

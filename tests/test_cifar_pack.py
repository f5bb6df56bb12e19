"""benchmarks/cifar_pack.py (issue 18 item 5): all of CIFAR-10 in parts a lent GPU can carry.

Fast tests on 64 synthetic images (random and smooth): a bit-exact round trip, parts split to a
size, and a damaged part, a wrong array digest and a missing part refused with a message. The
slow test packs the real CIFAR-10 and checks it comes back bit for bit in two parts of <= 55 MB.
"""

from __future__ import annotations

import json
import math

import cifar_pack as cp
import numpy as np
import pytest

# SHA-256 of the train images as (50000, 3072) NCHW uint8, from shared/data/README.md
CIFAR10_TRAIN_SHA256 = "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111"


def _smooth(n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    img = [
        (a * yy[..., None] + b * xx[..., None] + c + rng.integers(-3, 4, (32, 32, 3))) % 256
        for a, b, c in rng.integers(-6, 7, (n, 3, 3))
    ]
    return np.stack(img).astype(np.uint8)


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    """48 training and 16 test images, half random bytes, half smooth gradients; int64 labels."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), _smooth(32, rng)])
    x = x[rng.permutation(64)]
    y = np.arange(64, dtype=np.int64) % 10
    return {"x_train": x[:48], "y_train": y[:48], "x_test": x[48:], "y_test": y[48:]}


def _assert_same(got: dict, want: dict) -> None:
    for k in cp.KEYS:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert np.array_equal(got[k], want[k]), k


def test_round_trip_is_bit_exact_and_the_npz_loads(arrays, tmp_path, capsys):
    m = cp.pack(arrays, tmp_path / "pack")
    assert (m["format"], m["version"], len(m["parts"])) == (cp.FORMAT, cp.VERSION, 1)
    assert m["predictor"]["name"] == "rct-med-zigzag"
    assert [e["name"] for e in m["arrays"]] == list(cp.KEYS)
    assert all(e["sha256"] == cp.sha256_of(arrays[e["name"]]) for e in m["arrays"])
    assert json.loads((tmp_path / "pack" / cp.MANIFEST).read_text()) == m
    _assert_same(cp.unpack(tmp_path / "pack"), arrays)

    out = tmp_path / "out" / "c.npz"
    assert cp.main(["unpack", str(tmp_path / "pack"), str(out)]) == 0
    assert "every part and array matches the manifest" in capsys.readouterr().out
    from dainv.data import load_dataset

    d = load_dataset(f"npz:{out}")
    assert np.array_equal(d.x_test.permute(0, 2, 3, 1).numpy(), arrays["x_test"])
    assert d.y_train.tolist() == arrays["y_train"].tolist() and d.num_classes == 10


def test_the_predictor_is_exact_and_helps_smooth_images():
    rng = np.random.default_rng(1)
    for x in (_smooth(20, rng), rng.integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)):
        z = cp.encode_images(x)
        assert z.shape == (3, len(x), *x.shape[1:3]) and np.array_equal(cp.decode_images(z), x)
    grey = rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    assert np.array_equal(cp.decode_images(cp.encode_images(grey)), grey)
    # the folded residuals of smooth images are small numbers: the predictor did its job
    assert np.mean(cp.encode_images(_smooth(20, rng)) < 16) > 0.9


def test_parts_are_split_to_the_size_asked_and_stale_parts_go(arrays, tmp_path):
    m = cp.pack(arrays, tmp_path, max_part_bytes=4000)
    sizes = [p["bytes"] for p in m["parts"]]
    assert len(sizes) == math.ceil(m["compressed_bytes"] / 4000) > 3
    assert max(sizes) <= 4000 and sum(sizes) == m["compressed_bytes"]
    assert sorted(p.name for p in tmp_path.glob("pack.xz.*")) == [p["file"] for p in m["parts"]]
    _assert_same(cp.unpack(tmp_path), arrays)
    assert len(cp.pack(arrays, tmp_path)["parts"]) == 1
    assert [p.name for p in tmp_path.glob("pack.xz.*")] == ["pack.xz.001"]


def test_a_flipped_byte_in_a_part_is_refused(arrays, tmp_path, capsys):
    m = cp.pack(arrays, tmp_path, max_part_bytes=8000)
    part = tmp_path / m["parts"][1]["file"]
    data = bytearray(part.read_bytes())
    data[100] ^= 0x01
    part.write_bytes(bytes(data))
    out = tmp_path / "c.npz"
    assert cp.main(["unpack", str(tmp_path), str(out)]) == 1
    err = capsys.readouterr().err
    n = len(m["parts"])
    assert (
        f"part 2 of {n} (pack.xz.002) is damaged: SHA-256 expected {m['parts'][1]['sha256']}, got "
        in err
    )
    assert err.count("\n") == 1 and not out.exists()
    assert cp.main(["verify", str(tmp_path), "--parts-only"]) == 1
    assert "pack.xz.002" in capsys.readouterr().err


def test_a_wrong_array_digest_is_refused(arrays, tmp_path, capsys):
    m = cp.pack(arrays, tmp_path)
    good = m["arrays"][2]["sha256"]
    m["arrays"][2]["sha256"] = "0" * 64
    (tmp_path / cp.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(
        cp.PackError, match=f"array x_test decodes wrong: SHA-256 expected 0{{64}}, got {good}"
    ):
        cp.unpack(tmp_path)
    assert cp.main(["verify", str(tmp_path)]) == 1
    assert "array x_test" in capsys.readouterr().err
    (tmp_path / cp.MANIFEST).write_text('{"format": "something else"}')
    with pytest.raises(cp.PackError, match="is not a dainv-cifar-pack version 1 manifest"):
        cp.unpack(tmp_path)


def test_a_missing_part_is_named(arrays, tmp_path, capsys):
    m = cp.pack(arrays, tmp_path, max_part_bytes=8000)
    (tmp_path / "pack.xz.002").unlink()
    assert cp.main(["verify", str(tmp_path), "--parts-only"]) == 0
    assert (
        f"{len(m['parts']) - 1} of {len(m['parts'])} part(s) present and intact; missing: pack.xz.002"
        in capsys.readouterr().out
    )
    assert cp.main(["verify", str(tmp_path)]) == 1
    assert "lacks pack.xz.002" in capsys.readouterr().err


def test_real_cifar10_round_trips_in_two_parts(cifar_root, tmp_path):
    """All of CIFAR-10 packs into 2 parts of <= 55 MB and comes back bit for bit (~1 min)."""
    arrays = cp.load_cifar10(cifar_root)
    m = cp.pack(arrays, tmp_path)
    sizes = [p["bytes"] for p in m["parts"]]
    print(
        f"\nCIFAR-10 pack: parts {sizes} bytes, {m['bits_per_channel']} bits/channel, {m['pack_seconds']} s"
    )
    assert len(sizes) == 2 and max(sizes) <= 55 * cp.MB, sizes
    got = cp.unpack(tmp_path)
    _assert_same(got, arrays)
    nchw = np.ascontiguousarray(got["x_train"].transpose(0, 3, 1, 2))
    assert cp.sha256_of(nchw) == CIFAR10_TRAIN_SHA256

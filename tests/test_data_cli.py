"""``dainv data`` / ``python -m dainv.data`` (the data checker) and ``load_dataset`` on a toy image folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from dainv.cli import main as dainv
from dainv.data.__main__ import main as data_main

TOY_FOLDER = textwrap.dedent(
    """
    import numpy as np
    from pathlib import Path
    from PIL import Image
    from dainv.data import load_dataset

    # a toy image folder: train/<class>/*.png and test/<class>/*.png
    root = Path("toy_images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 5)):
        for cls, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.normal(colour, 20, (40, 40, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")

    ds = load_dataset("folder:toy_images", image_size=32)
    print(ds)          # train=(40, 3, 32, 32), test=(10, 3, 32, 32), num_classes=2
    print(ds.classes)  # ['blue', 'red']: labels follow the sorted folder names
    print(ds.notes)    # decoded 50 images ...; cached in .../toy_images/.dainv-cache-....npz
    """
)


@pytest.fixture(autouse=True)
def _in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_toy_folder_loads(capsys: pytest.CaptureFixture[str]) -> None:
    scope: dict = {}
    exec(compile(TOY_FOLDER, "toy", "exec"), scope)
    ds = scope["ds"]
    assert ds.x_train.shape == (40, 3, 32, 32) and ds.x_test.shape == (10, 3, 32, 32)
    assert ds.classes == ["blue", "red"]
    red = ds.x_train[ds.y_train == 1].float().mean(dim=(0, 2, 3))
    assert red[0] > 150 and red[2] < 80  # label 1 = "red"
    out = capsys.readouterr().out
    assert "num_classes=2" in out and "['blue', 'red']" in out and "cached in" in out


@pytest.mark.parametrize("check", [data_main, lambda argv: dainv(["data", *argv])], ids=["module", "subcommand"])
def test_check_command(check, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(TOY_FOLDER, "toy", "exec"), {})
    capsys.readouterr()
    # python -m dainv.data folder:toy_images --image-size 32 (= dainv data ...)
    assert check(["folder:toy_images", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "40 train + 10 test images, 3x32x32" in out and "2 classes: blue, red" in out
    assert "loaded 50 decoded images from the cache" in out
    # a broken file: one message, exit 2, no traceback; --skip-bad reports it
    Path("toy_images/train/red/broken.png").write_bytes(b"not a png")
    assert check(["folder:toy_images", "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err and "skip_bad" in err
    assert check(["folder:toy_images", "--image-size", "32", "--skip-bad"]) == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out


def test_check_command_on_npz_with_bad_labels(capsys: pytest.CaptureFixture[str]) -> None:
    x = np.zeros((3, 4, 4, 3), np.uint8)
    np.savez("bad.npz", x_train=x, y_train=np.array([0, 1, 10**6]), x_test=x, y_test=np.zeros(3))
    assert data_main(["npz:bad.npz"]) == 2
    assert "y_test" in capsys.readouterr().err  # float labels are named first
    np.savez(
        "bad.npz", x_train=x, y_train=np.array([0, 1, 10**6]), x_test=x, y_test=np.zeros(3, int)
    )
    assert data_main(["npz:bad.npz"]) == 2
    assert "1,000,001 classes" in capsys.readouterr().err

"""One image decoder for the whole product (mdw/data/decode.py): EXIF orientation applied, every PIL
mode and array dtype converted to 8-bit RGB without clipping; the data stage, webdataset shards,
`score`, `query --image` and `heatmap --image` all decode through it. Images are made in the tests."""
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from mdw.config import DataConfig
from mdw.data.decode import open_image, read_square
from mdw.data.prepare import prepare
from mdw.errors import DataError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def exif6_jpeg(path=None) -> bytes:
    """80×40, red left half, blue right half, EXIF Orientation 6 ("rotate 90° clockwise to display")."""
    img = Image.new("RGB", (80, 40), BLUE)
    img.paste(RED, (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def gradient16(raster: bool = False) -> np.ndarray:
    """64×64 uint16 from 0 to 65535: along x only (64 levels), or in raster order (4096 levels,
    still rising along x in every row)."""
    if raster:
        return np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    return np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1))


def save_png16(arr: np.ndarray, path) -> None:
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    img.save(path)


def red_above_blue(rgb: np.ndarray) -> bool:
    h = rgb.shape[0]
    top, bottom = rgb[: h // 2 - 2].reshape(-1, 3).mean(0), rgb[h // 2 + 2:].reshape(-1, 3).mean(0)
    return top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50


def monotone_along_x(grey: np.ndarray) -> bool:
    return bool((np.diff(grey.astype(int), axis=1) >= 0).all())


# -- the opener -------------------------------------------------------------------------------------
def test_exif_orientation_is_applied_by_the_opener(tmp_path):
    path = tmp_path / "exif6.jpg"
    data = exif6_jpeg(path)
    assert Image.open(path).size == (80, 40)            # as stored
    for source in (str(path), data, Image.open(path)):
        img = open_image(source)
        assert img.mode == "RGB" and img.size == (40, 80) and red_above_blue(np.asarray(img))
    small = open_image(str(path), size=16)               # JPEG draft mode: reduced scale, still upright
    assert small.size[0] < small.size[1] and red_above_blue(np.asarray(small))
    square = read_square(str(path), 16)
    assert square.shape == (16, 16, 3) and red_above_blue(square)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    for raster in (False, True):
        g = gradient16(raster)
        path = tmp_path / f"g{int(raster)}.png"
        save_png16(g, path)
        grey = np.asarray(open_image(str(path)))
        assert (grey[..., 0] == grey[..., 2]).all()
        assert np.array_equal(grey[..., 0], np.rint(g / 257.0).astype(np.uint8))
        assert monotone_along_x(grey[..., 0]) and grey.max() == 255 and grey.min() == 0
        levels = len(np.unique(grey))
        assert levels == 64 if not raster else levels > 200
        assert (grey == 255).mean() < 0.05


# -- the data stage ---------------------------------------------------------------------------------
def test_data_stage_cache_decodes_exif_and_16bit(tmp_path, cache_dir):
    exif6_jpeg(tmp_path / "exif6.jpg")
    save_png16(gradient16(raster=True), tmp_path / "grad16.png")
    Image.new("RGB", (64, 64), (0, 128, 0)).save(tmp_path / "green.png")
    rows = ["image,caption,split", "exif6.jpg,red above blue,train", "grad16.png,a grey ramp,train",
            "green.png,a green square,test"]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    p = prepare(DataConfig(source="csv", path=str(tmp_path / "pairs.csv"), image_size=64), cache_dir)
    keys = [p.pairs.images.key(i) for i in range(p.pairs.n_images)]
    assert p.images.shape == (3, 64, 64, 3)
    exif = p.images[keys.index("exif6.jpg")]
    assert red_above_blue(exif)                           # the cached square is the upright image's centre
    ramp = p.images[keys.index("grad16.png")][..., 0]
    assert len(np.unique(ramp)) > 200 and monotone_along_x(ramp) and ramp.max() == 255


def test_webdataset_images_decode_upright(tmp_path):
    from mdw.data.image_cache import decode_all
    from mdw.data.webdataset import read_webdataset

    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for name, data in (("0001.jpg", exif6_jpeg()), ("0001.txt", b"red above blue")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ps = read_webdataset(str(tmp_path / "shard.tar"))
    arr, bad = decode_all(ps, 32)
    assert bad == [] and red_above_blue(arr[0])


# -- modes and arrays -------------------------------------------------------------------------------
def test_float_and_integer_modes_are_scaled_by_their_range():
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    got = np.asarray(open_image(Image.fromarray(unit, "F")))[..., 0]
    assert np.array_equal(got, np.rint(unit * 255).astype(np.uint8))          # F in [0, 1]: × 255
    wide = (unit * 8 - 3).astype(np.float32)                                  # F in [-3, 5]: min-max
    got = np.asarray(open_image(Image.fromarray(wide, "F")))[..., 0]
    assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) > 200
    eight = np.arange(256, dtype=np.int32).reshape(16, 16)                    # I holding 8-bit values
    assert np.array_equal(np.asarray(open_image(Image.fromarray(eight, "I")))[..., 0], eight.astype(np.uint8))
    sixteen = eight * 257                                                     # I holding 16-bit values
    assert np.array_equal(np.asarray(open_image(Image.fromarray(sixteen, "I")))[..., 0], eight.astype(np.uint8))
    signed = (eight - 128) * 1000                                             # anything else: min-max
    got = np.asarray(open_image(Image.fromarray(signed, "I")))[..., 0]
    assert got.min() == 0 and got.max() == 255 and monotone_along_x(got)
    nan = unit.copy()
    nan[0, 5] = np.nan                                                        # as the lowest finite value
    assert np.asarray(open_image(Image.fromarray(nan, "F")))[0, 5, 0] == 0


def test_transparency_is_composited_over_white_and_cmyk_converted():
    la = Image.fromarray(np.stack([np.zeros((4, 4), np.uint8), np.array([[0, 255] * 2] * 4, np.uint8)], -1), "LA")
    got = np.asarray(open_image(la))
    assert (got[:, 0::2] == 255).all() and (got[:, 1::2] == 0).all()     # transparent -> white, opaque black
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    assert np.abs(np.asarray(open_image(rgba))[0, 0].astype(int) - [255, 127, 127]).max() <= 1
    assert (np.asarray(open_image(rgba.convert("RGBa"))) == np.asarray(open_image(rgba))).all()
    assert (np.asarray(open_image(la.convert("La")))[:, 0::2] == 255).all()
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 1)
    assert tuple(np.asarray(open_image(p))[0, 0]) == (0, 255, 0) and tuple(np.asarray(open_image(p))[1, 1]) == (0, 0, 0)
    p.info["transparency"] = 0                                                 # palette entry 0 transparent
    got = np.asarray(open_image(p))
    assert tuple(got[0, 0]) == (0, 255, 0) and tuple(got[1, 1]) == (255, 255, 255)
    assert tuple(np.asarray(open_image(p.convert("PA")))[1, 1]) == (255, 255, 255)
    cmyk = Image.new("CMYK", (2, 2), (255, 0, 0, 0))                           # full cyan
    assert tuple(np.asarray(open_image(cmyk))[0, 0]) == (0, 255, 255)
    grey1 = Image.new("1", (2, 2), 1)
    assert tuple(np.asarray(open_image(grey1))[0, 0]) == (255, 255, 255)


def test_arrays_convert_like_images(tmp_path):
    g = gradient16(raster=True)
    from_array = np.asarray(open_image(g))
    save_png16(g, tmp_path / "g.png")
    assert np.array_equal(from_array, np.asarray(open_image(str(tmp_path / "g.png"))))
    rgb16 = np.stack([g, g, g], -1)
    assert np.array_equal(np.asarray(open_image(rgb16)), from_array)
    unit = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    assert np.array_equal(np.asarray(open_image(unit)), np.rint(unit * 255).astype(np.uint8))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0
    assert (np.asarray(open_image(rgba)) == 255).all()                         # fully transparent -> white
    assert (np.asarray(open_image(np.ones((3, 3), bool))) == 255).all()
    assert read_square(np.zeros((10, 20, 3), np.uint8), 8).shape == (8, 8, 3)
    with pytest.raises(DataError, match=r"shape.*\(4, 4, 5\)"):
        open_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(DataError, match="dtype complex"):
        open_image(np.zeros((4, 4), np.complex64))
    with pytest.raises(DataError, match="no such image file"):
        read_square(str(tmp_path / "missing.png"), 8)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg: cannot read the image"):
        read_square(str(tmp_path / "bad.jpg"), 8)


# -- score, query --image, heatmap --image ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers import tiny_run_dir
    return tiny_run_dir(tmp_path_factory)


def test_score_query_and_heatmap_decode_through_the_one_opener(tiny, tmp_path):
    """Each reads the EXIF-6 JPEG and the 16-bit PNG exactly as the PNG of its upright 8-bit square
    (what `read_square` gives) — and not as the sideways image; so does the app's image query, given
    the upload's file (gr.Image type="filepath") or an array."""
    import os

    from app.context import AppContext
    from app.tab_retrieval import query_image
    from mdw.cli.main import main
    from mdw.evaluate.index import RunIndex, build_run_index
    from mdw.train.score import score_pairs

    run_dir, cfg = tiny
    size = cfg.data.image_size
    exif6_jpeg(tmp_path / "exif6.jpg")
    save_png16(gradient16(raster=True), tmp_path / "grad16.png")
    upright = read_square(str(tmp_path / "exif6.jpg"), size)
    assert red_above_blue(upright)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    Image.fromarray(read_square(str(tmp_path / "grad16.png"), size)).save(tmp_path / "grad8.png")
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(tmp_path / "sideways.png")
    files = [str(tmp_path / n) for n in ("exif6.jpg", "upright.png", "sideways.png", "grad16.png", "grad8.png")]
    caption = "a red square above a blue square"
    s = score_pairs(run_dir, files, [caption] * 5)
    sim = s["similarity"]   # one batch: equal inputs may differ in the last float bit by position
    assert sim[0] == pytest.approx(sim[1], abs=1e-6) and abs(sim[0] - sim[2]) > 1e-4
    assert sim[3] == pytest.approx(sim[4], abs=1e-6)

    if not RunIndex.exists(run_dir):
        build_run_index(run_dir, cfg)
    ri = RunIndex.load(run_dir)
    emb = [ri.embed_image(f) for f in files]
    assert np.array_equal(emb[0], emb[1]) and not np.array_equal(emb[0], emb[2]) and np.array_equal(emb[3], emb[4])
    ctx, run_id = AppContext(os.path.dirname(run_dir)), os.path.basename(run_dir)
    k = ri.meta["n_captions"]
    tables = [query_image(ctx, run_id, q, k)[0] for q in files + [np.asarray(Image.open(files[3]))]]
    assert tables[0] == tables[1] != tables[2] and tables[3] == tables[4] == tables[5] and len(tables[0]) == k

    outs = []
    for f in files[:3]:
        out = tmp_path / f"heat-{len(outs)}.png"
        assert main(["heatmap", "--run", run_dir, "--image", f, "--caption", caption, "--out", str(out),
                     "--shifts", "1", "--word", "red"]) == 0
        outs.append(np.asarray(Image.open(out)))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])

import os

import numpy as np
import pytest
from conftest import png_header
from PIL import Image

from simfusion.io.images import ImageError, load_image, save_image, to_channels


@pytest.fixture
def photo(rng):
    """A smooth colour gradient (compresses well, survives JPEG) with a little seeded noise."""
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4, y * 5, 255 - x * 3], axis=-1).astype(np.float64)
    image += rng.normal(0, 2, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tif"])
def test_every_format_loads_as_rgb_uint8(tmp_path, photo, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(photo).save(path)
    image = load_image(path)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - photo).mean() < 6  # lossy formats stay close


def test_grayscale_loads_as_rgb_or_gray(tmp_path, photo):
    path = tmp_path / "gray.png"
    Image.fromarray(photo[:, :, 0]).save(path)
    rgb = load_image(path)
    assert rgb.shape == (48, 64, 3)
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 2])
    gray = load_image(path, channels=1)
    assert gray.shape == (48, 64) and np.array_equal(gray, photo[:, :, 0])


def test_rgba_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[:5, :, :] = (255, 0, 0, 255)  # opaque red top half, transparent bottom half
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = load_image(path)
    assert tuple(image[0, 0]) == (255, 0, 0)
    assert tuple(image[9, 9]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    picture = Image.new("P", (8, 8), 0)
    picture.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    picture.putpixel((0, 0), 1)
    path = tmp_path / "palette.png"
    picture.save(path, transparency=0)
    image = load_image(path)
    assert tuple(image[0, 0]) == (0, 255, 0)
    assert tuple(image[4, 4]) == (255, 255, 255)  # transparent blue became the white background


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_is_scaled_to_8_bit(tmp_path, suffix):
    deep = np.array([[0, 65535], [32896, 65535]], dtype=np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(deep).save(path)
    image = load_image(path, channels=1)
    assert image.dtype == np.uint8
    assert image.tolist() == [[0, 255], [128, 255]]


def test_exif_orientation_is_applied(tmp_path):
    tall = np.zeros((40, 20, 3), dtype=np.uint8)
    tall[:10] = 255  # white band at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(tall).save(path, exif=exif)
    image = load_image(path)
    assert image.shape == (20, 40, 3)
    assert image[:, -5:].mean() > 200 and image[:, :5].mean() < 50


def test_truncated_file_is_an_image_error(tmp_path, photo):
    path = tmp_path / "cut.jpg"
    Image.fromarray(photo).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(path)


def test_non_image_and_missing_file_are_image_errors(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(path)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nothing.png")


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (4000, 3000)).save(path)  # 12 MP of zeros: a few KB on disk
    with pytest.raises(ImageError, match="over the limit"):
        load_image(path, max_pixels=1_000_000)


def test_bad_channels_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_image(tmp_path / "x.png", channels=2)


def test_save_is_atomic_and_round_trips(tmp_path, photo):
    path = save_image(tmp_path / "deep" / "dir" / "x.png", photo)
    assert np.array_equal(load_image(path), photo)
    assert os.listdir(tmp_path / "deep" / "dir") == ["x.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_image(tmp_path / "y.png", photo.astype(np.float32))
    assert not (tmp_path / "y.png").exists()


def test_to_channels_converts_both_ways(photo):
    gray = to_channels(photo, 1)
    assert gray.shape == (48, 64)
    assert to_channels(gray, 3).shape == (48, 64, 3)
    assert to_channels(gray[:, :, None], 1).shape == (48, 64)


# ------------------------------------------------------------------ hostile inputs (issue 15)


def test_pixel_cap_is_exactly_the_documented_100_megapixels(tmp_path):
    from simfusion.io.images import MAX_PIXELS

    assert MAX_PIXELS == 100_000_000
    at, over, pillow_default = tmp_path / "at.png", tmp_path / "over.png", tmp_path / "90mp.png"
    at.write_bytes(png_header(10_000, 10_000))  # exactly the cap: allowed, then fails for want of data
    over.write_bytes(png_header(10_001, 10_000))
    pillow_default.write_bytes(png_header(9_500, 9_500))  # 90.25 MP: over Pillow's own 89.5 MP default
    with pytest.raises(ImageError, match="over the limit of 100000000"):
        load_image(over)
    for path in (at, pillow_default):
        with pytest.raises(ImageError) as caught:
            load_image(path)
        assert "over the limit" not in str(caught.value) and "decompression" not in str(caught.value).lower()


def test_a_bomb_past_pillows_own_limit_quotes_one_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(15_000, 15_000))  # 225 MP: Pillow itself refuses it at open
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value).endswith("is over the limit of 100000000 pixels")
    assert str(caught.value).count("limit") == 1


def test_a_large_jpeg_upload_decodes_at_a_reduced_scale(tmp_path):
    from simfusion.io.images import decode_image

    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 256, (60, 50, 3)), np.ones((70, 70, 1))).astype(np.uint8)
    out = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(out, quality=90)  # 3500 x 4200
    data = out.read_bytes()
    reduced = decode_image(data, reduce_to=1000)
    assert reduced.shape == (2100, 1750, 3)  # 1/2 scale: at 1/4 a side would be under 1000
    assert np.abs(reduced.astype(int) - pixels[::2, ::2]).mean() < 12
    assert decode_image(data, reduce_to=4000).shape == pixels.shape  # no smaller scale keeps 4000
    png = tmp_path / "big.png"
    Image.fromarray(pixels).save(png)
    assert decode_image(png.read_bytes(), reduce_to=1000).shape == pixels.shape  # JPEG only


@pytest.mark.parametrize("size", [(1, 200_000), (200_000, 1), (1, 10_000), (3, 400)])
def test_absurd_aspect_ratio_is_refused_before_decoding(tmp_path, size):
    path = tmp_path / "strip.png"
    Image.new("L", size, 128).save(path)
    assert path.stat().st_size < 2000
    with pytest.raises(ImageError, match="aspect ratio"):
        load_image(path)


def test_long_but_sane_image_loads(tmp_path):
    path = tmp_path / "panorama.png"
    Image.new("RGB", (2000, 40), (10, 20, 30)).save(path)
    assert load_image(path).shape == (40, 2000, 3)


def test_fifo_and_folders_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would wait forever
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageError, match="not a regular file"):
            load_image("/dev/zero")

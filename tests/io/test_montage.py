import numpy as np
import pytest
from conftest import square_image
from PIL import Image

from simfusion.io.montage import (
    MATCH_COLOUR,
    Tile,
    draw_recommendations,
    fit_tile,
    montage_size,
    save_recommendations,
)


def test_fit_tile_keeps_the_aspect_on_white():
    tile = np.asarray(fit_tile(square_image(60, 120, box=(0, 0, 120, 60), colour=(0, 0, 0)), 64))
    assert tile.shape == (64, 64, 3)
    assert (tile[32, :, 0] < 10).all()  # the wide image fills the width
    assert (tile[0] == 255).all() and (tile[-1] == 255).all()  # and is padded above and below
    gray = np.asarray(fit_tile(np.zeros((10, 10), np.uint8), 32))
    assert gray.shape == (32, 32, 3)


def test_montage_writes_a_png_of_the_expected_size(tmp_path):
    query = Tile(square_image(), ["query q1", "sneaker"], colour=(0, 0, 255))
    results = [
        Tile(square_image(colour=(0, 200, i * 40)), [f"#{i + 1} 0.9{i}", "sneaker", f"id-{i}"], MATCH_COLOUR)
        for i in range(4)
    ]
    results.append(Tile(None, ["#5 0.10", "a very long category name that will not fit", "x"]))
    rows = [(query, results), (Tile(None, ["unreadable"]), [])]
    path = save_recommendations(tmp_path / "out" / "recommendations.png", rows, tile=96)
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert picture.size == montage_size(2, 5, tile=96)
    array = draw_recommendations(rows, tile=96, columns=10)
    assert array.shape == montage_size(2, 10, tile=96)[::-1] + (3,)
    assert array.dtype == np.uint8
    # something was drawn in the first result's tile (its green rectangle)
    width, _ = montage_size(1, 1, tile=96)
    assert (array[40:60, width - 96 - 8 + 20 : width - 8 - 20, 1] > 150).any()
    with pytest.raises(ValueError, match="at least 16"):
        draw_recommendations(rows, tile=8)

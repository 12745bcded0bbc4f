"""The service on a tiny trained model: image uploads, adding items, and the page in headless Chromium."""

import json
import os
import shutil
import subprocess

import pytest
import requests
from conftest import SAMPLE_DATA, train_tiny_model
from live_server import live_server
from PIL import Image

from simfusion.io.records import record_json
from simfusion.search.catalog import Catalog
from simfusion.serve.app import create_app
from simfusion.serve.service import PATH_KEYS, Service

KEY = "k3y"
QUERY = os.path.join(SAMPLE_DATA, "query.jpg")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1280,900",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_model(str(tmp_path_factory.mktemp("out")))


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """A warm server of a copy of the trained model (the tests add to it)."""
    out = tmp_path_factory.mktemp("served")
    shutil.copytree(os.path.dirname(trained["model"]), out, dirs_exist_ok=True)
    catalog = Catalog.open(out / "model")
    with live_server(create_app(Service(catalog), api_key=KEY), timeout=300) as url:
        yield url, str(out / "model")


@pytest.mark.slow
def test_an_uploaded_image_is_searched_like_predict_does(server, trained):
    url, model = server
    health = requests.get(url + "/health", timeout=30).json()
    assert health["image_search"] is True and health["items"] == 20
    with open(QUERY, "rb") as stream:
        answer = requests.post(url + "/search?top_k=5", files={"image": ("q.jpg", stream)}, timeout=120)
    assert answer.status_code == 200, answer.text
    [want] = Catalog.open(model).search([{"upload": "q.jpg", "image": QUERY}], k=5)
    got = answer.json()
    assert got["upload"] == "q.jpg" and len(got["results"]) == 5
    expected = json.loads(record_json(want))["results"]
    assert [hit["id"] for hit in got["results"]] == [hit["id"] for hit in expected]
    assert [hit["score"] for hit in got["results"]] == pytest.approx(
        [hit["score"] for hit in expected], abs=1e-5
    )
    assert set(got["results"][0]["scores"]) == {"thumbnail", "foreground"}
    picture = requests.get(f"{url}/items/{got['results'][0]['id']}/image", timeout=30)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"


@pytest.mark.slow
def test_added_items_are_found_and_their_upload_served_then_removed(server, trained):
    url, model = server
    files, records = [], []
    for record in trained["held_out"][:2]:
        with open(os.path.join(SAMPLE_DATA, record["image"]), "rb") as stream:
            files.append(("image", (os.path.basename(record["image"]), stream.read())))
        records.append(
            ("record", json.dumps({**record, "thumbnail": "/etc/passwd"}))
        )  # path keys are dropped
    answer = requests.post(url + "/items", files=files, data=records, headers={"x-api-key": KEY}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["added"] == 2 and answer.json()["items"] == 22
    again = requests.post(
        url + "/items", files=files[:1], data=records[:1], headers={"x-api-key": KEY}, timeout=60
    )
    assert again.status_code == 422 and "already in the catalog" in again.json()["records"][0]["error"]
    nan = [("record", json.dumps({"id": "with-nan", "price": float("nan")}))]  # json.dumps writes NaN
    refused = requests.post(url + "/items", files=files[:1], data=nan, headers={"x-api-key": KEY}, timeout=60)
    assert refused.status_code == 400 and "NaN is not a JSON number" in refused.json()["error"]
    first = trained["held_out"][0]
    assert not any(set(PATH_KEYS) & set(record) for record in answer.json()["records"])
    assert not set(PATH_KEYS) & set(requests.get(f"{url}/items/{first['id']}", timeout=30).json())
    picture = requests.get(f"{url}/items/{first['id']}/image", timeout=30)
    assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
    files = {"image": ("same.png", files[0][1][1])}
    found = requests.post(url + "/search?top_k=3", files=files, timeout=60).json()
    assert not any(set(PATH_KEYS) & set(hit) for hit in found["results"])
    assert found["results"][0]["id"] == first["id"] and found["results"][0]["score"] == pytest.approx(
        1, abs=1e-4
    )
    assert len(Catalog.open(model)) == 22  # on disk, as fusion.py --add leaves it
    for record in trained["held_out"][:2]:
        gone = requests.delete(f"{url}/items/{record['id']}", headers={"x-api-key": KEY}, timeout=60)
        assert gone.status_code == 200
    assert requests.get(url + "/health", timeout=30).json()["items"] == 20
    assert not os.listdir(os.path.join(model, "uploads"))  # the uploads went with their items


@pytest.mark.slow
def test_an_add_that_outlasts_the_time_limit_is_accepted_and_goes_on(trained, tmp_path):
    import time

    shutil.copytree(trained["out"], tmp_path / "out")
    catalog = Catalog.open(tmp_path / "out" / "model")
    # 12 sample images take the detector and the encoders well over 0.2 s
    app = create_app(Service(catalog), api_key=KEY, request_timeout=0.2)
    files, records = [], []
    with open(os.path.join(SAMPLE_DATA, "catalog.jsonl")) as stream:
        new = [json.loads(line) for line in stream if "fashion" in line][100:112]
    for record in new:
        with open(os.path.join(SAMPLE_DATA, record["image"]), "rb") as stream:
            files.append(("image", (os.path.basename(record["image"]), stream.read())))
        records.append(("record", json.dumps(record)))
    with live_server(app, timeout=300) as url:
        headers = {"x-api-key": KEY}
        answer = requests.post(url + "/items", files=files, data=records, headers=headers, timeout=60)
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] is True and answer.json()["ids"] == [r["id"] for r in new]
        deadline = time.monotonic() + 120  # the add goes on to its end: every item comes in
        while time.monotonic() < deadline:
            if requests.get(url + "/health", timeout=30).json().get("items") == 32:
                break
            time.sleep(0.5)
        assert requests.get(f"{url}/items/{new[-1]['id']}", timeout=30).status_code == 200
    assert len(Catalog.open(tmp_path / "out" / "model")) == 32


def chromedriver() -> str:
    """Debian's chromedriver, installed here when root; skips (not on CI) where it cannot be."""
    if not shutil.which("chromedriver") and os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
        ):
            subprocess.run(command, capture_output=True, timeout=900, check=False)
    path = shutil.which("chromedriver")
    why = None
    if path is None:
        why = "chromium-driver is not installed and cannot be (not root, or apt-get failed)"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            why = "selenium is not installed (pip install selenium)"
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser test must run on CI: {why}")
        pytest.skip(why)
    return path


@pytest.mark.slow
def test_the_page_uploads_the_query_and_shows_result_tiles(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver_path = chromedriver()
    url, _ = server
    options = webdriver.ChromeOptions()
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    if os.path.exists("/usr/bin/chromium"):
        options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=DriverService(driver_path), options=options)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#category option")) > 1)
        driver.find_element(By.ID, "file").send_keys(QUERY)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .tile")) == 12)
        tiles = driver.find_elements(By.CSS_SELECTOR, "#results .tile")
        assert (
            "thumbnail" in tiles[0].get_attribute("title")
            and tiles[0].find_element(By.CLASS_NAME, "score").text
        )
        wait.until(
            lambda d: d.execute_script(
                "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        driver.save_screenshot(str(tmp_path / "results.png"))

        first = tiles[0].get_attribute("data-id")  # a click searches by that item
        tiles[0].click()
        wait.until(
            expected_conditions.text_to_be_present_in_element((By.ID, "query"), f"catalog item {first}")
        )
        wait.until(
            lambda d: (
                first not in [t.get_attribute("data-id") for t in d.find_elements(By.CSS_SELECTOR, ".tile")]
            )
        )

        bad = tmp_path / "not-an-image.jpg"
        bad.write_bytes(b"these bytes are no picture")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(expected_conditions.visibility_of_element_located((By.ID, "error")))
        assert "415" in driver.find_element(By.ID, "error").text
        driver.save_screenshot(str(tmp_path / "error.png"))
    finally:
        driver.quit()
    with Image.open(tmp_path / "results.png") as shot:
        assert shot.size[0] >= 800
    print("screenshots:", tmp_path / "results.png", tmp_path / "error.png")

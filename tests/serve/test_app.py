"""The HTTP API against a real uvicorn server, on a synthetic catalog (no encoders: search by id)."""

import io
import json
import os
import shutil
import threading

import numpy as np
import pytest
import requests
from conftest import png_header, synthetic_model
from live_server import live_server
from PIL import Image

from simfusion.io.records import output_relpath, record_json
from simfusion.search.catalog import Catalog
from simfusion.search.rules import Rules
from simfusion.serve.app import create_app
from simfusion.serve.service import PATH_KEYS, Service, public

KEY = "s3cret"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("out") / "model"
    ids, records, _ = synthetic_model(folder, n=40)
    return {"path": str(folder), "ids": ids, "records": records}


@pytest.fixture(scope="module")
def server(model):
    """A read-only server of the module's catalog, with an API key."""
    app = create_app(Service(Catalog.open(model["path"])), api_key=KEY, warm=False)
    with live_server(app) as url:
        yield url


@pytest.fixture
def own_server(model, tmp_path):
    """A server of a private copy of the catalog, for tests that change it."""
    folder = tmp_path / "out" / "model"
    shutil.copytree(model["path"], folder)
    app = create_app(Service(Catalog.open(folder)), api_key=KEY, warm=False)
    with live_server(app) as url:
        yield url, str(folder)


def expected(model, key, **options):
    """What the library answers, as the JSON predict.py writes, less the server's file paths."""
    [answer] = Catalog.open(model["path"]).search_ids([key], **options)
    return json.loads(record_json(public(answer)))


def test_more_like_this_answers_what_the_catalog_answers(server, model):
    key = model["ids"][4]
    got = requests.post(server + "/search?top_k=5", json={"id": key}, timeout=30)
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert got.json() == expected(model, key, k=5)
    assert key not in [hit["id"] for hit in got.json()["results"]]
    assert set(got.json()["results"][0]) >= {"id", "score", "scores", "category", "brand"}
    catalog = Catalog.open(model["path"])
    assert all(set(PATH_KEYS) & set(catalog.record(hit["id"])) for hit in got.json()["results"])
    assert not any(set(PATH_KEYS) & set(hit) for hit in got.json()["results"])  # no server paths
    item = requests.get(f"{server}/items/{key}", timeout=30).json()
    assert item["id"] == key and not set(PATH_KEYS) & set(item)


def test_rules_from_the_query_string_or_the_json_body_are_the_same(server, model):
    key, other = model["ids"][4], model["ids"][6]
    rules = Rules(filters={"brand": "acme"}, exclude_ids={other}, same_category=True)
    want = expected(model, key, k=4, rules=rules)
    query = f"/search?top_k=4&same_category=true&filter=brand=acme&exclude_ids={other}"
    by_query = requests.post(server + query, json={"id": key}, timeout=30).json()
    body = {"id": key, "top_k": 4, "same_category": True, "filter": {"brand": "acme"}, "exclude_ids": [other]}
    by_body = requests.post(server + "/search", json=body, timeout=30).json()
    assert by_query == want == by_body
    assert all(hit["brand"] == "acme" and hit["category"] == want["category"] for hit in want["results"])

    weighted = requests.post(server + "/search?views=thumbnail&top_k=3", json={"id": key}, timeout=30).json()
    assert weighted == expected(model, key, k=3, views=["thumbnail"])
    assert set(weighted["results"][0]["scores"]) == {"thumbnail"}


def test_items_their_pictures_and_categories(server, model):
    key = model["ids"][2]
    assert requests.get(f"{server}/items/{key}", timeout=30).json() == public(model["records"][2])
    missing = requests.get(f"{server}/items/nope", timeout=30)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    # the synthetic records name images that do not exist: no picture, and no path is ever taken from the URL
    assert requests.get(f"{server}/items/{key}/image", timeout=30).status_code == 404
    for sneaky in ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "%2Fetc%2Fpasswd"):
        answer = requests.get(f"{server}/items/{sneaky}/image", timeout=30)
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"
    categories = requests.get(server + "/categories", timeout=30).json()
    assert categories["values"] == sorted({record["category"] for record in model["records"]})


def test_a_catalog_thumbnail_is_served_from_the_pipeline_layout(model, tmp_path):
    folder = tmp_path / "out" / "model"
    shutil.copytree(model["path"], folder)
    picture = np.zeros((40, 30, 3), np.uint8)
    picture[:, :, 1] = 200
    os.makedirs(tmp_path / "out" / "views" / "thumbnail")
    name = output_relpath(model["records"][0])  # the name thumbnail.py gives the record's thumbnail
    Image.fromarray(picture).save(tmp_path / "out" / "views" / "thumbnail" / name)
    with live_server(create_app(Service(Catalog.open(folder)), warm=False)) as url:
        answer = requests.get(f"{url}/items/{model['ids'][0]}/image", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    served = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert served.shape == (40, 30, 3) and np.abs(served.astype(int) - picture).max() <= 2


def test_bad_requests_get_json_errors_and_the_server_lives_on(server):
    def post(path="/search", **kwargs):
        answer = requests.post(server + path, timeout=60, **kwargs)
        assert answer.headers["content-type"] == "application/json", answer.text[:200]
        return answer.status_code, answer.json()["error"]

    assert post(files={"image": ("photo.jpg", b"\xff\xd8 not really a jpeg")})[0] == 415
    assert post(files={"image": ("photo.png", b"")}) == (400, "the uploaded image is empty")
    two = [("image", ("a.png", b"abc")), ("image", ("b.png", b"def"))]
    assert post(files=two) == (400, "send one query image a search (POST /items adds many)")
    assert post(files={"other": ("photo.png", b"abc")})[0] == 400
    status, error = post(files={"image": ("big.jpg", b"\0" * (20 * 2**20 + 1))})
    assert status == 413 and "20 MiB" in error
    assert post(json={"id": "nope"})[0] == 404
    assert post(json={"nothing": 1})[0] == 400
    assert post(data=b"{not json", headers={"content-type": "application/json"})[0] == 400
    assert post("/search?top_k=0", json={"id": "item-001"})[0] == 422
    infinite = b'{"id": "item-001", "top_k": Infinity}'  # Python's json reads it; the standard does not
    assert post(data=infinite, headers={"content-type": "application/json"}) == (
        400,
        "the body is not JSON: Infinity is not a JSON number",
    )
    assert post(json={"id": "item-001", "top_k": 2.7})[0] == 422
    assert post("/search?weights=thumbnail=inf", json={"id": "item-001"})[0] == 422
    assert post("/search?boost=brand=acme:1e308", json={"id": "item-001"})[0] == 422
    assert post("/search?views=colour", json={"id": "item-001"}) == (
        422,
        "unknown view(s) colour: the index has edges, thumbnail",
    )
    assert post("/search?boost=brand:2", json={"id": "item-001"})[0] == 422
    hidden = {"id": "item-001", "filter": {"thumbnail": "/guessed/path.png"}}  # no probing server paths
    assert post(json=hidden) == (422, "rules: 'thumbnail' names server files, not a record field")
    status, error = post("/search?topk=3", json={"id": "item-001"})  # a typo is refused, not ignored
    assert status == 422 and error.startswith("unknown parameter(s) topk: use boost, candidates, ")
    assert post("/duplicates", json={"treshold": 0.9})[0] == 422
    assert post("/duplicates", json={"top_k": 3}) == (
        422,
        "unknown parameter(s) top_k: use max_per_item, threshold, views, weights",
    )
    for key in ("image", "thumbnail", "saliency"):  # fields that name server files are no categories
        answer = requests.get(f"{server}/categories?key={key}", timeout=30)
        assert answer.status_code == 422 and "names server files" in answer.json()["error"]
    assert post("/search?crops=everywhere", json={"id": "item-001"}) == (
        422,
        "crops must be one of guided, detector, not 'everywhere'",
    )
    assert post("/duplicates", json={"threshold": 2})[0] == 422
    assert post("/duplicates", json={"threshold": "x"}) == (
        422,
        "threshold must be a number from -1 to 1 (a cosine), not 'x'",
    )
    assert post("/duplicates", json={"max_per_item": 0})[0] == 422
    health = requests.get(server + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_an_oversized_upload_without_a_length_is_stopped_while_it_streams(server):
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    sent = []

    def body():  # chunked: no Content-Length, so only counting the stream can stop it
        yield head
        for _ in range(64):  # 64 MiB offered; the server must answer long before
            sent.append(1)
            yield b"\0" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        answer = requests.post(
            server + "/search",
            data=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            timeout=60,
        )
        assert answer.status_code == 413
    except requests.ConnectionError:
        pass  # the server may close the connection on the rest of the body after answering
    assert len(sent) < 64
    assert requests.get(server + "/health", timeout=30).status_code == 200


def test_write_endpoints_need_the_key(own_server, model):
    url, folder = own_server
    key = model["ids"][3]
    assert requests.delete(f"{url}/items/{key}", timeout=30).status_code == 401
    assert (
        requests.delete(f"{url}/items/{key}", headers={"x-api-key": "wrong"}, timeout=30).status_code == 403
    )
    files = {"image": ("a.png", b"abc")}
    assert requests.post(url + "/items", files=files, timeout=30).status_code == 401
    assert requests.get(f"{url}/items/{key}", timeout=30).status_code == 200  # nothing was removed

    answer = requests.delete(f"{url}/items/{key}", headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["ids"] == [key] and answer.json()["items"] == 39
    assert requests.get(f"{url}/items/{key}", timeout=30).status_code == 404
    assert requests.delete(f"{url}/items/{key}", headers={"x-api-key": KEY}, timeout=30).status_code == 404
    results = requests.post(url + "/search?top_k=38", json={"id": model["ids"][0]}, timeout=30).json()
    assert key not in [hit["id"] for hit in results["results"]]
    assert len(Catalog.open(folder)) == 39  # persisted, as fusion.py --remove does
    assert requests.get(url + "/health", timeout=30).json()["items"] == 39


def test_searches_during_removals_see_the_catalog_before_or_after(own_server, model):
    url, _ = own_server
    doomed = set(model["ids"][20:30])
    failures, answers = [], []

    def searcher(start):
        with requests.Session() as session:
            for number in range(12):
                key = model["ids"][(start + number) % 20]
                answer = session.post(url + "/search?top_k=39", json={"id": key}, timeout=60)
                if answer.status_code != 200:
                    failures.append(answer.text)
                else:
                    answers.append(answer.json())

    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for key in sorted(doomed):
        assert (
            requests.delete(f"{url}/items/{key}", headers={"x-api-key": KEY}, timeout=60).status_code == 200
        )
    for thread in threads:
        thread.join()
    assert not failures and len(answers) == 48
    order = sorted(doomed)
    for answer in answers:
        found = {hit["id"] for hit in answer["results"]}
        # one whole version of the catalog: the first j removals done, and all its other items found
        j = len(doomed - found)
        assert doomed & found == set(order[j:]) and len(found) == 39 - j
        assert all("category" in hit for hit in answer["results"])  # no hit lost its record


def test_duplicates_and_metrics(server, model):
    groups = requests.post(
        server + "/duplicates", json={"threshold": -1, "max_per_item": 3}, timeout=60
    ).json()
    assert groups["threshold"] == -1 and set(groups["duplicates"]) == set(model["ids"])
    assert all(len(found) == 3 for found in groups["duplicates"].values())
    none = requests.post(server + "/duplicates", json={"threshold": 1.0}, timeout=60).json()["duplicates"]
    assert all(found == [] for found in none.values())

    text = requests.get(server + "/metrics", timeout=30).text
    assert "simfusion_catalog_items 40.0" in text
    assert 'simfusion_requests_total{method="POST",route="/duplicates",status="200"}' in text
    assert 'simfusion_request_seconds_bucket{le="0.1",method="POST",route="/duplicates"}' in text


def test_the_page_is_served(server):
    page = requests.get(server + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="app.js">' in page.text
    script = requests.get(server + "/app.js", timeout=30)
    assert script.status_code == 200 and "FormData" in script.text


def test_search_threads_run_faiss_and_blas_on_one_thread():
    # OpenMP's thread count is per thread: the pool's own threads must set it, not only serve.py's
    import faiss
    from threadpoolctl import threadpool_info, threadpool_limits

    from simfusion.serve.app import Context

    original = threadpool_limits(limits=None)  # the BLAS limit is process-wide: restored below
    ctx = Context(None, api_key=None, threads=2, request_timeout=10)
    try:
        omp = ctx.pool.submit(faiss.omp_get_max_threads).result()
        blas = ctx.pool.submit(
            lambda: [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        )
        assert omp == 1 and set(blas.result()) == {1}
    finally:
        ctx.pool.shutdown()
        ctx.writer.shutdown()
        original.restore_original_limits()


def test_serve_py_writes_its_access_log_to_stderr_not_stdout(capfd):
    import logging
    import logging.config

    from simfusion.cli.serve import stderr_log_config

    logging.config.dictConfig(stderr_log_config())
    try:
        access = logging.getLogger("uvicorn.access")
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health", "1.1", 200)
        out, err = capfd.readouterr()
        assert out == "" and "GET /health" in err
    finally:
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True


def test_answers_lose_every_key_that_names_a_server_file():
    answer = {
        "upload": "q.jpg",
        "thumbnail": "/srv/out/views/thumbnail/q.png",
        "results": [
            {"id": "b", "score": 0.9, "category": "bag", "image": "bags/b.jpg", "saliency": "/srv/s/b.png"},
            {"id": "c", "score": 0.8, "edges": "/srv/e/c.png", "foreground": "/srv/f/c.png"},
        ],
    }
    assert public(answer) == {
        "upload": "q.jpg",
        "results": [{"id": "b", "score": 0.9, "category": "bag"}, {"id": "c", "score": 0.8}],
    }


def test_a_crash_is_a_500_that_names_no_server_path(model, monkeypatch):
    service = Service(Catalog.open(model["path"]))

    def broken(item_id):
        raise FileExistsError(17, "File exists", "/srv/secret/uploads")

    monkeypatch.setattr(service, "record", broken)
    with live_server(create_app(service, api_key=KEY, warm=False)) as url:
        answer = requests.get(f"{url}/items/item-001", timeout=30)
        assert answer.status_code == 500 and "/srv/secret" not in answer.text
        assert answer.json()["error"] == "internal error (FileExistsError); the server log has the details"
        assert requests.get(f"{url}/health", timeout=30).status_code == 200


def test_http_details_a_client_relies_on(server):
    head = requests.head(server + "/search", timeout=30)
    assert head.status_code == 405 and head.headers["allow"] == "POST"  # the Allow header a 405 owes
    # media types are case-blind: an upper-case multipart type is still an upload (415: not an image)
    prepared = requests.Request("POST", server + "/search", files={"image": ("a.jpg", b"no")}).prepare()
    prepared.headers["content-type"] = prepared.headers["content-type"].replace(
        "multipart/form-data", "Multipart/Form-Data"
    )
    with requests.Session() as session:
        assert session.send(prepared, timeout=30).status_code == 415
    big = {"image": ("big.png", png_header(8_000, 7_000))}  # 56 MP: over an upload's 50 MP cap
    answer = requests.post(server + "/search", files=big, timeout=30)
    assert answer.status_code == 415 and answer.json()["error"].endswith("over the limit of 50000000")
    many = requests.post(server + "/duplicates", json={"threshold": -1, "max_per_item": 51}, timeout=30)
    assert many.status_code == 422 and "from 1 to 50" in many.json()["error"]


def test_an_id_ending_in_image_is_still_readable(model, tmp_path):
    from simfusion.io.lock import write_lock
    from simfusion.io.store import FeatureStore, store_path
    from simfusion.search.build import add_catalog_items

    folder = tmp_path / "model"
    shutil.copytree(model["path"], folder)
    with FeatureStore(store_path(folder)) as store:
        maps = {view: np.zeros((1, *store.shape(view)[1:]), np.float32) + 0.5 for view in store.views}
    with write_lock(folder):
        add_catalog_items(folder, [{"id": "shoes/image", "image": "x.jpg", "category": "c"}], maps)
    with live_server(create_app(Service(Catalog.open(folder)), warm=False)) as url:
        answer = requests.get(f"{url}/items/shoes/image", timeout=30)
        assert answer.status_code == 200 and answer.json()["id"] == "shoes/image"
        assert requests.get(f"{url}/items/{model['ids'][0]}/image", timeout=30).status_code == 404

"""`alexsuite serve` on a real index, model and detector: the API through the ASGI client and a
real uvicorn process, its limits and token, batching under concurrent queries, an index that
grows while the server runs, and the web page in a real headless Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from alexsuite.cli.main import main
from alexsuite.errors import ConfigError
from alexsuite.serve.app import create_app
from alexsuite.serve.server import Service
from alexsuite.serve.settings import ServeSettings
from tests.conftest import serving


def cli_json(*args) -> list[dict]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def settings(val_index, **kw) -> ServeSettings:
    return ServeSettings(index=str(val_index), device="cpu", **kw)


@pytest.fixture(scope="module")
def client(val_index, trained_detector):
    service = Service(settings(val_index, detector=str(trained_detector), max_pixels=1_000_000)).start()
    with TestClient(create_app(service, service.settings), base_url="http://localhost") as c:
        yield c
    service.stop()


def png(path_or_array) -> bytes:
    img = Image.open(path_or_array) if isinstance(path_or_array, Path) else Image.fromarray(path_or_array)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_health_stats_and_the_page(client):
    assert client.get("/health").json() == {"status": "ok", "reload_problem": None}
    rebound = client.get("/health", headers={"Host": "evil.example:8000"})  # DNS rebinding
    assert rebound.status_code == 403 and "localhost" in rebound.json()["error"]
    stats = client.get("/stats").json()
    assert stats["images"] == 24 and len(stats["model"]["fingerprint"]) == 16 and stats["factory"] == "Flat"
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/..%2F..%2Fsettings.py").status_code == 404
    assert "/search" in client.get("/openapi.json").json()["paths"]


def test_search_answers_as_the_command_does(client, val_photos, val_index):
    query = val_photos / "stripes" / "stripes_001.png"
    (cli,) = cli_json("search", query, "--index", val_index, "-k", 4, "--json")
    up = client.post("/search?k=5", files={"file": ("q.png", png(query), "image/png")})
    assert up.status_code == 200, up.text
    body = up.json()
    assert body["query"] == "q.png" and set(body["results"][0]) == {"rank", "path", "distance", "id", "label"}
    assert body["results"][0]["path"] == str(query) and body["results"][0]["distance"] == pytest.approx(0, abs=1e-4)
    assert [h["path"] for h in body["results"][1:]] == [h["path"] for h in cli["results"]]  # an upload is no row
    own = body["results"][0]["id"]
    (by_id,) = cli_json("search", "--id", own, "--index", val_index, "-k", 4, "--json")
    assert client.get(f"/search?id={own}&k=4").json() == by_id


def test_duplicates_answer_as_the_command_does(client, val_index):
    cli = cli_json("dedup", "--index", val_index, "--threshold", "0.05", "--json")
    body = client.get("/duplicates?threshold=0.05").json()
    assert body["groups"] == cli and body["total"] == len(cli)
    assert client.get("/duplicates?threshold=0.05&limit=1").json()["groups"] == cli[:1]
    assert client.get("/duplicates?threshold=0").json() == {"groups": [], "total": 0}
    bad = client.get("/duplicates?threshold=7")
    assert bad.status_code in (400, 422) and "error" in bad.json()


def test_images_by_id_only(client, val_photos):
    hit = client.get("/search?id=0&k=1").json()["results"][0]
    assert client.get(f"/images/{hit['id']}").content == Path(hit["path"]).read_bytes()
    thumb = client.get(f"/thumbs/{hit['id']}")
    assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).width > 0
    missing = client.get("/images/999999")
    assert missing.status_code == 404 and "no image with id 999999" in missing.json()["error"]
    for bad in ("/images/..%2F..%2Fetc%2Fpasswd", "/images/-1", "/thumbs/1e9", "/images/99999999999999999999"):
        r = client.get(bad)
        assert r.status_code in (404, 422) and "error" in r.json(), bad


def test_bad_uploads_are_json_errors(client, tmp_path):
    big = client.post("/search", files={"file": ("big.png", b"\0" * 21_000_001, "image/png")})
    assert big.status_code == 413 and "20 MB" in big.json()["error"]
    bomb = client.post("/search", files={"file": ("bomb.png", png(np.zeros((1100, 1000, 3), np.uint8)))})
    assert bomb.status_code == 400 and "too large" in bomb.json()["error"]
    strip = client.post("/search?k=2", files={"file": ("strip.png", png(np.zeros((1, 100_000, 3), np.uint8)))})
    assert strip.status_code == 200 and len(strip.json()["results"]) == 2  # not 26 GB scaled up
    junk = client.post("/search", files={"file": ("x.jpg", b"not an image")})
    assert junk.status_code == 400 and junk.json() == {"error": "x.jpg: not an image file (unknown format)"}
    named = client.post("/search", files={"file": ("../../etc/passwd", b"junk")})
    assert named.status_code == 400 and named.json()["error"].startswith("passwd:")  # a name, never opened
    assert client.post("/search").status_code == 422
    assert client.post("/search?k=0", files={"file": ("x.png", png(np.zeros((8, 8, 3), np.uint8)))}).status_code == 422
    wrong = client.get("/search?id=0&params=nprobe%3D4")  # a Flat index has no nprobe
    assert wrong.status_code == 400 and "no search parameters" in wrong.json()["error"]
    assert client.get("/search?id=0").status_code == 200
    assert client.get("/health").status_code == 200  # still up


def test_detect_answers_as_the_command_does(client, trained_detector, voc_scenes):
    photo = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[0]
    (cli,) = cli_json("detect", photo, "--detector", trained_detector, "--threshold", -1, "--json")
    r = client.post("/detect?threshold=-1", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json() == {**cli, "image": photo.name}


def test_token_and_host(val_index):
    service = Service(settings(val_index, token="s3cret")).start()
    try:
        with TestClient(create_app(service, service.settings), base_url="http://localhost") as c:
            assert c.get("/health").status_code == 401 and "token" in c.get("/health").json()["error"]
            assert c.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
            assert c.get("/stats?token=s3cret").status_code == 200
            assert c.get("/stats?token=wrong").status_code == 401
    finally:
        service.stop()
    with pytest.raises(ConfigError, match="--token"):
        ServeSettings(host="0.0.0.0").check()
    ServeSettings(host="0.0.0.0", insecure=True).check()
    ServeSettings(host="::1").check()
    refused = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--index", str(val_index)])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "--token" in refused.output


def test_concurrent_queries_share_forward_passes(val_index, val_photos):
    service = Service(settings(val_index, batch_ms=200)).start()
    app = create_app(service, service.settings)
    files = sorted(val_photos.rglob("*.png"))[:16]
    calls = []
    hook = service.loaded.model.register_forward_hook(lambda *a: calls.append(1))

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            return await asyncio.gather(*(c.post("/search?k=3", files={"file": (f.name, png(f))}) for f in files))

    try:
        answers = asyncio.run(burst())
    finally:
        hook.remove()
        service.stop()
    assert all(a.status_code == 200 for a in answers)
    assert [a.json()["results"][0]["path"] for a in answers] == [str(f) for f in files]  # each finds itself
    assert len(calls) < len(files) and service.batcher.largest > 1


@pytest.fixture()
def server(val_index, trained_detector, tmp_path):
    """A real `alexsuite serve` process on a copy of the index (the tests add to it)."""
    index = tmp_path / "idx"
    shutil.copytree(val_index, index)
    with serving("--index", index, "--detector", trained_detector) as url:
        yield url, index


def test_a_real_server_follows_the_index_as_it_grows(server, val_photos, trained_run, tmp_path):
    url, index = server
    more = tmp_path / "more"
    more.mkdir()
    for f in sorted((val_photos / "circle").glob("*.png")):
        mirrored = np.asarray(Image.open(f).convert("RGB"))[:, ::-1]  # new files, new vectors
        Image.fromarray(np.ascontiguousarray(mirrored)).save(more / f.name)
    query = png(more / "circle_000.png")
    errors, answers, stop = [], [], threading.Event()

    def hammer():
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set() or len(answers) < 200:
                r = c.post("/search?k=1", files={"file": ("q.png", query)})
                (answers if r.status_code == 200 else errors).append(r)

    worker = threading.Thread(target=hammer)
    worker.start()
    subprocess.run(
        [sys.executable, "-m", "alexsuite.cli", "index", more, "--index", index, "--workers", "0", "--device", "cpu"],
        check=True,
        capture_output=True,
    )
    done = time.monotonic()
    seen = None
    while time.monotonic() - done < 2.0:
        if httpx.post(url + "/search?k=1", files={"file": ("q.png", query)}).json()["results"][0]["path"] == str(
            more / "circle_000.png"
        ):
            seen = time.monotonic() - done
            break
        time.sleep(0.05)
    stop.set()
    worker.join(timeout=120)
    assert seen is not None, "the server did not see the new images within 2 s"
    assert not errors and len(answers) >= 200
    assert httpx.get(url + "/stats").json()["images"] == 32


def chromium() -> tuple[str, str] | None:
    found = [shutil.which(n) for n in ("chromium", "chromium-browser")]
    driver = shutil.which("chromedriver")
    browser = next((f for f in found if f), None)
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_the_page_in_a_real_browser(server, val_photos, voc_scenes, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    browser, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    web = webdriver.Chrome(service=DriverService(driver), options=options)
    try:
        web.get(url + "/")
        query = val_photos / "square" / "square_003.png"
        web.find_element(By.ID, "file").send_keys(str(query))
        WebDriverWait(web, 30).until(lambda w: w.find_element(By.TAG_NAME, "body").get_attribute("data-state"))
        assert web.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "results"
        shown = "return [...document.querySelectorAll('#results .hit')].map(c => c.dataset.path)"
        paths = web.execute_script(shown)
        assert len(paths) == 12 and paths[0] == str(query)  # an upload finds its own file first
        clicked = paths[1]
        web.find_elements(By.CSS_SELECTOR, "#results .hit")[1].click()  # search by a result's id
        WebDriverWait(web, 30).until(lambda w: w.execute_script(shown) != paths)
        assert clicked not in web.execute_script(shown)  # an indexed query is left out of its results
        shots = Path(os.environ.get("ALEXSUITE_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        web.save_screenshot(str(shots / "serve_page.png"))
        assert Image.open(shots / "serve_page.png").width >= 1000

        photo = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[0]
        web.find_element(By.ID, "tab-detect").click()
        web.find_element(By.ID, "threshold").clear()
        web.find_element(By.ID, "threshold").send_keys("-1")
        web.find_element(By.ID, "detect-file").send_keys(str(photo))
        WebDriverWait(web, 60).until(
            lambda w: w.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "results"
        )
        assert web.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "detected"
        expected = httpx.post(url + "/detect?threshold=-1", files={"file": (photo.name, photo.read_bytes())}).json()
        drawn = web.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height]")
        assert drawn == [expected["width"], expected["height"]]  # the boxes are drawn on the photo itself
        assert len(web.find_elements(By.CSS_SELECTOR, "#boxes li")) == len(expected["detections"]) > 0
        web.save_screenshot(str(shots / "serve_detect.png"))

        web.find_element(By.ID, "tab-duplicates").click()
        web.find_element(By.ID, "dup-threshold").send_keys("0.5")
        web.find_element(By.ID, "find-duplicates").click()
        WebDriverWait(web, 60).until(
            lambda w: w.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "duplicates"
        )
        expected = httpx.get(url + "/duplicates?threshold=0.5").json()["groups"]
        rows = "return [...document.querySelectorAll('#groups .group')].map(g => g.querySelectorAll('.hit').length)"
        assert web.execute_script(rows) == [1 + len(g["duplicates"]) for g in expected] and expected
        web.save_screenshot(str(shots / "serve_duplicates.png"))
    finally:
        web.quit()

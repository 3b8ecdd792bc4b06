"""The search page in a real browser: headless Chromium (driven by Selenium) types a query and finds the student's
results, the teacher's beside them, their overlap and latencies. Skips with the reason where no browser can be had
(Debian: ``apt-get install chromium chromium-driver``; Python: ``selenium``)."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from .serving_fixtures import serving_files

webdriver = pytest.importorskip("selenium.webdriver", reason="the page test needs selenium (the dev extra)")
uvicorn = pytest.importorskip("uvicorn", reason="the page test needs the serve extra")
pytest.importorskip("starlette", reason="the page test needs the serve extra")

QUERY = "interest rate of the bank"


def find_browser() -> tuple[str, str]:
    """Paths of Chromium and its driver, or skip."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver packages")
    return browser, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from serving.app import create_app
    from serving.config import ServeConfig
    from serving.service import EmbeddingService

    files = serving_files(tmp_path_factory)
    config = ServeConfig(model=files.student, index=files.index, corpus=files.corpus, teacher=files.teacher)
    service = EmbeddingService.load(config)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", files, service
    running.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = find_browser()
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    try:
        chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    except Exception as error:  # a browser that cannot start here (missing libraries, no sandbox support)
        pytest.skip(f"headless Chromium could not start: {error}")
    yield chrome
    chrome.quit()


def shown_ids(browser, side: str) -> list[str]:
    from selenium.webdriver.common.by import By

    items = browser.find_elements(By.CSS_SELECTOR, f"#{side}-results li")
    return [item.find_element(By.CLASS_NAME, "doc-id").text for item in items]


def test_page_searches_and_shows_both_sides(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from bertapprox_hf.inference import Encoder
    from indexers.faiss_indexer import FaissIndexer

    url, files, service = server
    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready === 'true'"))
    assert "index of 60 documents" in browser.find_element(By.ID, "model").text
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys(QUERY)
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("5")
    browser.find_element(By.ID, "search").click()
    wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#teacher-results li")))

    shown = shown_ids(browser, "student")
    expected = FaissIndexer.load(files.index).search([QUERY], k=5, query_encoder=Encoder.from_pretrained(files.student))
    assert shown == expected.ids[0]
    first_text = browser.find_element(By.CSS_SELECTOR, "#student-results li .text").text
    assert first_text == files.texts[int(shown[0].removeprefix("doc"))]
    teacher_ids = shown_ids(browser, "teacher")
    assert len(teacher_ids) == 5
    both = len(set(shown) & set(teacher_ids))
    assert f"{both} documents in both" in browser.find_element(By.ID, "overlap").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#student-results li.shared")) == both
    assert browser.find_element(By.ID, "student-latency").text.endswith("ms)")
    assert browser.find_element(By.ID, "teacher-latency").text.endswith("ms")

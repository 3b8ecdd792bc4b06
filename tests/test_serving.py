"""The HTTP server on a real tiny student: endpoint shapes (TEI, OpenAI), embeddings equal to the Encoder's,
search (student-only and asymmetric indexes), every limit's error code, concurrency, metrics, shutdown."""

from __future__ import annotations

import asyncio
import base64
import re
import threading

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serving tests need the 'serve' extra")
pytest.importorskip("prometheus_client", reason="the serving tests need the 'serve' extra")
httpx = pytest.importorskip("httpx", reason="the serving tests need httpx")

from starlette.testclient import TestClient  # noqa: E402

from bertapprox_hf.inference import Encoder  # noqa: E402
from serving.app import create_app  # noqa: E402
from serving.backends import load_backend  # noqa: E402
from serving.config import ServeConfig  # noqa: E402
from serving.service import EmbeddingService  # noqa: E402

from .serving_fixtures import random_texts, serving_files  # noqa: E402

QUERIES = ["new york city", "what is the interest rate", "the bank said", "oil price market", "cat and dog"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return serving_files(tmp_path_factory)


@pytest.fixture(scope="module")
def encoder(files) -> Encoder:
    return Encoder.from_pretrained(files.student, device="cpu", cache_size=0)


def make_service(files, index: str | None = "index", **settings) -> EmbeddingService:
    paths = {"index": files.index, "asymmetric": files.asymmetric_index, None: None}
    config = ServeConfig(model=files.student, index=paths[index], corpus=files.corpus if index else None, **settings)
    return EmbeddingService.load(config)


@pytest.fixture(scope="module")
def client(files):
    with TestClient(create_app(make_service(files))) as test_client:
        yield test_client


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            found = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if found == wanted:
                return float(match.group(3))
    return 0.0


# --- shapes and values ----------------------------------------------------------------------------
def test_embed_has_the_tei_shape_and_the_encoders_values(client, encoder):
    answer = client.post("/embed", json={"inputs": QUERIES, "normalize": False})
    assert answer.status_code == 200
    vectors = answer.json()
    assert isinstance(vectors, list) and len(vectors) == len(QUERIES)
    assert all(isinstance(v, list) and len(v) == encoder.dim and isinstance(v[0], float) for v in vectors)
    np.testing.assert_allclose(np.array(vectors, dtype=np.float32), encoder.encode(QUERIES), atol=1e-6)

    single = client.post("/embed", json={"inputs": QUERIES[0]}).json()  # normalize defaults to true, as in TEI
    assert len(single) == 1
    expected = encoder.encode([QUERIES[0]], normalize_embeddings=True)
    np.testing.assert_allclose(np.array(single), expected, atol=1e-6)
    assert abs(np.linalg.norm(single[0]) - 1) < 1e-5


def test_openai_embeddings_shape_float_and_base64(client, encoder):
    answer = client.post("/v1/embeddings", json={"input": QUERIES[:3], "model": "my-model"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "list" and body["model"] == "my-model"
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(item["object"] == "embedding" for item in body["data"])
    floats = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(floats, encoder.encode(QUERIES[:3]), atol=1e-6)
    usage = body["usage"]
    bags = encoder.tokenizer.encode_bags(QUERIES[:3], encoder.max_bag_size)
    assert usage["prompt_tokens"] == usage["total_tokens"] == sum(len(bag) for bag in bags)

    packed = client.post("/v1/embeddings", json={"input": QUERIES[:3], "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in packed["data"]])
    np.testing.assert_array_equal(decoded, floats)
    assert isinstance(packed["model"], str) and packed["model"]


def test_search_returns_ids_scores_and_texts_like_the_index(client, encoder, files):
    from indexers.faiss_indexer import FaissIndexer

    index = FaissIndexer.load(files.index)
    expected = index.search(QUERIES[:2], k=5, query_encoder=encoder)
    body = client.post("/search", json={"queries": QUERIES[:2], "k": 5}).json()
    assert body["k"] == 5 and len(body["results"]) == 2
    texts = dict(zip([f"doc{i}" for i in range(len(files.texts))], files.texts, strict=True))
    for result, query, ids, scores in zip(body["results"], QUERIES[:2], expected.ids, expected.scores, strict=True):
        assert result["query"] == query
        assert [hit["id"] for hit in result["hits"]] == ids
        np.testing.assert_allclose([hit["score"] for hit in result["hits"]], scores, atol=1e-5)
        assert all(hit["text"] == texts[hit["id"]] for hit in result["hits"])
    one = client.post("/search", json={"query": QUERIES[0], "k": 3}).json()
    assert [hit["id"] for hit in one["results"][0]["hits"]] == expected.ids[0][:3]
    assert set(one["seconds"]) == {"embed", "search", "total"}


def test_asymmetric_index_is_searched_with_student_queries(files, encoder):
    from indexers.faiss_indexer import FaissIndexer

    index = FaissIndexer.load(files.asymmetric_index)
    expected = index.search(QUERIES, k=4, query_encoder=encoder)
    with TestClient(create_app(make_service(files, "asymmetric"))) as asymmetric:
        body = asymmetric.post("/search", json={"queries": QUERIES, "k": 4}).json()
        info = asymmetric.get("/info").json()
    assert [[hit["id"] for hit in r["hits"]] for r in body["results"]] == expected.ids
    assert info["index"]["asymmetric"] is True and info["index"]["documents"] == len(files.texts)


def test_search_without_an_index_says_so(files):
    with TestClient(create_app(make_service(files, index=None))) as plain:
        answer = plain.post("/search", json={"query": "bank"})
    assert answer.status_code == 404 and "--index" in answer.json()["error"]


def test_health_and_info(client, encoder, files):
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ready", "reasons": []}
    info = client.get("/info").json()
    assert info["model_type"] == "student" and info["dim"] == encoder.dim and info["dtype"] == "float32"
    assert info["vocabulary_size"] == encoder.vocab_size and info["teacher"] == encoder.config.teacher
    assert info["index_size"] == len(files.texts) and isinstance(info["version"], str)
    assert info["max_client_batch_size"] == ServeConfig().max_texts_per_request


def test_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="query"' in page.text


# --- limits and bad input -------------------------------------------------------------------------
def test_every_limit_and_bad_input_gets_its_code(files):
    service = make_service(files, max_texts_per_request=4, max_chars_per_text=50, max_k=20)
    with TestClient(create_app(service)) as limited:
        cases = [
            ("/embed", {"inputs": ["a"] * 5}, 413, "payload_too_large"),
            ("/embed", {"inputs": ["x" * 51]}, 422, "text_too_long"),
            ("/embed", {"inputs": []}, 422, "validation"),
            ("/embed", {"inputs": [1, 2]}, 422, "validation"),
            ("/embed", {"text": "a"}, 422, "validation"),
            ("/embed", {"inputs": "a", "normalize": "yes"}, 422, "validation"),
            ("/search", {"query": "bank", "k": 21}, 422, "validation"),
            ("/search", {"query": "bank", "k": 0}, 422, "validation"),
            ("/search", {"query": "a", "queries": ["b"]}, 422, "validation"),
            ("/search", {"queries": ["a"] * 5}, 413, "payload_too_large"),
        ]
        for path, body, status, kind in cases:
            answer = limited.post(path, json=body)
            assert answer.status_code == status, (path, body, answer.text)
            assert answer.json()["error_type"] == kind and answer.json()["error"]
        not_json = limited.post("/embed", content=b"{not json", headers={"content-type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["error_type"] == "invalid_json"
        huge = limited.post("/embed", content=b" " * (service.config.max_body_bytes + 1))
        assert huge.status_code == 413
        tokens = limited.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
        assert tokens.status_code == 422 and tokens.json()["error"]["type"] == "invalid_request_error"
        too_many = limited.post("/v1/embeddings", json={"input": ["a"] * 5})
        assert too_many.status_code == 413 and too_many.json()["error"]["param"] == "input"
        wrong_format = limited.post("/v1/embeddings", json={"input": "a", "encoding_format": "int8"})
        assert wrong_format.status_code == 422
        assert limited.post("/embed", json={"inputs": ["fine"]}).status_code == 200  # still serving
        text = limited.get("/metrics").text
    assert metric(text, "bertapprox_errors_total", endpoint="embed", code="413", type="payload_too_large") == 2
    assert metric(text, "bertapprox_requests_total", endpoint="embed", code="422") == 5


class GatedBackend:
    """A backend whose batches wait until the gate opens (to fill the queue on purpose)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.gate = threading.Event()
        self.batches: list[int] = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def encode(self, texts):
        self.gate.wait(timeout=30)
        self.batches.append(len(texts))
        return self.backend.encode(texts)


def gated_service(files, **settings) -> tuple[EmbeddingService, GatedBackend]:
    config = ServeConfig(model=files.student, **settings)
    gated = GatedBackend(load_backend(files.student, cache_size=0))
    return EmbeddingService(gated, config), gated


async def _post_all(app, requests: list[tuple[str, dict]], after_start=None) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        tasks = []
        for path, body in requests:
            tasks.append(asyncio.create_task(http.post(path, json=body)))
            await asyncio.sleep(0.005)  # they arrive in order
        if after_start is not None:
            await after_start()
        return await asyncio.gather(*tasks)


def test_full_queue_answers_429_at_once_and_serves_the_accepted(files, encoder):
    service, gated = gated_service(files, max_queued_requests=3)
    app = create_app(service)

    async def scenario():
        await service.start()
        try:

            async def open_gate():
                await asyncio.sleep(0.1)
                gated.gate.set()

            bodies = [("/embed", {"inputs": [text], "normalize": False}) for text in QUERIES]
            return await _post_all(app, bodies, open_gate)
        finally:
            await service.stop()

    answers = asyncio.run(scenario())
    codes = [answer.status_code for answer in answers]
    assert codes == [200, 200, 200, 429, 429]
    assert answers[3].json()["error_type"] == "overloaded"
    for text, answer in zip(QUERIES[:3], answers[:3], strict=True):
        np.testing.assert_allclose(answer.json()[0], encoder.encode(text), atol=1e-6)
    assert service.health()[0] == "stopping"


def test_concurrent_requests_each_get_their_own_answer_in_shared_batches(files, encoder):
    service, gated = gated_service(files, max_queued_requests=100, max_batch_texts=64)
    app = create_app(service)
    texts = random_texts(60, seed=7)
    requests = [("/embed", {"inputs": [text], "normalize": False}) for text in texts[:40]]
    requests += [("/embed", {"inputs": texts[40 + 4 * i : 44 + 4 * i], "normalize": False}) for i in range(5)]

    async def scenario():
        await service.start()
        try:

            async def open_gate():
                gated.gate.set()

            return await _post_all(app, requests, open_gate)
        finally:
            await service.stop()

    answers = asyncio.run(scenario())
    assert all(answer.status_code == 200 for answer in answers)
    for (_, body), answer in zip(requests, answers, strict=True):
        np.testing.assert_allclose(np.array(answer.json()), encoder.encode(body["inputs"]), atol=1e-6)
    assert sum(gated.batches) == 60 and max(gated.batches) > 1  # requests were batched together


def test_shutdown_answers_what_it_accepted_then_refuses(files):
    service, gated = gated_service(files)
    app = create_app(service)

    async def scenario():
        await service.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            accepted = [asyncio.create_task(http.post("/embed", json={"inputs": [t]})) for t in QUERIES]
            await asyncio.sleep(0.05)
            stopping = asyncio.create_task(service.stop())
            await asyncio.sleep(0.05)
            late = await http.post("/embed", json={"inputs": ["late"]})
            health = await http.get("/health")
            gated.gate.set()
            await stopping
            return await asyncio.gather(*accepted), late, health

    accepted, late, health = asyncio.run(scenario())
    assert [answer.status_code for answer in accepted] == [200] * len(QUERIES)
    assert late.status_code == 503 and health.status_code == 503


# --- metrics --------------------------------------------------------------------------------------
def test_metrics_are_present_and_count(files):
    with TestClient(create_app(make_service(files))) as fresh:
        for _ in range(3):
            fresh.post("/embed", json={"inputs": ["the bank rate", "new york"]})
        fresh.post("/search", json={"query": "oil price", "k": 3})
        fresh.post("/embed", json={"inputs": []})
        text = fresh.get("/metrics").text
    assert metric(text, "bertapprox_requests_total", endpoint="embed", code="200") == 3
    assert metric(text, "bertapprox_requests_total", endpoint="embed", code="422") == 1
    assert metric(text, "bertapprox_request_seconds_count", endpoint="embed") == 4
    assert metric(text, "bertapprox_texts_total") == 7
    assert metric(text, "bertapprox_cache_hits_total") == 4  # the 2nd and 3rd requests repeat the 1st
    assert metric(text, "bertapprox_cache_hit_rate") == pytest.approx(4 / 7)
    for stage in ("queue", "search"):
        assert metric(text, "bertapprox_stage_seconds_count", stage=stage) >= 1
    assert metric(text, "bertapprox_stage_seconds_count", stage="tokenization") == 2  # batches with new texts
    assert metric(text, "bertapprox_batch_texts_count") == 4 and metric(text, "bertapprox_batch_texts_sum") == 7
    assert metric(text, "bertapprox_texts_per_second") > 0
    assert metric(text, "bertapprox_queue_depth") == 0
    assert metric(text, "process_resident_memory_bytes") > 1e6
    assert "process_cpu_seconds_total" in text


# --- the batcher on its own -----------------------------------------------------------------------
class CountingEncoder:
    """Rows of ones; remembers each batch."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, texts):
        from serving.backends import Encoded

        self.batches.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError("the model failed")
        rows = np.arange(len(texts), dtype=np.float32)[:, None].repeat(2, 1)
        return Encoded(rows, [1] * len(texts), 0.0, 0.0, 0)


def test_batcher_waits_for_more_requests_and_keeps_whole_requests_together():
    from serving.batcher import Batcher

    encode = CountingEncoder()

    async def scenario():
        batcher = Batcher(encode, max_batch_texts=5, max_wait_ms=200, max_queued=10)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(batcher.submit(["b", "c"]))
        third = asyncio.create_task(batcher.submit(["d", "e", "f"]))  # would overflow the batch: goes next
        results = await asyncio.gather(first, second, third)
        await batcher.close()
        return results

    first, second, third = asyncio.run(scenario())
    assert encode.batches == [["a", "b", "c"], ["d", "e", "f"]]
    assert second.rows[:, 0].tolist() == [1.0, 2.0] and third.rows[:, 0].tolist() == [0.0, 1.0, 2.0]
    assert first.queue_seconds >= 0


def test_a_failing_model_answers_500_to_its_batch_and_the_server_goes_on(files):
    service = EmbeddingService(load_backend(files.student, cache_size=0), ServeConfig(model=files.student))
    service.batcher.encode = CountingEncoder(fail_on="boom")
    with TestClient(create_app(service)) as failing:
        broken = failing.post("/embed", json={"inputs": ["boom"]})
        fine = failing.post("/embed", json={"inputs": ["fine"]})
        text = failing.get("/metrics").text
    assert broken.status_code == 500 and "the model failed" in broken.json()["error"]
    assert fine.status_code == 200
    assert metric(text, "bertapprox_errors_total", endpoint="embed", code="500", type="internal") == 1

"""The HTTP API in-process (FastAPI's TestClient) over the tiny demo model: it answers what the Translator answers,
one output per input in order; concurrent requests share a Translator call; every limit and every bad input is a 4xx
naming the problem, never a 500; attention rows sum to 1 and the decoder's are causal. Skipped (saying why) without
the `serve` extra."""

import json
import threading
from dataclasses import asdict

import pytest
import torch
from test_end_to_end import SENTENCES, assert_translates

from transformer.checkpoint import read_checkpoint

pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
pytest.importorskip("httpx", reason='FastAPI\'s TestClient needs httpx: pip install -e ".[test,serve]"')

from fastapi.testclient import TestClient  # noqa: E402

from transformer.serving import BatchingWorker, Limits, create_app, model_info  # noqa: E402

LIMITS = Limits(max_sentences=8, max_chars=60, max_body_bytes=2000, max_beam=5)
CAT = "The cat sat on the mat."


@pytest.fixture(scope="module")
def client(demo_run, translator):
    app = create_app(translator, model_info(read_checkpoint(demo_run)), LIMITS)
    with TestClient(app, raise_server_exceptions=False) as client:  # a bug shows as a 500, which the tests check
        yield client


def post(client, path: str, body) -> tuple[int, dict]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


def test_health_and_info_describe_the_checkpoint(client, demo_run, translator):
    assert client.get("/health").json() == {"status": "ok"}
    checkpoint = read_checkpoint(demo_run)
    info = client.get("/info").json()
    assert info["step"] == checkpoint.state["step"] == 300
    assert info["dev_bleu"] == round(checkpoint.state["best_bleu"], 2) and info["dev_bleu"] > 0
    assert info["vocab_size"] == translator.tokenizer.vocab_size == 150
    assert info["model"] == asdict(checkpoint.config.model) and info["model"]["d_model"] == 64
    assert info["decoding"]["beam_size"] == checkpoint.config.decoding.beam_size
    assert info["limits"] == asdict(LIMITS)
    assert info["checkpoint"] == "demo/best.pt"


@pytest.mark.parametrize("beam", [None, 3])
def test_translations_are_the_translators_one_per_input_in_order(client, translator, beam):
    sentences = [SENTENCES[0], "", CAT, "   ", SENTENCES[1], SENTENCES[2]]
    expected = translator.with_search(beam).translate(sentences)
    assert_translates([t for s, t in zip(sentences, expected, strict=True) if s.strip()])
    assert expected[1] == expected[3] == ""  # an empty sentence translates to an empty string
    body = {"text": sentences} if beam is None else {"text": sentences, "beam": beam}
    assert post(client, "/translate", body) == (200, {"translations": expected})
    body["text"] = sentences[::-1]
    assert post(client, "/translate", body) == (200, {"translations": expected[::-1]})


def test_no_sentences_give_no_translations(client):
    assert post(client, "/translate", {"text": []}) == (200, {"translations": []})


def test_concurrent_requests_each_get_their_own_translations(client, translator):
    requests = [([SENTENCES[i % 3], SENTENCES[(i + 1) % 3]][: 1 + i % 2], [None, 2][i % 2]) for i in range(8)]
    expected = [translator.with_search(beam).translate(sentences) for sentences, beam in requests]
    answers: list = [None] * len(requests)

    def ask(i: int) -> None:
        sentences, beam = requests[i]
        answers[i] = post(client, "/translate", {"text": sentences, "beam": beam})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == [(200, {"translations": e}) for e in expected]


def test_waiting_requests_share_one_translator_call_per_beam(translator):
    worker = BatchingWorker(translator)
    try:
        busy, gate = threading.Event(), threading.Event()
        worker.call(lambda: busy.set() or gate.wait(60))  # hold the model's thread while requests queue up
        assert busy.wait(60)
        greedy = [worker.translate([s]) for s in SENTENCES]
        gone = worker.translate([CAT])
        assert gone.cancel()  # its client went away before its turn
        beam = worker.translate(SENTENCES[:2], beam_size=2)
        failing = worker.call(lambda: 1 / 0)
        gate.set()
        assert [f.result(60) for f in greedy] == [[t] for t in translator.translate(SENTENCES)]
        assert beam.result(60) == translator.with_search(2).translate(SENTENCES[:2])
        assert isinstance(failing.exception(60), ZeroDivisionError)
        assert worker.stats == {"requests": 4, "sentences": 5, "translator_calls": 2}
        assert worker.translate([CAT]).result(60) == translator.translate([CAT])  # the thread survived the error
    finally:
        worker.close()


def test_sampled_requests_are_the_translators_each_translated_alone(client, translator):
    sampling = {"temperature": 1.5, "top_k": 5, "top_p": 0.9, "seed": 4}
    expected = translator.with_search(**sampling).translate(SENTENCES)
    assert post(client, "/translate", {"text": SENTENCES, **sampling}) == (200, {"translations": expected})
    assert post(client, "/translate", {"text": SENTENCES, "temperature": 1.5, "top_k": 1}) == (
        200, {"translations": translator.translate(SENTENCES)}
    )  # fmt: skip
    worker = BatchingWorker(translator)
    try:
        busy, gate = threading.Event(), threading.Event()
        worker.call(lambda: busy.set() or gate.wait(60))
        assert busy.wait(60)
        alone = [worker.translate([s], **sampling) for s in SENTENCES]  # the same settings, yet a call each
        gate.set()
        assert [f.result(60) for f in alone] == [translator.with_search(**sampling).translate([s]) for s in SENTENCES]
        assert worker.stats == {"requests": 3, "sentences": 3, "translator_calls": 3}
    finally:
        worker.close()


def test_each_limit_is_a_4xx_naming_it(client):
    at_limit = {"text": ["x" * 60] * 8, "beam": 5}
    assert post(client, "/translate", at_limit)[0] == 200
    over = [
        ({"text": ["a"] * 9}, 413, "at most 8 sentences per request, got 9"),
        ({"text": ["a", "x" * 61]}, 422, "text[1]: at most 60 characters per sentence, got 61"),
        ({"text": ["a"], "beam": 6}, 422, '"beam" must be between 1 and 5, got 6'),
        ({"text": ["a"], "temperature": -1}, 422, '"temperature" must be >= 0 (0: no sampling), got -1.0'),
        ({"text": ["a"], "temperature": 1, "top_k": -1}, 422, '"top_k" must be >= 0 (0: every piece), got -1'),
        ({"text": ["a"], "temperature": 1, "top_p": 1.5}, 422, '"top_p" must be in (0, 1], got 1.5'),
        ({"text": ["a"], "temperature": 1, "seed": -1}, 422, '"seed" must be >= 0, got -1'),
        ({"text": ["a"], "temperature": 1, "beam": 2}, 422, "sampling takes beam size 1 (one draw a sentence), not 2"),
        ({"text": [], "top_p": 0.5}, 422, "top-k, top-p and the seed shape sampling: give a temperature > 0 as well"),
        (
            big := {"text": ["a"], "pad": "x" * 2000},
            413,
            f"the request body is at most 2000 bytes, got {len(json.dumps(big))}",
        ),
    ]
    for body, status, message in over:
        code, answer = post(client, "/translate", body)
        assert code == status and answer["error"].startswith(message), (body, answer)
    assert post(client, "/attention", {"text": "x" * 61}) == (
        422, {"error": '"text": at most 60 characters per sentence, got 61'}
    )  # fmt: skip
    chunked = client.post("/translate", content=iter([b'{"text": ["', b"a" * 1500, b"a" * 1500, b'"]}']))
    assert chunked.status_code == 413 and "at most 2000 bytes" in chunked.json()["error"]  # no Content-Length


BAD_TRANSLATE = [
    b"", b"{", b"not json", b"\xff\xfe\x00", b"[" * 1990, b"null", b"[]", b'"text"', b"3",
    b'{"text": "The cat."}', b'{"text": null}', b'{"text": {"a": 1}}', b'{"text": [1, 2]}', b'{"text": [null]}',
    b'{"text": [["a"]]}', b'{"text": [true]}', b'{"beam": 2}', b'{"text": ["a"], "beam": 0}',
    b'{"text": ["a"], "beam": -1}', b'{"text": ["a"], "beam": 1e9}', b'{"text": ["a"], "beam": 2.5}',
    b'{"text": ["a"], "beam": "2"}', b'{"text": ["a"], "beam": true}', b'{"text": ["a"], "beam": NaN}',
    b'{"text": ["a"], "beam": ' + b"9" * 5000 + b"}", b'{"text": ["a"], "beem": 2}', b'{"text": ["a"]} trailing',
    b'{"text": ["a"], "temperature": NaN}', b'{"text": ["a"], "temperature": Infinity}',
    b'{"text": ["a"], "temperature": "hot"}', b'{"text": ["a"], "temperature": ' + b"9" * 400 + b"}",
    b'{"text": ["a"], "temperature": 1, "top_k": 2.5}', b'{"text": ["a"], "temperature": 1, "top_p": 0}',
    b'{"text": ["a"], "temperature": 1, "top_p": true}', b'{"text": ["a"], "temperature": 1, "seed": "1"}',
    b'{"text": ["a"], "temperature": 0.5, "beam": 3}', b'{"text": ["a"], "seed": 1}', b'{"text": ["a"], "top_k": 1}',
]  # fmt: skip
BAD_ATTENTION = [b"", b"{", b"[]", b'{"text": ["a"]}', b'{"text": 3}', b'{"text": ""}', b'{"text": "  "}',
                 b'{"text": "a", "beam": 2}', b'{"txt": "a"}']  # fmt: skip


BAD = [("/translate", body) for body in BAD_TRANSLATE] + [("/attention", body) for body in BAD_ATTENTION]


@pytest.mark.parametrize(("path", "body"), BAD)
def test_bad_input_is_a_4xx_with_one_line_never_a_500(client, path, body):
    code, answer = post(client, path, body)
    assert 400 <= code < 500, (code, answer)
    assert set(answer) == {"error"} and answer["error"] and "\n" not in answer["error"], answer


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/nowhere").status_code == 404 and client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/translate").status_code == 405 and "error" in client.get("/translate").json()


def test_attention_rows_sum_to_one_and_the_decoder_reads_only_the_past(client, translator):
    code, answer = post(client, "/attention", {"text": CAT})
    assert code == 200
    translation, maps = translator.attention_maps(CAT)
    assert answer["translation"] == translation == translator.translate([CAT])[0]  # greedy, the demo's search
    for kind in ("cross", "encoder", "decoder"):
        got = answer[kind]
        assert (got["queries"], got["keys"]) == (maps[kind].query_pieces, maps[kind].key_pieces), kind
        weights = torch.tensor(got["weights"])  # (layers, heads, queries, keys)
        assert weights.shape == maps[kind].weights.shape == (1, 4, len(got["queries"]), len(got["keys"]))
        assert torch.allclose(weights, maps[kind].weights, atol=1e-4), kind
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-3), kind
    decoder = torch.tensor(answer["decoder"]["weights"])
    assert answer["decoder"]["keys"][0] == "<s>" and decoder.shape[-1] == decoder.shape[-2]
    above = torch.ones(decoder.shape[-2:], dtype=torch.bool).triu(1)  # key after query
    assert (decoder[..., above] == 0).all() and (decoder[..., ~above] > 0).any()
    assert answer["cross"]["queries"] == answer["decoder"]["queries"]
    assert answer["encoder"]["queries"] == answer["encoder"]["keys"] == answer["cross"]["keys"]


def test_the_page_is_one_self_contained_file(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    for element in ('id="source"', 'id="translate"', 'id="output"', 'id="cross"', 'id="encoder"', 'id="decoder"'):
        assert element in page, element
    assert f'value="{CAT}"' in page
    for external in ("src=", "href=", "@import", "url(", "//cdn", "<link"):
        assert external not in page, external

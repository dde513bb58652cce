"""An HTTP translation API and a page that shows attention: `create_app(translator, info, limits)` (the serve extra).

    POST /translate {"text": ["The cat sleeps.", ...], "beam": 4}  →  {"translations": ["Le chat dort.", ...]}
    POST /translate {"text": [...], "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 1}  →  sampled translations
    POST /attention {"text": "The cat sleeps."}  →  the greedy translation and its cross, encoder, decoder attention
    GET  /health, GET /info, GET / (the page)

Bad input is a 4xx with {"error": "one line naming the limit or the field"}, never a 500. Nothing in the package
imports this module: the rest of the toolkit works without FastAPI. docs/serving.md tells the whole contract.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from transformer.checkpoint import Checkpoint
from transformer.errors import ToolkitError
from transformer.translator import ATTENTION_KINDS, SEARCH_RULES, Translator

log = logging.getLogger(__name__)

# The page may load nothing from elsewhere: its script and style are inline, its data comes from this server.
PAGE_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; each violation is a 4xx naming the limit."""

    max_sentences: int = 64  # sentences per /translate request
    max_chars: int = 1000  # characters per sentence (the model truncates at its max_positions pieces anyway)
    max_body_bytes: int = 1 << 20  # request body
    max_beam: int = 16  # beam size a request may ask for


def model_info(checkpoint: Checkpoint) -> dict[str, Any]:
    """What GET /info tells about the model: its config, vocabulary, training step and best dev BLEU."""
    state, config = checkpoint.state, checkpoint.config
    best = state.get("best_bleu")  # -1 before the first validation; absent from averaged checkpoints
    return {
        "checkpoint": f"{checkpoint.path.parent.name}/{checkpoint.path.name}",
        "step": state.get("step"),
        "dev_bleu": round(float(best), 2) if best is not None and best >= 0 else None,
        "vocab_size": checkpoint.tokenizer.vocab_size,
        "model": asdict(config.model),
        "decoding": asdict(config.decoding),
    }


# -- the model's thread ------------------------------------------------------------------------------------------


@dataclass
class _Translate:
    sentences: list[str]
    search: dict[str, Any]  # Translator.with_search's arguments; empty: the config's
    sampled: bool  # translated alone, not with other requests
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    function: Callable[[], Any]
    future: Future = field(default_factory=Future)


class BatchingWorker:
    """The one thread that runs the model, so the event loop never runs torch. Each turn takes every request waiting
    (up to `max_batch` sentences) and translates those with the same search settings in one Translator call; a sampled
    one goes alone, so that its seed gives the same translations whatever else is waiting."""

    def __init__(self, translator: Translator, max_batch: int = 256) -> None:
        self.translator, self.max_batch = translator, max_batch
        self.stats = {"requests": 0, "sentences": 0, "translator_calls": 0}
        self._jobs: queue.Queue[_Translate | _Call | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="translator", daemon=True)
        self._thread.start()

    def translate(self, sentences: list[str], **search: Any) -> Future:
        """Translate on the model's thread with `Translator.with_search(**search)`, whose errors are raised here."""
        job = _Translate(sentences, search, sampled=self.translator.with_search(**search).decoding.temperature > 0)
        if sentences:
            self._jobs.put(job)
        else:
            job.future.set_result([])  # nothing to translate: no turn to wait for
        return job.future

    def call(self, function: Callable[[], Any]) -> Future:
        """Run `function` on the model's thread (e.g. an attention map), in turn with the translations."""
        job = _Call(function)
        self._jobs.put(job)
        return job.future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            jobs, sentences = [job], len(getattr(job, "sentences", ()))
            while sentences < self.max_batch and not self._jobs.empty():  # this thread alone takes from the queue
                if (job := self._jobs.get_nowait()) is None:
                    self._jobs.put(None)  # stop after this turn
                    break
                jobs.append(job)
                sentences += len(getattr(job, "sentences", ()))
            self._run([j for j in jobs if j.future.set_running_or_notify_cancel()])  # a gone client's job is skipped

    def _run(self, jobs: list[_Translate | _Call]) -> None:
        groups: dict[Any, list[_Translate]] = {}
        for job in jobs:
            if isinstance(job, _Translate):
                groups.setdefault(id(job) if job.sampled else tuple(sorted(job.search.items())), []).append(job)
                continue
            try:
                job.future.set_result(job.function())
            except Exception as e:  # a bug, not bad input: this request answers 500, the thread goes on
                log.exception("request failed")
                job.future.set_exception(e)
        for group in groups.values():
            sentences = [s for job in group for s in job.sentences]
            self.stats["requests"] += len(group)
            self.stats["sentences"] += len(sentences)
            self.stats["translator_calls"] += 1
            try:
                outputs = self.translator.with_search(**group[0].search).translate(sentences)
            except Exception as e:  # a bug, not bad input: every request of the batch answers 500, the thread goes on
                log.exception("translation failed")
                for job in group:
                    job.future.set_exception(e)
                continue
            start = 0
            for job in group:
                job.future.set_result(outputs[start : start + len(job.sentences)])
                start += len(job.sentences)


# -- requests ----------------------------------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, read no further than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the request body is at most {limit} bytes, got {declared}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the request body is at most {limit} bytes, got more")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        reason = str(e).split("\n")[0][:200]
        raise HTTPException(400, f"the request body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, f'the request body must be a JSON object such as {{"text": ...}}, got {_kind(data)}')
    return data


def check_fields(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise HTTPException(422, f"unknown field {unknown[0]!r}; the fields are {', '.join(allowed)}")
    if "text" not in data:
        raise HTTPException(422, 'missing field "text"')


def check_sentence(text: Any, where: str, limits: Limits) -> str:
    if not isinstance(text, str):
        raise HTTPException(422, f"{where} must be a string, got {_kind(text)}")
    if len(text) > limits.max_chars:
        raise HTTPException(422, f"{where}: at most {limits.max_chars} characters per sentence, got {len(text)}")
    return text


# The search settings a /translate request may give: its field, Translator.with_search's argument, whole or not.
SEARCH_FIELDS = [("beam", "beam_size", True), ("temperature", "temperature", False), ("top_k", "top_k", True),
                 ("top_p", "top_p", False), ("seed", "seed", True)]  # fmt: skip


def parse_translate(data: dict[str, Any], limits: Limits) -> tuple[list[str], dict[str, Any]]:
    """The sentences and the search settings (`Translator.with_search`'s arguments) of a /translate request; a bad
    value a 4xx naming its field."""
    check_fields(data, ("text", *(name for name, _, _ in SEARCH_FIELDS)))
    text = data["text"]
    if not isinstance(text, list):
        raise HTTPException(422, f'"text" must be a list of strings such as ["The cat sleeps."], got {_kind(text)}')
    if len(text) > limits.max_sentences:
        raise HTTPException(413, f"at most {limits.max_sentences} sentences per request, got {len(text)}")
    sentences = [check_sentence(t, f"text[{i}]", limits) for i, t in enumerate(text)]
    search = {}
    for name, key, whole in SEARCH_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise HTTPException(422, f'"{name}" must be a {"whole " if whole else ""}number, got {_kind(value)}')
        if not whole:  # JSON's 1 is an int; one too large for a float is out of range
            value = math.inf if isinstance(value, int) and abs(value) >= 1e308 else float(value)
        _, rule, ok = SEARCH_RULES[key]
        if key == "beam_size":
            rule, ok = f"between 1 and {limits.max_beam}", lambda v: 1 <= v <= limits.max_beam
        if not ok(value):
            raise HTTPException(422, f'"{name}" must be {rule}, got {str(value)[:20]}')
        search[key] = value
    return sentences, search


def _kind(value: Any) -> str:
    """A JSON value named as the user wrote it, shortened."""
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), f"the number {str(value)[:20]}"
    )


def attention_json(translator: Translator, sentence: str) -> dict[str, Any]:
    """The greedy translation and, for each kind, its query and key pieces and weights [layer][head][query][key]."""
    translation, maps = translator.attention_maps(sentence)
    answer: dict[str, Any] = {"translation": translation}
    for kind in ATTENTION_KINDS:
        weights = maps[kind].weights.double().round(decimals=4).tolist()
        answer[kind] = {"queries": maps[kind].query_pieces, "keys": maps[kind].key_pieces, "weights": weights}
    return answer


# -- the app -----------------------------------------------------------------------------------------------------


def create_app(translator: Translator, info: dict[str, Any], limits: Limits | None = None) -> FastAPI:
    """The API over one translator; `info` is what GET /info shows (see `model_info`)."""
    limits = limits or Limits()
    worker = BatchingWorker(translator)
    page = resources.files("transformer").joinpath("serve_page.html").read_text(encoding="utf-8")

    async def lifespan(app: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="mini-transformer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)  # ours and the framework's (an unknown path or method): one line of JSON
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def model() -> dict[str, Any]:
        return {**info, "limits": asdict(limits), "served": dict(worker.stats)}

    @app.post("/translate")
    async def translate(request: Request) -> dict[str, list[str]]:
        sentences, search = parse_translate(await read_json(request, limits.max_body_bytes), limits)
        try:
            translations = worker.translate(sentences, **search)
        except ToolkitError as e:  # settings that do not go together, such as sampling with a beam
            raise HTTPException(422, str(e)) from None
        return {"translations": await asyncio.wrap_future(translations)}

    @app.post("/attention")
    async def attention(request: Request) -> dict[str, Any]:
        data = await read_json(request, limits.max_body_bytes)
        check_fields(data, ("text",))
        sentence = check_sentence(data["text"], '"text"', limits)
        if not sentence.strip():
            raise HTTPException(422, '"text" is empty: there is no attention to show')
        return await asyncio.wrap_future(worker.call(lambda: attention_json(translator, sentence)))

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or one line saying why not (a port in use is the usual reason)."""
    sock = None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        if sock is not None:
            sock.close()
        raise ToolkitError(f"cannot listen on {host}:{port}: {e.strerror or e} (try another --port)") from None
    return sock

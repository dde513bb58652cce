"""Load-test the translation server: N clients send /translate requests for S seconds, then it stops and reports.

python scripts/load_test.py --checkpoint runs/demo --clients 8 --seconds 30
python scripts/load_test.py --url http://127.0.0.1:8000 --clients 8 --seconds 30 --batch 4 --beam 4

With --checkpoint it starts scripts/serve.py on a free port of 127.0.0.1, and reads the server's resident memory
(VmRSS) before and after; with --url it loads a server already running (its memory is not read). The sentences are the
demo grammar's (--input FILE: one a line); each client sends --batch of them a request, one request at a time. Prints
requests/s, sentences/s, latency percentiles, errors, and how many sentences the server put in each Translator call.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from transformer.cli import run
from transformer.errors import ToolkitError


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)  # seconds, of the successful requests
    sentences: int = 0
    errors: int = 0
    first_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(url: str, batches: list[list[str]], beam: int | None, deadline: float, offset: int, out: Results) -> None:
    """Send requests one after another over one kept-alive connection until `deadline`."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    i = offset
    while time.perf_counter() < deadline:
        body = json.dumps({"text": batches[i % len(batches)], **({"beam": beam} if beam else {})})
        i += 1
        start = time.perf_counter()
        try:
            connection.request("POST", "/translate", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            ok = response.status == 200
            error = "" if ok else f"HTTP {response.status}: {answer[:200].decode(errors='replace')}"
        except (OSError, http.client.HTTPException) as e:
            ok, error = False, f"{type(e).__name__}: {e}"
            connection.close()  # reconnects on the next request
        elapsed = time.perf_counter() - start
        with out.lock:
            if ok:
                out.latencies.append(elapsed)
                out.sentences += len(batches[(i - 1) % len(batches)])
            else:
                out.errors += 1
                out.first_error = out.first_error or error
    connection.close()


def load(url: str, batches: list[list[str]], clients: int, seconds: float, beam: int | None) -> Results:
    results, deadline = Results(), time.perf_counter() + seconds
    threads = [
        threading.Thread(target=client, args=(url, batches, beam, deadline, n * 7, results)) for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def get_json(url: str, path: str) -> dict:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def vm_rss_mib(pid: int) -> float | None:
    """Resident memory of a process from /proc (Linux); None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def start_server(checkpoint: str) -> tuple[subprocess.Popen, str]:
    """scripts/serve.py on a free port of 127.0.0.1; returns the process and its URL once it answers /health."""
    command = [sys.executable, str(Path(__file__).with_name("serve.py")), "--checkpoint", checkpoint, "--port", "0"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    said: deque[str] = deque(maxlen=5)
    for line in server.stderr:
        said.append(line.strip())
        if found := re.search(r" on (http://\S+)", line):
            url = found.group(1)
            threading.Thread(target=lambda: deque(server.stderr, maxlen=0), daemon=True).start()  # keep the pipe open
            get_json(url, "/health")
            return server, url
    server.wait()
    last = said[-1].removeprefix("error: ") if said else f"exit code {server.returncode}"
    raise ToolkitError(f"the server did not start: {last}")


def demo_sentences(count: int = 500) -> list[str]:
    from transformer.demo_corpus import demo_corpus

    return [en for en, _ in demo_corpus(count, 0, 0, seed=99)["train"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--checkpoint", help="start scripts/serve.py with this checkpoint or run directory")
    where.add_argument("--url", help="load a server already running at this address instead")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--seconds", type=float, default=30, help="how long to send requests (default: 30)")
    parser.add_argument("--batch", type=int, default=1, help="sentences a request (default: 1)")
    parser.add_argument("--beam", type=int, help="beam size a request asks for (default: the server's)")
    parser.add_argument("--input", help="file of sentences, one a line (default: sentences of the demo grammar)")
    args = parser.parse_args()
    if args.clients < 1 or args.batch < 1 or args.seconds <= 0:
        raise ToolkitError("--clients and --batch must be at least 1, --seconds above 0")
    if args.input:
        if not Path(args.input).is_file():
            raise ToolkitError(f"--input: file not found: {args.input}")
        sentences = [s for s in Path(args.input).read_text(encoding="utf-8").splitlines() if s.strip()]
    else:
        sentences = demo_sentences()
    if not sentences:
        raise ToolkitError(f"--input: no sentences in {args.input}")
    batches = [sentences[i : i + args.batch] for i in range(0, len(sentences), args.batch)]

    server, url = start_server(args.checkpoint) if args.checkpoint else (None, args.url.rstrip("/"))
    try:
        rss_start = vm_rss_mib(server.pid) if server else None
        served_before = get_json(url, "/info").get("served", {})
        print(f"load test: {args.clients} clients for {args.seconds:g} s, {args.batch} sentence(s) a request, "
              f"beam {args.beam or 'default'}, against {url}", flush=True)  # fmt: skip
        # Memory a third of the way in, when the first requests' one-off allocations are made, and at the end:
        # equal figures mean memory holds steady under load.
        third = threading.Timer(args.seconds / 3, lambda: rss.append(vm_rss_mib(server.pid) if server else None))
        rss: list[float | None] = []
        third.start()
        results = load(url, batches, args.clients, args.seconds, args.beam)
        third.join()
        served = get_json(url, "/info").get("served", {})
        rss_end = vm_rss_mib(server.pid) if server else None
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
    requests = len(results.latencies)
    print(f"requests      {requests}  ({requests / args.seconds:.1f}/s)")
    print(f"sentences     {results.sentences}  ({results.sentences / args.seconds:.1f}/s)")
    print(f"errors        {results.errors}" + (f"  (first: {results.first_error})" if results.errors else ""))
    p50, p99, top = (1000 * percentile(results.latencies, q) for q in (0.5, 0.99, 1.0))
    print(f"latency       p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {top:.1f} ms")
    calls = served.get("translator_calls", 0) - served_before.get("translator_calls", 0)
    done = served.get("sentences", 0) - served_before.get("sentences", 0)
    if calls:
        print(f"batching      {done / calls:.1f} sentences per Translator call ({calls} calls)")
    if rss_start is not None and rss_end is not None and rss[0] is not None:
        print(f"server memory {rss_start:.1f} MiB idle, {rss[0]:.1f} MiB after {args.seconds / 3:.0f} s of load, "
              f"{rss_end:.1f} MiB at the end (VmRSS)")  # fmt: skip
    else:
        print("server memory not measured (--url, or no /proc)")
    return 1 if results.errors else 0


if __name__ == "__main__":
    run(main)

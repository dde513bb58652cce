"""Serve a trained model over HTTP: a translation API and a page that shows what attention does.

mini-transformer serve --checkpoint runs/demo             # then open http://127.0.0.1:8000
curl -s localhost:8000/translate -H 'Content-Type: application/json' -d '{"text": ["The cat sleeps."], "beam": 4}'

POST /translate, POST /attention, GET /info, GET /health, GET / (the page). Listens on 127.0.0.1 only unless --host
says otherwise. Needs the serve extra: pip install "mini-transformer[serve]".
"""

import argparse
import sys

from transformer.checkpoint import read_checkpoint
from transformer.errors import MissingExtraError, ToolkitError
from transformer.translator import Translator


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (uses best.pt)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 = any free port)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-sentences", type=int, default=64, help="sentences per request (default: 64)")
    parser.add_argument("--max-chars", type=int, default=1000, help="characters per sentence (default: 1000)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body (default: 1 MiB)")
    parser.add_argument("--max-beam", type=int, default=16, help="largest beam a request may ask for (default: 16)")
    args = parser.parse_args(argv)
    try:
        import uvicorn

        from transformer.serving import Limits, create_app, listen, model_info
    except ImportError as e:
        raise MissingExtraError("serving", "serve", e.name) from None
    if min(args.max_sentences, args.max_chars, args.max_body_bytes, args.max_beam) < 1:
        raise ToolkitError("--max-sentences, --max-chars, --max-body-bytes and --max-beam must be at least 1")

    sock = listen(args.host, args.port)  # first: a port in use fails before a slow load; early clients wait
    checkpoint = read_checkpoint(args.checkpoint)
    translator = Translator.from_checkpoint(checkpoint, device=args.device)
    limits = Limits(**{name: value for name, value in vars(args).items() if name.startswith("max_")})
    app = create_app(translator, model_info(checkpoint), limits)
    host, port = sock.getsockname()[:2]
    local = args.host in ("127.0.0.1", "localhost", "::1")
    where = "local only; --host 0.0.0.0 to expose it" if local else "reachable from other machines"
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(f"serving {args.checkpoint} on {url} ({where})", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
    return 0

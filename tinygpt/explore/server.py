"""The explorer's server: one static page and a small JSON API over the public model API.

``tinygpt explore`` serves, on 127.0.0.1:8000 by default, a page that shows what a model
computes: its tokens, its next-token odds before and after temperature/top-k/top-p,
sampling, attention weights, and one backward pass through the engine's kernels. Every
number comes from the same ``GPT2``, ``generate`` and tokenizer code that the command line
uses; this module only turns requests into calls and arrays into JSON.

JSON API (every POST takes a JSON object; every answer is a JSON object):

    GET  /api/info        the model: {"source", "tokenizer": "gpt2"|"char", "n_layer", "n_head",
                          "n_embd", "block_size", "vocab_size", "parameters", "has_log"}
    POST /api/tokens      {"text"} -> {"tokens": [{"id", "text"}], "truncated": bool, "skipped": the
                          characters a character model leaves out (quoted, as its warning), or ""}
                          (a prompt longer than the context keeps its last block_size tokens,
                          here and everywhere below; "truncated" says so)
    POST /api/next        {"text", "temperature"=1, "top_k"=null (or 0: every token), "top_p"=null, "show"=20}
                          -> {"tokens", "truncated", "candidates": [{"id", "text", "p", "p_after",
                          "kept"}], "kept_count", "kept_mass"}: the show most likely next tokens;
                          p is the model's own softmax, p_after the distribution sampling uses
                          (tinygpt.generate.next_token_distribution), kept whether the cuts leave
                          the token in; kept_count/kept_mass over the whole vocabulary
    POST /api/generate    {"text", "max_new_tokens"=50 (<= 500), "temperature"=0.8, "top_k",
                          "top_p", "seed"} -> a stream of JSON lines (application/x-ndjson):
                          {"id", "text"} per sampled token, then {"done": true}. Closing the
                          connection stops the sampling.
    POST /api/attention   {"text", "layer"=0, "head"=0} -> {"tokens", "truncated", "layer", "head",
                          "weights": T x T} with weights[i][j] how much query i attends to key j
                          (model(ids, attention=[...]))
    POST /api/gradients   {"text"} -> {"tokens", "truncated", "loss", "saliency": [T-1 numbers],
                          "layers": [{"name", "groups": {group: norm}}]}: one backward pass of the
                          mean next-token loss of the prompt (inputs tokens 0..T-2, targets 1..T-1);
                          per parameter group the L2 norm of dL/dparameters; saliency[t] is
                          ||dL/de_t||, the gradient with respect to input token t's embedding.
                          The last token is only a target, so it has no saliency; fed in as well,
                          its gradient would be exactly 0 (the causal mask lets it reach only its
                          own position's prediction, and the prompt holds no token to score it by)
    GET  /api/training    {"available", "train": [[step, loss]], "eval": [[step, train, val]],
                          "lr": [[step, lr]], "grad_norm": [[step, norm]]} from the run's log.jsonl

Errors: 400 with {"error": "..."} for malformed JSON or bad values, 404 for unknown paths,
405 (with an Allow header) for methods other than GET and POST, 413 for bodies over MAX_BODY
bytes, 415 for a POST whose Content-Type is not application/json, 500 for a bug (the details on
one line of the server's stderr, none in the answer). No endpoint takes a file path: the only
file the server reads besides its own page is the log of the checkpoint it was started with.

Other pages in the same browser: bound to a loopback address (the default), the server answers
only requests whose Host is localhost, 127.0.0.1 or [::1] (403 otherwise), so a site that
points its own name at 127.0.0.1 (DNS rebinding) cannot read the API; and a POST must be
application/json, which a page of another site cannot send without a CORS preflight that this
server never grants. Bound to another address on purpose (--host 0.0.0.0), Host is not checked.

Concurrency: a ThreadingHTTPServer, one thread per request. Forward passes run under
``no_grad`` (grad mode is per thread) and only read the weights; the gradients endpoint
writes ``Parameter.grad`` and so runs under a lock, one at a time.
"""
from __future__ import annotations

import ipaddress
import json
import math
import socket
import sys
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np

from autograd import backend, no_grad

from ..errors import TinyGPTError
from ..generate import SamplingError, check_sampling, generate_ids, next_token_distribution, top_k_from_user
from ..plots import read_log
from ..tokenizer import StreamDecoder


MAX_BODY = 64 * 1024               # bytes; a prompt of a whole context of BPE tokens is ~5 kB
MAX_NEW_TOKENS = 500
TIMEOUT = 30                       # seconds a connection may stall mid-request before it is dropped
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}


# Control characters (and the backslash) written as \xNN in log lines: a request line can carry a
# terminal's escape codes. The standard library has such a table only from Python 3.11 on.
_LOG_ESCAPES = str.maketrans({**{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
                              ord("\\"): "\\\\"})


class BadRequest(Exception):
    """A client mistake: answered with 400 and this message."""


# ---------------------------------------------------------------------------- the API itself

class Explorer:
    """The API's answers as plain dicts, computed with the public model API.

    ``model``: a GPT2 with a tokenizer; ``log_path``: the run's log.jsonl, or None.
    """

    def __init__(self, model, source: str = "", log_path: Path | None = None):
        if model.tokenizer is None:
            raise TinyGPTError("the explorer needs a model with a tokenizer (a checkpoint of tinygpt train, "
                               "or --pretrained)")
        self.model = model
        self.model.eval()                      # dropout off: the page shows the model as it predicts
        self.source = source
        self.log_path = Path(log_path) if log_path else None
        self._grad_lock = threading.Lock()

    # -- helpers
    def _token_text(self, token_id: int) -> str:
        return self.model.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    def _ids(self, body: dict, minimum: int = 1):
        """The prompt's token ids, capped at the context (its last block_size tokens)."""
        text = body.get("text", "")
        if not isinstance(text, str):
            raise BadRequest('"text" must be a string')
        ids = self.model.tokenizer.encode(text)
        block = self.model.config.block_size
        truncated = len(ids) > block
        ids = ids[-block:]
        if len(ids) < minimum:
            skipped = self._skipped(text)
            if skipped:   # a character model: nothing of the text is in its alphabet
                raise BadRequest(f"none of the prompt's characters ({skipped}) is in the model's alphabet")
            raise BadRequest(f"the prompt needs at least {minimum} token{'s' if minimum > 1 else ''}")
        return ids, truncated

    def _skipped(self, text: str) -> str:
        """The characters a character model leaves out of ``text`` (quoted), or ""."""
        unknown = getattr(self.model.tokenizer, "unknown", None)
        return unknown(text) if unknown is not None else ""

    def _tokens(self, ids):
        return [{"id": int(i), "text": self._token_text(int(i))} for i in ids]

    def _last_logits(self, ids):
        with no_grad():
            logits, _ = self.model([ids], last_only=True)
        return backend.to_numpy(logits.data[0, -1]).astype(np.float64)     # (V,)

    # -- endpoints
    def info(self) -> dict:
        c = self.model.config
        return {"source": self.source, "tokenizer": self.model.tokenizer.kind, "n_layer": c.n_layer,
                "n_head": c.n_head, "n_embd": c.n_embd, "block_size": c.block_size, "vocab_size": c.vocab_size,
                "parameters": self.model.num_parameters(),
                "has_log": bool(self.log_path and self.log_path.exists())}

    def tokens(self, body: dict) -> dict:
        ids, truncated = self._ids(body, minimum=0)
        return {"tokens": self._tokens(ids), "truncated": truncated, "skipped": self._skipped(body.get("text", ""))}

    def next_token(self, body: dict) -> dict:
        temperature, top_k, top_p = _sampling(body, default_temperature=1.0)
        show = _integer(body, "show", 20, 1, 200)
        ids, truncated = self._ids(body)
        logits = self._last_logits(ids)
        p = next_token_distribution(logits)                                  # the model's own odds
        p_after = next_token_distribution(logits, temperature, top_k, top_p)
        top = np.argsort(-p, kind="stable")[:show]
        kept = p_after > 0
        return {"tokens": self._tokens(ids), "truncated": truncated,
                "candidates": [{"id": int(i), "text": self._token_text(int(i)), "p": float(p[i]),
                                "p_after": float(p_after[i]), "kept": bool(kept[i])} for i in top],
                "kept_count": int(kept.sum()), "kept_mass": float(p[kept].sum())}

    def generate(self, body: dict):
        """Yield one dict per sampled token, then {"done": True}."""
        temperature, top_k, top_p = _sampling(body, default_temperature=0.8)
        max_new = _integer(body, "max_new_tokens", 50, 1, MAX_NEW_TOKENS)
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise BadRequest('"seed" must be a non-negative integer or null')
        ids, _ = self._ids(body)
        decoder = StreamDecoder(self.model.tokenizer)

        def stream():
            for token in generate_ids(self.model, ids, max_new_tokens=max_new, temperature=temperature,
                                      top_k=top_k, top_p=top_p, seed=seed):
                yield {"id": token, "text": decoder.push(token)}
            yield {"done": True, "text": decoder.flush()}
        return stream()

    def attention(self, body: dict) -> dict:
        c = self.model.config
        layer = _integer(body, "layer", 0, 0, c.n_layer - 1)
        head = _integer(body, "head", 0, 0, c.n_head - 1)
        ids, truncated = self._ids(body)
        weights = []
        with no_grad():
            self.model([ids], attention=weights)                             # one (1, nh, T, T) per layer
        w = backend.to_numpy(weights[layer][0, head]).astype(np.float64)   # (T, T)
        return {"tokens": self._tokens(ids), "truncated": truncated, "layer": layer, "head": head,
                "weights": w.tolist()}

    def gradients(self, body: dict) -> dict:
        ids, truncated = self._ids(body, minimum=2)
        x = np.asarray(ids[:-1])[None, :]                                    # (1, T-1) inputs
        y = np.asarray(ids[1:])[None, :]                                     # (1, T-1) next tokens
        model = self.model
        with self._grad_lock:                                                # Parameter.grad is shared
            model.zero_grad()
            try:
                _, loss = model(x, y)
                loss.backward()
                named = [(name, backend.to_numpy(p.grad)) for name, p in model.named_parameters()]
            finally:
                model.zero_grad()
        # The input of block 0 at position t is e_t = wte[id_t] + wpe[t]. With one sequence,
        # position t's row of wpe is used only there, so dL/dwpe[t] = dL/de_t exactly: the
        # saliency of token t, read off the gradient the engine already computed.
        wpe_grad = dict(named)["transformer.wpe.weight"]
        saliency = np.sqrt((wpe_grad[: x.shape[1]].astype(np.float64) ** 2).sum(axis=1))
        return {"tokens": self._tokens(ids), "truncated": truncated, "loss": float(loss.data),
                "saliency": saliency.tolist(), "layers": _group_norms(named, model.config.n_layer)}

    def training(self) -> dict:
        records = read_log(self.log_path) if self.log_path else []
        train = [r for r in records if r.get("kind") == "train"]
        evals = [r for r in records if r.get("kind") == "eval"]
        return {"available": bool(records),
                "train": [[r["step"], r["loss"]] for r in train if _finite(r.get("loss"))],
                "eval": [[r["step"], r["train_loss"], r["val_loss"]] for r in evals
                         if _finite(r.get("train_loss")) and _finite(r.get("val_loss"))],
                "lr": [[r["step"], r["lr"]] for r in train if _finite(r.get("lr"))],
                "grad_norm": [[r["step"], r["grad_norm"]] for r in train if _finite(r.get("grad_norm"))]}


def _dumps(obj) -> str:
    """JSON text; NaN and infinities (a diverged model) become null, which browsers can parse."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        return json.dumps(_finite_only(obj), allow_nan=False)


def _finite_only(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_only(v) for v in obj]
    return obj


def _finite(value) -> bool:
    """A JSON number, not NaN or infinite (true and false are no numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)    # isfinite overflows on an int past float's range


def _group_norms(named, n_layer: int) -> list[dict]:
    """L2 norms of the gradient per parameter group (a module's weight and bias together),
    listed from the input up: embeddings, each block, the final layernorm."""
    squares = {}
    for name, grad in named:
        group = name.rsplit(".", 1)[0]                        # transformer.h.3.attn.c_attn
        squares[group] = squares.get(group, 0.0) + float((grad.astype(np.float64) ** 2).sum())
    layers = [{"name": "embeddings", "groups": {"wte": 0.0, "wpe": 0.0}}]
    layers += [{"name": f"block {i}", "groups": {}} for i in range(n_layer)]
    layers.append({"name": "final layernorm", "groups": {}})
    for group, sq in squares.items():
        parts = group.split(".")
        if parts[1] in ("wte", "wpe"):
            layers[0]["groups"][parts[1]] = math.sqrt(sq)
        elif parts[1] == "h":
            layers[1 + int(parts[2])]["groups"][".".join(parts[3:])] = math.sqrt(sq)
        else:
            layers[-1]["groups"][parts[1]] = math.sqrt(sq)
    return layers


def _integer(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f'"{key}" must be an integer from {low} to {high}, got {value!r}')
    return value


def _number(body: dict, key: str, default, low: float, high: float, low_open=False):
    value = body.get(key, default)
    if value is None:
        return default
    ok = _finite(value) and abs(value) <= sys.float_info.max     # float() of a longer int overflows
    if not ok or value > high or value < low or (low_open and value == low):
        bound = "(" if low_open else "["
        where = f" in {bound}{low}, {high}]" if math.isfinite(low) or math.isfinite(high) else ""
        raise BadRequest(f'"{key}" must be a number{where}, got {value!r}')
    return float(value)


def _sampling(body: dict, default_temperature: float):
    """(temperature, top_k, top_p) from a request: JSON numbers here, their rules in
    generate.check_sampling."""
    temperature = _number(body, "temperature", default_temperature, -math.inf, math.inf)
    top_k = body.get("top_k")
    top_p = _number(body, "top_p", None, -math.inf, math.inf)
    try:
        if top_k is not None:   # as on the command line and in the chat: 0 is every token
            top_k = top_k_from_user(top_k)
        check_sampling(temperature, top_k, top_p)
    except SamplingError as exc:
        raise BadRequest(f'"{exc.setting}" {exc.rule}') from None
    return temperature, top_k, top_p


def _json_body(raw: bytes) -> dict:
    """A request's body as a JSON object; BadRequest for anything else."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except RecursionError:               # [[[[...]]]]: deeper than the parser recurses
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as exc:            # not JSON, not UTF-8, or an integer of over 4300 digits
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _host_name(host: str) -> str:
    """A Host header without its port: "localhost:8000" -> "localhost", "[::1]:80" -> "[::1]"."""
    name, colon, port = host.rpartition(":")
    return (name if colon and port.isdigit() else host).lower()


# ---------------------------------------------------------------------------- HTTP

class _Handler(BaseHTTPRequestHandler):
    server_version = "tinygpt-explore"
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT                    # on the socket: a client that stops sending frees its thread
    explorer: Explorer = None            # set on the subclass made by make_server
    quiet = False
    local_names = None                   # the Host names answered (make_server, on loopback); None: any

    def log_request(self, code="-", size="-"):
        self.log_message("%s", getattr(code, "value", code))

    def log_error(self, fmt, *args):
        # The standard library's errors come through send_error (logged as requests) but for one:
        # a read that timed out, which is mostly a browser's idle keep-alive connection being
        # closed. That is routine, and the line would name the connection's last request.
        pass

    def log_message(self, fmt, *args):  # one short line per request, unless quiet
        if not self.quiet:
            # command is None until the request line parses (path is not set yet, or is the last one's)
            request = f"{self.command} {self.path}" if self.command else getattr(self, "requestline", "")
            sys.stderr.write(f"{request} {fmt % args}".translate(_LOG_ESCAPES) + "\n")

    # -- replies
    def _send(self, status, payload: bytes, content_type: str, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":                # an answer to HEAD has headers only
            self.wfile.write(payload)

    def _json(self, obj, status=HTTPStatus.OK, headers=()):
        self._send(status, _dumps(obj).encode(), "application/json", headers)

    def _error(self, status, message, headers=()):
        self._json({"error": message}, status, headers)

    def send_error(self, code, message=None, explain=None):
        """The standard library's own errors (a malformed request line, an unknown method) in
        JSON too, like every other answer, instead of its HTML page."""
        self.close_connection = True
        self._error(code, message or HTTPStatus(code).phrase)

    # -- requests
    def parse_request(self) -> bool:
        """The standard library's parsing, then the Host check (see the module's docstring)."""
        if not super().parse_request():
            return False
        host = self.headers.get("Host", "")
        if self.local_names is None or _host_name(host) in self.local_names:
            return True
        self.close_connection = True              # a body, if one came, is not read
        said = f"Host {host!r} is not this machine" if host else "the request names no Host (HTTP/1.0?)"
        self._error(HTTPStatus.FORBIDDEN, f"{said}: the explorer answers only {', '.join(LOCAL_NAMES)}")
        return False

    def _answering(self, method):
        """Call ``method``; an exception it did not expect answers 500 with a short JSON error (one
        line on stderr says more), not a dropped connection and a traceback."""
        try:
            method()
        except (ConnectionError, TimeoutError):
            raise                                 # the client is gone or stalled: nothing to answer
        except Exception as exc:
            line = f"tinygpt explore: {self.command} {self.path}: {type(exc).__name__}: {exc}"
            sys.stderr.write(line.translate(_LOG_ESCAPES) + "\n")
            self.close_connection = True
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(exc).__name__}); the "
                                                          "server's terminal says more")

    def do_GET(self):
        self._answering(self._get)

    def do_POST(self):
        self._answering(self._post)

    def _not_allowed(self):
        self.close_connection = True              # a body, if one came, is not read
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not answered here; GET and POST are",
                    headers=[("Allow", "GET, POST")])

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _get(self):
        path = self.path.split("?", 1)[0]
        if path in STATIC:
            name, content_type = STATIC[path]
            self._send(HTTPStatus.OK, resources.files(__package__).joinpath("static", name).read_bytes(),
                       content_type)
        elif path == "/api/info":
            self._json(self.explorer.info())
        elif path == "/api/training":
            self._json(self.explorer.training())
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _post(self):
        path = self.path.split("?", 1)[0]
        routes = {"/api/tokens": self.explorer.tokens, "/api/next": self.explorer.next_token,
                  "/api/attention": self.explorer.attention, "/api/gradients": self.explorer.gradients,
                  "/api/generate": self.explorer.generate}
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return self._error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY:
            self.close_connection = True          # the body is not read: do not reuse the connection
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        if path not in routes:
            return self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        if self.headers.get_content_type() != "application/json":   # text/plain: any site's page can send it
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "a POST must be JSON, sent with "
                                                                 "Content-Type: application/json")
        try:
            result = routes[path](_json_body(raw))
        except (BadRequest, TinyGPTError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        if path == "/api/generate":
            return self._stream(result)
        self._json(result)

    def _stream(self, lines):
        """Send each dict as one JSON line as soon as it exists (chunked transfer)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        def send(item):
            data = (_dumps(item) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            try:
                for item in lines:
                    send(item)
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as exc:   # the status line is sent already: the error goes in the stream
                send({"error": f"{type(exc).__name__}: {exc}", "done": True})
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):   # the page pressed Stop: sampling ends here
            self.close_connection = True
        finally:
            lines.close()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128      # the page fires several requests at once; 5 (the default) drops some
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(explorer: Explorer, host="127.0.0.1", port=8000, quiet=False) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer bound to (host, port); port 0 picks a free one."""
    host = bare_host(host)
    # on loopback only local names are answered; another address was chosen to be reached by
    # other names (the machine's own, its IP), so any Host is
    shown = f"[{host}]" if ":" in host else host                  # as a Host header writes it
    local_names = {*LOCAL_NAMES, shown.lower()} if is_loopback(host) else None
    handler = type("Handler", (_Handler,), {"explorer": explorer, "quiet": quiet, "local_names": local_names})
    server_class = _Server6 if ":" in host else _Server      # an IPv6 address such as ::1
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        if exc.errno in (98, 48, 10048):                  # EADDRINUSE on Linux, macOS, Windows
            raise TinyGPTError(f"port {port} on {host} is already in use; choose another with --port") from None
        raise TinyGPTError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server


def bare_host(host: str) -> str:
    """``host`` without the brackets a URL puts around an IPv6 address ("[::1]" -> "::1")."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int) -> str:
    """The address a browser uses for a server bound to (host, port)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def open_in_browser(url: str) -> bool:
    """Open ``url`` with the standard library's ``webbrowser``; True if a browser took it.

    No browser (a server without a display, none configured) is not an error: one line says
    so and the caller goes on serving."""
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error as exc:                     # e.g. $BROWSER names a missing program
        opened = False
        reason = f" ({exc})"
    else:
        reason = ""
    if not opened:
        print(f"tinygpt explore: found no web browser to open{reason}; open {url} by hand", file=sys.stderr,
              flush=True)
    return bool(opened)


def serve(explorer: Explorer, host="127.0.0.1", port=8000, open_browser=False):
    """Serve until Ctrl-C; with ``open_browser``, also open the page in a web browser."""
    host = bare_host(host)
    server = make_server(explorer, host, port)
    if not is_loopback(host):
        print(f"warning: --host {host} makes the explorer reachable from other machines; it has no "
              "authentication (the default, 127.0.0.1, keeps it on this one)", file=sys.stderr)
    url = url_of(host, server.server_address[1])
    print(f"tinygpt explore: {explorer.source} at {url}  (Ctrl-C stops)", flush=True)
    if open_browser:
        # The socket listens already (make_server binds it), so the browser's first request
        # waits in the queue until serve_forever takes it. A thread, because webbrowser waits
        # for a text-mode browser (lynx, w3m) to exit, and the page must be served meanwhile.
        # An unspecified address (0.0.0.0, ::) is not one a browser can visit: use loopback.
        local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        threading.Thread(target=open_in_browser, args=(url_of(local, server.server_address[1]),),
                         daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    finally:
        server.server_close()


def find_log(checkpoint_dir) -> Path | None:
    """The log.jsonl of the run a checkpoint folder belongs to (the run folder or its parent)."""
    p = Path(checkpoint_dir)
    for candidate in (p / "log.jsonl", p.parent / "log.jsonl"):
        if candidate.exists():
            return candidate
    return p / "log.jsonl" if p.is_dir() else None

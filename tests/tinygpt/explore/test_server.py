"""The explorer's JSON API over real HTTP: every endpoint, its numbers against the Python
API computed directly, bad requests, concurrency, and the `tinygpt explore` command."""
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np
import pytest

from autograd import no_grad
from tinygpt import GPT2
from tinygpt.explore import server as server_module
from tinygpt.generate import generate_ids, next_token_distribution


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def post(base, path, body):
    """(status, decoded JSON) of a POST, error statuses included."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def ok(base, path, body):
    status, answer = post(base, path, body)
    assert status == 200, answer
    return answer


# ---------------------------------------------------------------- endpoints

def test_the_page_and_its_files_are_served_from_the_package(server):
    base, _ = server
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, content_type, body = get(base, path)
        assert status == 200 and content_type.startswith(kind) and len(body) > 500
    page = get(base, "/")[2].decode()
    assert 'src="/app.js"' in page and "http://" not in page and "https://" not in page   # nothing from a CDN


def test_info_describes_the_loaded_model(server, run_dir):
    base, explorer = server
    info = json.loads(get(base, "/api/info")[2])
    model = GPT2.load(run_dir)
    assert info["tokenizer"] == "char" and info["has_log"] is True
    assert (info["n_layer"], info["n_head"], info["block_size"]) == (2, 2, 32)
    assert info["parameters"] == model.num_parameters() and info["vocab_size"] == model.config.vocab_size


def test_tokens_are_the_tokenizers_ids_and_a_long_prompt_keeps_the_last_context(server):
    base, explorer = server
    tok = explorer.model.tokenizer
    answer = ok(base, "/api/tokens", {"text": "Romeo, Romeo"})
    assert [t["id"] for t in answer["tokens"]] == tok.encode("Romeo, Romeo")
    assert "".join(t["text"] for t in answer["tokens"]) == "Romeo, Romeo" and not answer["truncated"]
    long = "It is the east, and Juliet is the sun. " * 3                      # 117 characters > 32
    answer = ok(base, "/api/tokens", {"text": long})
    assert answer["truncated"] and [t["id"] for t in answer["tokens"]] == tok.encode(long)[-32:]


def test_next_token_odds_equal_the_sampling_code_before_and_after_the_cuts(server):
    base, explorer = server
    model, text = explorer.model, "JULIET:\nO Rom"
    answer = ok(base, "/api/next", {"text": text, "temperature": 0.7, "top_k": 4, "top_p": 0.9, "show": 10})
    with no_grad():
        logits, _ = model([model.tokenizer.encode(text)], last_only=True)   # as generation computes it
    row = logits.data[0, -1]
    p = next_token_distribution(row)
    p_after = next_token_distribution(row, 0.7, 4, 0.9)
    top = np.argsort(-p, kind="stable")[:10]
    assert [c["id"] for c in answer["candidates"]] == top.tolist()
    for c in answer["candidates"]:
        assert c["p"] == pytest.approx(p[c["id"]], rel=1e-12)                 # the same float64 numbers
        assert c["p_after"] == pytest.approx(p_after[c["id"]], rel=1e-12, abs=1e-300)
        assert c["kept"] == (p_after[c["id"]] > 0)
    assert answer["kept_count"] == int((p_after > 0).sum()) <= 4
    assert answer["kept_mass"] == pytest.approx(p[p_after > 0].sum(), rel=1e-12)
    assert sum(c["p_after"] for c in answer["candidates"]) == pytest.approx(1.0)   # all kept ones are in the top 10


def stream(base, body):
    """The JSON lines of /api/generate."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "application/x-ndjson"
    lines = [json.loads(line) for line in response.read().decode().splitlines()]
    conn.close()
    return lines


def test_generate_streams_the_tokens_the_python_api_samples(server):
    base, explorer = server
    body = {"text": "ROMEO:\n", "max_new_tokens": 25, "temperature": 0.9, "top_k": 10, "seed": 11}
    lines = stream(base, body)
    expected = list(generate_ids(explorer.model, explorer.model.tokenizer.encode("ROMEO:\n"), max_new_tokens=25,
                                 temperature=0.9, top_k=10, seed=11))
    assert [item["id"] for item in lines[:-1]] == expected and lines[-1]["done"] is True
    assert "".join(item["text"] for item in lines) == explorer.model.tokenizer.decode(expected)


def test_closing_the_connection_stops_generation_and_the_server_goes_on(server):
    base, _ = server
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", "/api/generate", json.dumps({"text": "O", "max_new_tokens": 500, "seed": 1}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert json.loads(response.fp.readline() and response.fp.readline())  # chunk size line, then a token
    conn.close()                                                           # the page's Stop button
    assert ok(base, "/api/tokens", {"text": "still here"})["tokens"]


def test_attention_weights_equal_the_models_own(server):
    base, explorer = server
    text = "But soft, what light"
    answer = ok(base, "/api/attention", {"text": text, "layer": 1, "head": 1})
    weights = []
    with no_grad():
        explorer.model([explorer.model.tokenizer.encode(text)], attention=weights)
    expected = weights[1][0, 1]                                            # layer 1, batch 0, head 1
    got = np.array(answer["weights"])
    assert got.shape == (len(text), len(text)) and np.array_equal(got, expected.astype(np.float64))
    assert np.all(np.triu(got, k=1) == 0)                                  # the causal triangle


def test_gradients_equal_one_backward_pass_with_the_python_api(server, run_dir):
    base, _ = server
    text = "ROMEO: But so"
    answer = ok(base, "/api/gradients", {"text": text})
    model = GPT2.load(run_dir)
    ids = model.tokenizer.encode(text)
    x, y = np.array([ids[:-1]]), np.array([ids[1:]])
    _, loss = model(x, y)
    loss.backward()
    grads = {name: p.grad.astype(np.float64) for name, p in model.named_parameters()}
    assert answer["loss"] == pytest.approx(float(loss.data), rel=1e-6)    # float32 loss, same kernels
    block1 = answer["layers"][2]
    assert block1["name"] == "block 1"
    for group in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
        prefix = f"transformer.h.1.{group}."
        expected = math.sqrt(sum((g ** 2).sum() for n, g in grads.items() if n.startswith(prefix)))
        assert block1["groups"][group] == pytest.approx(expected, rel=1e-6)
    assert answer["layers"][0]["groups"]["wte"] > 0 and answer["layers"][-1]["name"] == "final layernorm"


def test_saliency_is_the_gradient_norm_at_each_input_embedding_by_finite_differences(server, run_dir):
    """An independent route to ||dL/de_t||: central differences in float64, nudging the input
    embedding e_t = wte[id_t] + wpe[t] one coordinate at a time (through wpe's row t, which
    only position t uses)."""
    base, _ = server
    text = "O Romeo, Rome"
    answer = ok(base, "/api/gradients", {"text": text})
    model = GPT2.load(run_dir).to("float64")
    ids = model.tokenizer.encode(text)
    x, y = np.array([ids[:-1]]), np.array([ids[1:]])
    wpe = model.transformer.wpe.weight.data
    eps = 1e-6
    with no_grad():
        for t in range(len(ids) - 1):
            g = np.zeros(wpe.shape[1])
            for c in range(wpe.shape[1]):
                keep = wpe[t, c]
                wpe[t, c] = keep + eps
                up = float(model(x, y)[1].data)
                wpe[t, c] = keep - eps
                down = float(model(x, y)[1].data)
                wpe[t, c] = keep
                g[c] = (up - down) / (2 * eps)
            # the server computes in float32: ~1e-7 relative rounding per operation, a few 1e-5 after
            # the whole network; float64 differences are good to ~1e-9
            assert answer["saliency"][t] == pytest.approx(np.linalg.norm(g), rel=1e-4)


def test_the_last_prompt_token_is_only_a_target_and_fed_in_its_gradient_would_be_exactly_zero(server, run_dir):
    """The fact behind the page's caption under the saliency row. The API's pass predicts tokens
    1..T-1 from tokens 0..T-2, so the last token has no saliency. Feeding all T tokens, with the
    last position's target left out (ignore_index -1), is the same loss and the same saliency,
    and there the last token's embedding gradient is exactly 0: the causal mask lets it reach
    only its own position, whose prediction has no target."""
    base, _ = server
    text = "JULIET:\nO Romeo"
    answer = ok(base, "/api/gradients", {"text": text})
    model = GPT2.load(run_dir)
    ids = model.tokenizer.encode(text)
    T = len(ids)
    assert len(answer["tokens"]) == T and len(answer["saliency"]) == T - 1

    def embedding_gradients(last_target):
        model.zero_grad()
        _, loss = model(np.array([ids]), np.array([ids[1:] + [last_target]]))
        loss.backward()
        # one sequence: row t of dL/dwpe is dL/de_t, e_t = wte[id_t] + wpe[t]
        return float(loss.data), model.transformer.wpe.weight.grad[:T].astype(np.float64)

    loss, grad = embedding_gradients(-1)                                   # no target at position T-1
    assert loss == pytest.approx(answer["loss"], rel=1e-6)
    assert np.linalg.norm(grad[:T - 1], axis=1) == pytest.approx(answer["saliency"], rel=1e-5)
    assert np.all(grad[T - 1] == 0.0)                                      # exactly, not just small
    assert answer["saliency"][-1] > 0                # the last input, token T-2, predicts token T-1
    # the check can fail: give position T-1 a target (any token) and its gradient is not zero
    _, scored = embedding_gradients(ids[0])
    assert np.linalg.norm(scored[T - 1]) > 1e-4


def test_training_curves_come_from_the_runs_log(server):
    base, _ = server
    data = json.loads(get(base, "/api/training")[2])
    assert data["available"]
    assert [step for step, _ in data["train"]] == list(range(1, 41))
    assert [e[0] for e in data["eval"]] == [0, 20, 40] and len(data["lr"]) == 40
    assert data["eval"][-1][2] < data["eval"][0][2]                        # val loss went down


def test_a_model_without_a_log_reports_none(run_dir):
    explorer = server_module.Explorer(GPT2.load(run_dir), source="weights only", log_path=None)
    assert explorer.training()["available"] is False and explorer.info()["has_log"] is False


# ---------------------------------------------------------------- bad requests

@pytest.mark.parametrize("path,body,message", [
    ("/api/next", b"{not json", "malformed JSON"),
    ("/api/next", b"[1, 2]", "JSON object"),
    ("/api/next", b"\xff\xfe", "malformed JSON"),
    ("/api/next", {"text": 5}, '"text" must be a string'),
    ("/api/next", {"text": "a", "temperature": -1}, '"temperature"'),
    ("/api/next", {"text": "a", "temperature": "hot"}, '"temperature" must be a number, got \'hot\''),
    ("/api/next", {"text": "a", "top_p": 0}, '"top_p"'),
    ("/api/next", {"text": "a", "top_k": -1}, '"top_k" must be 0 (every token) or a positive integer'),
    ("/api/next", {"text": "a", "top_k": 2.5}, '"top_k" must be 0 (every token) or a positive integer, got 2.5'),
    ("/api/next", {"text": "a", "top_k": "3"}, '"top_k" must be 0 (every token) or a positive integer, got \'3\''),
    ("/api/next", {"text": "a", "top_k": True}, '"top_k" must be 0 (every token) or a positive integer, got True'),
    ("/api/next", {"text": ""}, "at least 1 token"),
    ("/api/attention", {"text": "abc", "layer": 2}, '"layer" must be an integer from 0 to 1'),
    ("/api/attention", {"text": "abc", "head": -1}, '"head"'),
    ("/api/attention", {"text": "abc", "layer": True}, '"layer"'),
    ("/api/gradients", {"text": "a"}, "at least 2 tokens"),
    ("/api/generate", {"text": "a", "max_new_tokens": 10 ** 6}, '"max_new_tokens"'),
    ("/api/generate", {"text": "a", "seed": "x"}, '"seed"'),
])
def test_bad_requests_get_400_with_a_json_error_and_the_server_keeps_serving(server, path, body, message):
    base, _ = server
    status, answer = post(base, path, body)
    assert status == 400 and message in answer["error"]
    assert ok(base, "/api/tokens", {"text": "ok"})["tokens"]


def test_top_k_0_is_every_token_as_on_the_command_line(server):
    base, _ = server
    every = ok(base, "/api/next", {"text": "ROMEO:", "top_k": None, "show": 5})
    zero = ok(base, "/api/next", {"text": "ROMEO:", "top_k": 0, "show": 5})
    assert zero == every and zero["kept_count"] == json.loads(get(base, "/api/info")[2])["vocab_size"]


def test_unknown_paths_get_404(server):
    base, _ = server
    assert post(base, "/api/nothing", {})[0] == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        get(base, "/../../etc/passwd")
    assert err.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        get(base, "/static/app.js")                     # only the page's own names, no file paths
    assert err.value.code == 404


def test_a_body_over_the_limit_gets_413_without_being_read(server):
    base, _ = server
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", "/api/next")
    conn.putheader("Content-Length", str(server_module.MAX_BODY + 1))
    conn.endheaders()                                   # announce a big body, send none of it
    response = conn.getresponse()
    assert response.status == 413 and "over" in json.loads(response.read())["error"]
    conn.close()
    status, answer = post(base, "/api/tokens", b'{"text": "' + b"a" * (server_module.MAX_BODY + 10) + b'"}')
    assert status == 413
    assert ok(base, "/api/tokens", {"text": "ok"})["tokens"]


def test_twenty_concurrent_requests_are_all_answered_correctly(server):
    base, _ = server
    prompts = [f"ROMEO: {'Juliet'[:1 + i % 6]} {i}" for i in range(20)]
    kinds = ["/api/next", "/api/attention", "/api/gradients", "/api/tokens"]
    jobs = [(kinds[i % 4], {"text": p, "layer": i % 2, "head": (i // 2) % 2}) for i, p in enumerate(prompts)]
    alone = [ok(base, path, body) for path, body in jobs]          # one at a time
    with ThreadPoolExecutor(max_workers=20) as pool:
        together = list(pool.map(lambda job: post(base, *job), jobs))
    for (status, answer), expected in zip(together, alone):
        assert status == 200 and answer == expected


# ---------------------------------------------------------------- hostile, broken and unexpected requests

def raw(base, method, path, headers=None, body=None, host=None):
    """(status, headers, body bytes) of one request on a fresh connection; ``host`` replaces the
    Host header http.client would send."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
    headers = dict(headers or {})
    if host is not None:
        headers["Host"] = host
    if body is not None:
        headers["Content-Length"] = str(len(body))
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders(body)
    response = conn.getresponse()
    answer = response.status, response.headers, response.read()
    conn.close()
    return answer


@pytest.mark.parametrize("body,message", [
    (b'{"text": "ROMEO", "top_k": NaN}', '"top_k"'),                       # int() of NaN raised ValueError
    (b'{"text": "ROMEO", "top_k": Infinity}', '"top_k"'),                  # int() of inf, OverflowError
    (b'{"text": "ROMEO", "top_k": -Infinity}', '"top_k"'),
    (b'{"text": "ROMEO", "top_k": ' + b"7" * 5000 + b"}", "malformed JSON"),   # over Python's 4300 digits
    (b"[" * 20000 + b"]" * 20000, "nested too deeply"),                    # RecursionError in the parser
    (b'{"text": "ROMEO", "temperature": 1' + b"0" * 400 + b"}", '"temperature"'),  # float() overflowed
])
def test_bodies_that_crashed_the_handler_get_400_with_a_json_error(server, body, message):
    base, _ = server
    status, answer = post(base, "/api/next", body)
    assert status == 400 and message in answer["error"]
    assert ok(base, "/api/tokens", {"text": "ok"})["tokens"]


def test_an_unexpected_error_is_a_500_with_a_short_json_error_and_one_line_on_stderr(server, monkeypatch, capsys):
    base, explorer = server

    def broken(*args):
        raise RuntimeError("the explorer broke")
    monkeypatch.setattr(explorer, "tokens", broken)
    monkeypatch.setattr(explorer, "info", broken)
    for method, path, body in (("POST", "/api/tokens", b'{"text": "a"}'), ("GET", "/api/info", None)):
        status, headers, answer = raw(base, method, path, {"Content-Type": "application/json"}, body)
        assert status == 500 and headers["Content-Type"] == "application/json"
        error = json.loads(answer)["error"]
        assert "RuntimeError" in error and "Traceback" not in error and "\n" not in error
    err = capsys.readouterr().err
    assert err.count("the explorer broke") == 2 and "Traceback" not in err
    monkeypatch.undo()
    assert ok(base, "/api/tokens", {"text": "still here"})["tokens"]


def test_on_loopback_only_the_local_host_names_are_answered(server):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name, which its requests carry in Host."""
    base, _ = server
    port = urlparse(base).port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", ""):
        for method, path, body in (("GET", "/", None), ("GET", "/api/info", None),
                                   ("POST", "/api/tokens", b'{"text": "a"}')):
            status, headers, answer = raw(base, method, path, {"Content-Type": "application/json"}, body, host=host)
            said = "is not this machine" if host else "the request names no Host"
            assert status == 403 and said in json.loads(answer)["error"], (host, path)
    for host in ("localhost", f"localhost:{port}", f"LocalHost:{port}", "127.0.0.1", f"127.0.0.1:{port}",
                 "[::1]", f"[::1]:{port}"):
        status, _, answer = raw(base, "POST", "/api/tokens", {"Content-Type": "application/json"}, b'{"text": "a"}',
                                host=host)
        assert status == 200 and json.loads(answer)["tokens"], host


def test_bound_to_every_address_on_purpose_any_host_is_answered(server):
    _, explorer = server
    httpd = server_module.make_server(explorer, "0.0.0.0", 0, quiet=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        status, _, answer = raw(base, "GET", "/api/info", host="my-machine.lan:8000")
        assert status == 200 and json.loads(answer)["tokenizer"] == "char"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_a_post_that_is_not_application_json_gets_415(server, content_type):
    """A page of any site can send these to 127.0.0.1 without asking (no CORS preflight)."""
    base, _ = server
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, answer = raw(base, "POST", "/api/tokens", headers, b'{"text": "a"}')
    assert status == 415 and "application/json" in json.loads(answer)["error"]
    status, _, answer = raw(base, "POST", "/api/tokens", {"Content-Type": "application/json; charset=utf-8"},
                            b'{"text": "a"}')
    assert status == 200


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405_in_json_with_an_allow_header(server, method):
    base, _ = server
    status, headers, answer = raw(base, method, "/api/info")
    assert status == 405 and headers["Allow"] == "GET, POST" and headers["Content-Type"] == "application/json"
    if method == "HEAD":
        assert answer == b""                                               # headers only
    else:
        assert method in json.loads(answer)["error"]
    status, headers, answer = raw(base, "BREW", "/")                       # not a method at all: 501, in JSON
    assert status == 501 and "BREW" in json.loads(answer)["error"]


@pytest.fixture
def logging_server(server):
    """A server that logs each request to stderr, as `tinygpt explore` does."""
    _, explorer = server
    httpd = server_module.make_server(explorer, "127.0.0.1", 0, quiet=False)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def send_raw(httpd, request: bytes) -> bytes:
    """What the server answers to ``request``, read until it closes the connection."""
    with socket.create_connection(httpd.server_address[:2], timeout=60) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_the_request_log_writes_control_characters_escaped(logging_server, capsys):
    """A request line may carry a terminal's escape codes (clear the screen, set the title)."""
    answer = send_raw(logging_server, b"GET /\x1b[2J\x1b]0;owned\x07\x9b HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404")
    err = capsys.readouterr().err                                          # logged before the answer went out
    assert "\x1b" not in err and "\x07" not in err and "\x9b" not in err
    assert "GET /\\x1b[2J\\x1b]0;owned\\x07\\x9b 404" in err.splitlines()


def test_a_malformed_request_line_is_one_log_line_and_a_400_in_json(logging_server, capsys):
    """The log line read the request's path, which the standard library has not set yet when the
    version is bad: the handler died (a traceback, the connection dropped)."""
    answer = send_raw(logging_server, b"GET / HTTP/one\r\n\r\n")
    assert "Bad request version" in json.loads(answer)["error"]         # HTTP/0.9 style: no status line
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines() == ["GET / HTTP/one 400"]


def test_a_client_that_stalls_mid_request_is_dropped(server):
    """Content-Length 100 and 8 bytes sent: the thread waited for the rest forever."""
    _, explorer = server
    httpd = server_module.make_server(explorer, "127.0.0.1", 0, quiet=True)
    assert 0 < httpd.RequestHandlerClass.timeout <= 60                     # the command's servers time out
    httpd.RequestHandlerClass.timeout = 0.2                                # this test need not wait that long
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        answer = send_raw(httpd, b"POST /api/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 100\r\n\r\n" + b'{"text":')
        assert answer == b""                                               # closed, not left hanging
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        assert ok(base, "/api/tokens", {"text": "next"})["tokens"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_idle_connection_is_closed_without_a_log_line(logging_server, capsys):
    """Once the timeout came in, a browser's idle keep-alive connection logged "Request timed out"
    under the name of its last request."""
    logging_server.RequestHandlerClass.timeout = 0.2
    answer = send_raw(logging_server, b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")   # then idle
    assert answer.startswith(b"HTTP/1.1 200")
    assert capsys.readouterr().err.splitlines() == ["GET /api/info 200"]


def test_training_rows_with_a_loss_that_is_not_finite_are_left_out(run_dir, tmp_path):
    """A diverged run logs NaN; the page read the last eval row's val loss and called toFixed on null."""
    log = tmp_path / "log.jsonl"
    rows = [{"kind": "train", "step": 1, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0},
            {"kind": "train", "step": 2, "loss": math.nan, "lr": math.nan, "grad_norm": math.inf},
            {"kind": "eval", "step": 0, "train_loss": 3.1, "val_loss": 3.2},
            {"kind": "eval", "step": 2, "train_loss": 2.9, "val_loss": math.nan},
            {"kind": "eval", "step": 4, "train_loss": math.inf, "val_loss": 2.8}]
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = server_module.Explorer(GPT2.load(run_dir), source="nan log", log_path=log).training()
    assert data["train"] == [[1, 3.0]] and data["eval"] == [[0, 3.1, 3.2]]
    assert data["lr"] == [[1, 1e-3]] and data["grad_norm"] == [[1, 1.0]]


# ---------------------------------------------------------------- the command

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tinygpt", "explore", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_the_command_prints_the_url_serves_and_stops_cleanly_on_ctrl_c(run_dir):
    port = free_port()
    proc = start(["--checkpoint", str(run_dir), "--port", str(port)])
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        info = json.loads(get(f"http://127.0.0.1:{port}", "/api/info")[2])
        assert info["tokenizer"] == "char"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


def test_the_open_flag_opens_the_served_url_in_the_browser_of_the_environment(run_dir, tmp_path):
    # webbrowser honours $BROWSER: a stand-in "browser" that writes down the URL it is given
    seen = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.py"
    recorder.write_text(f"import sys; open({str(seen)!r}, 'w').write(sys.argv[1])\n")
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", BROWSER=f"{sys.executable} {recorder} %s")
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "explore", "--checkpoint", str(run_dir), "--port",
                             str(port), "--open"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert f"http://127.0.0.1:{port}/" in proc.stdout.readline()
        deadline = time.time() + 30
        while time.time() < deadline and not (seen.exists() and seen.read_text()):
            time.sleep(0.1)
        assert seen.read_text() == f"http://127.0.0.1:{port}/"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


def test_a_port_in_use_is_one_clear_line(run_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "tinygpt", "explore", "--checkpoint", str(run_dir),
                                 "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"tinygpt explore: error: port {port} on 127.0.0.1 is already in use; choose another with --port"]


def test_exposing_the_server_beyond_this_machine_warns(run_dir):
    port = free_port()
    proc = start(["--checkpoint", str(run_dir), "--port", str(port), "--host", "0.0.0.0"])
    try:
        assert f":{port}/" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        assert "reachable from other machines" in proc.stderr.read()
    finally:
        proc.kill()


def test_a_missing_checkpoint_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tinygpt", "explore", "--checkpoint", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no checkpoint" in result.stderr and "Traceback" not in result.stderr


class Serving:
    """serve() in a thread, with webbrowser.open replaced by ``fake``; stops it on exit."""

    def __init__(self, explorer, monkeypatch, fake, open_browser):
        self.servers, self.thread = [], None
        real = server_module.make_server

        def keep(*args, **kwargs):                                         # to stop it afterwards
            self.servers.append(real(*args, **kwargs))
            return self.servers[-1]
        monkeypatch.setattr(server_module, "make_server", keep)
        monkeypatch.setattr(server_module.webbrowser, "open", fake)
        self.explorer, self.open_browser = explorer, open_browser

    def __enter__(self):
        self.thread = threading.Thread(target=server_module.serve, args=(self.explorer, "127.0.0.1", 0),
                                       kwargs={"open_browser": self.open_browser}, daemon=True)
        self.thread.start()
        end = time.monotonic() + 30
        while not self.servers and time.monotonic() < end:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.servers[0].server_address[1]}/"

    def __exit__(self, *exc):
        self.servers[0].shutdown()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_open_browser_opens_the_served_url_which_answers(server, monkeypatch, capsys):
    _, explorer = server
    opened, done = [], threading.Event()

    def fake_open(url):
        opened.append((url, get(url.rstrip("/"), "/api/info")[0]))         # the page is being served
        done.set()
        return True
    with Serving(explorer, monkeypatch, fake_open, open_browser=True) as url:
        assert done.wait(30)
    assert opened == [(url, 200)]
    out, err = capsys.readouterr()
    assert url in out and "browser" not in err


def test_without_open_browser_no_browser_is_opened(server, monkeypatch):
    _, explorer = server
    calls = []
    with Serving(explorer, monkeypatch, lambda url: calls.append(url) or True, open_browser=False) as url:
        assert get(url.rstrip("/"), "/api/info")[0] == 200
        time.sleep(0.2)
    assert calls == []


def no_browser(url):
    return False


def broken_browser(url):
    raise server_module.webbrowser.Error("could not locate runnable browser")


@pytest.mark.parametrize("fake", [no_browser, broken_browser])
def test_finding_no_browser_is_one_line_and_the_server_keeps_serving(server, monkeypatch, capsys, fake):
    _, explorer = server
    tried = threading.Event()

    def trying(url):
        tried.set()
        return fake(url)
    with Serving(explorer, monkeypatch, trying, open_browser=True) as url:
        assert tried.wait(30)
        err, end = "", time.monotonic() + 30
        while "no web browser" not in err and time.monotonic() < end:     # printed by the opening thread
            err += capsys.readouterr().err
            time.sleep(0.05)
        assert get(url.rstrip("/"), "/api/info")[0] == 200                 # still serving
    lines = [line for line in err.splitlines() if "browser" in line]
    assert len(lines) == 1 and url in lines[0] and "Traceback" not in err


def test_loopback_is_recognised():
    assert server_module.is_loopback("127.0.0.1") and server_module.is_loopback("::1")
    assert server_module.is_loopback("localhost") and not server_module.is_loopback("0.0.0.0")


def test_gpt2_bpe_tokens_show_their_text_and_ids():
    from tinygpt import GPTConfig
    from tinygpt.tokenizer import GPT2Tokenizer

    model = GPT2(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=8), tokenizer=GPT2Tokenizer())
    explorer = server_module.Explorer(model, source="random")
    answer = explorer.tokens({"text": "Hello world"})
    assert [(t["id"], t["text"]) for t in answer["tokens"]] == [(15496, "Hello"), (995, " world")]  # GPT-2's ids
    assert explorer.info()["tokenizer"] == "gpt2"
    candidates = explorer.next_token({"text": "Hello world", "show": 5})["candidates"]
    assert len(candidates) == 5 and all(isinstance(c["text"], str) for c in candidates)


def strict_json(raw: bytes):
    """json.loads that refuses NaN and Infinity, as a browser's JSON.parse does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(raw, parse_constant=refuse)


def test_a_diverged_model_still_gets_valid_json(run_dir):
    model = GPT2.load(run_dir)
    model.transformer.ln_f.weight.data[...] = np.nan                       # every logit NaN
    httpd = server_module.make_server(server_module.Explorer(model, source="nan"), "127.0.0.1", 0, quiet=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        for path in ("/api/next", "/api/gradients", "/api/attention"):
            request = urllib.request.Request(base + path, data=json.dumps({"text": "ROMEO"}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as r:
                answer = strict_json(r.read())
            assert r.status == 200
        assert answer["weights"]                                           # attention comes before ln_f
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_error_during_generation_ends_the_stream_with_it(server, monkeypatch):
    base, _ = server

    def failing(*args, **kwargs):
        yield 1
        raise RuntimeError("the model broke")
    monkeypatch.setattr(server_module, "generate_ids", failing)
    lines = stream(base, {"text": "ROMEO", "max_new_tokens": 5})
    assert lines[0]["id"] == 1 and lines[-1] == {"error": "RuntimeError: the model broke", "done": True}
    monkeypatch.undo()
    assert ok(base, "/api/tokens", {"text": "still here"})["tokens"]


def test_the_command_serves_pretrained_weights_in_hugging_face_format(tmp_path):
    from tinygpt import GPTConfig
    from tinygpt.hf import export
    from tinygpt.tokenizer import GPT2Tokenizer

    folder = export(GPT2(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=8),
                         tokenizer=GPT2Tokenizer()), tmp_path / "hf")
    port = free_port()
    proc = start(["--pretrained", str(folder), "--port", str(port)])
    try:
        assert f"http://127.0.0.1:{port}/" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        info = json.loads(get(base, "/api/info")[2])
        assert (info["tokenizer"], info["n_embd"], info["has_log"]) == ("gpt2", 8, False)
        assert json.loads(get(base, "/api/training")[2])["available"] is False
        assert [t["id"] for t in ok(base, "/api/tokens", {"text": "Hello world"})["tokens"]] == [15496, 995]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize("port,message", [("99999", "must be from 1 to 65535"), ("0", "must be at least 1"),
                                          ("http", "invalid integer")])
def test_a_bad_port_is_one_line(port, message):
    result = subprocess.run([sys.executable, "-m", "tinygpt", "explore", "--port", port],
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0]


def _ipv6_loopback_works():
    import socket
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_ipv6_loopback_host_is_served(run_dir):
    """--host ::1 was refused ("Address family for hostname not supported"): the server
    listened on IPv4 only."""
    if not _ipv6_loopback_works():
        pytest.skip("this machine has no IPv6 loopback")
    # written as a URL writes it, too
    httpd = server_module.make_server(server_module.Explorer(GPT2.load(run_dir), source="ipv6"), "[::1]", 0, quiet=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = server_module.url_of("::1", httpd.server_address[1]).rstrip("/")
        assert base.startswith("http://[::1]:")
        # serve() says and opens the same for "[::1]": loopback, no warning, one pair of brackets
        host = server_module.bare_host("[::1]")
        assert server_module.is_loopback(host) and server_module.url_of(host, 8).startswith("http://[::1]:8")
        assert json.loads(get(base, "/api/info")[2])["tokenizer"] == "char"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_characters_outside_a_char_models_alphabet_are_named_not_dropped_silently(server):
    """/api/tokens returned the known characters' tokens only, and the page showed nothing of
    the rest; a prompt with none known got 'needs at least 1 token'."""
    base, explorer = server
    answer = ok(base, "/api/tokens", {"text": "ROMEO \u263a\u263a"})
    assert answer["skipped"] == repr("\u263a") and len(answer["tokens"]) == len("ROMEO ")
    assert ok(base, "/api/tokens", {"text": "ROMEO"})["skipped"] == ""
    status, answer = post(base, "/api/next", {"text": "\u263a\u263a"})
    assert status == 400 and "none of the prompt's characters" in answer["error"] and "\u263a" in answer["error"]

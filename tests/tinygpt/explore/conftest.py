"""A small trained checkpoint and an explorer server on an ephemeral port, shared by the
explorer's tests (training it once takes a few seconds)."""
import os
import threading

import pytest

from tinygpt import GPT2, TrainConfig
from tinygpt.explore.server import Explorer, find_log, make_server
from tinygpt.train import Trainer

CORPUS = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
          "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n") * 40


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A character-level run of 40 steps: checkpoints and a log.jsonl."""
    base = tmp_path_factory.mktemp("explore")
    corpus = base / "verona.txt"
    corpus.write_text(CORPUS)
    saved = os.environ.get("TINYGPT_CACHE")
    os.environ["TINYGPT_CACHE"] = str(base / "token-cache")
    try:
        cfg = TrainConfig(data=str(corpus), out=str(base / "run"), preset="tiny", tokenizer="char", block_size=32,
                          batch_size=8, max_iters=40, eval_interval=20, eval_iters=2, lr=3e-3, warmup_iters=4,
                          sample_tokens=0, progress=False, seed=3)
        Trainer(cfg, out_stream=lambda *_: None).run()
    finally:
        if saved is None:
            os.environ.pop("TINYGPT_CACHE", None)
        else:
            os.environ["TINYGPT_CACHE"] = saved
    return base / "run"


@pytest.fixture(scope="session")
def server(run_dir):
    """(base URL, the Explorer) of a server running in a background thread."""
    explorer = Explorer(GPT2.load(run_dir), source=str(run_dir), log_path=find_log(run_dir))
    httpd = make_server(explorer, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", explorer
    httpd.shutdown()
    httpd.server_close()

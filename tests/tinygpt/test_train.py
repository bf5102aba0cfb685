"""The trainer: outputs, exact resume, NaN handling, Ctrl-C, and the train -> generate
-> chat -> GPT2.load contract end to end."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tinygpt import GPT2, TinyGPTError, TrainConfig
from tinygpt.checkpoint import read_arrays
from tinygpt.train import Trainer

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 30


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "citizens.txt"
    path.write_text(CORPUS)
    return path


def small_config(corpus, out, **kw):
    base = dict(data=str(corpus), out=str(out), preset="tiny", tokenizer="char", block_size=16, batch_size=4,
                max_iters=12, eval_interval=4, eval_iters=2, lr=3e-3, warmup_iters=2, sample_tokens=0,
                progress=False, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def run(cfg, **kw):
    return Trainer(cfg, out_stream=lambda *_: None, **kw).run()


def test_a_run_writes_checkpoints_a_log_and_a_loss_plot(corpus, tmp_path):
    summary = run(small_config(corpus, tmp_path / "run"))
    out = tmp_path / "run"
    assert summary["step"] == 12 and not summary["interrupted"]
    for name in ("latest/model.safetensors", "latest/optimizer.safetensors", "latest/state.json",
                 "best/model.safetensors", "log.jsonl", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 4, 8, 12]
    assert sum(r["kind"] == "train" for r in records) == 12
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.name.startswith(("latest.", "best.")) for p in out.iterdir())  # no temporary leftovers


def test_training_lowers_the_loss(corpus, tmp_path):
    summary = run(small_config(corpus, tmp_path / "run", max_iters=60, eval_interval=30))
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert summary["best_val_loss"] == min(r["val_loss"] for r in evals)


def test_resume_continues_exactly_bit_for_bit(corpus, tmp_path):
    common = dict(lr_decay_iters=16, dropout=0.1)   # a schedule that does not depend on max_iters
    run(small_config(corpus, tmp_path / "straight", max_iters=16, **common))
    run(small_config(corpus, tmp_path / "split", max_iters=8, **common))
    resumed = TrainConfig(out=str(tmp_path / "split"), resume=True, max_iters=16, progress=False)
    summary = run(resumed, explicit={"out", "resume", "max_iters", "progress"})
    assert summary["step"] == 16
    a = read_arrays(tmp_path / "straight" / "latest" / "model.safetensors")
    b = read_arrays(tmp_path / "split" / "latest" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    oa = read_arrays(tmp_path / "straight" / "latest" / "optimizer.safetensors")
    ob = read_arrays(tmp_path / "split" / "latest" / "optimizer.safetensors")
    assert oa and oa.keys() == ob.keys()
    for name in oa:
        assert np.array_equal(oa[name], ob[name]), name


def test_resuming_with_a_larger_max_iters_says_the_learning_rate_goes_back_up(corpus, tmp_path):
    """The decay ends at --max-iters by default: a resumed run given a larger one follows a
    stretched cosine, whose rate at the resumed step is higher than the run had reached."""
    run(small_config(corpus, tmp_path / "r", max_iters=8))
    notes = {}
    for name, extra in (("same", {}), ("longer", {"max_iters": 16}), ("kept", {"max_iters": 16, "lr_decay_iters": 8})):
        lines = []
        cfg = TrainConfig(out=str(tmp_path / "r"), resume=True, progress=False, **extra)
        Trainer(cfg, out_stream=lines.append, explicit={"out", "resume", "progress", *extra}).run()
        notes[name] = [line for line in lines if "learning rate's decay" in line]
        if name == "longer":   # undo those 8 steps for the next resume
            run(small_config(corpus, tmp_path / "r", max_iters=8, overwrite=True))
    assert notes["same"] == [] and notes["kept"] == []
    # the flags are checked against each other once merged with the run's: its warm-up is 2 steps
    # (TrainConfig's default, 50, would refuse 8 above), and a decay that ends at step 1 is refused
    cfg = TrainConfig(out=str(tmp_path / "r"), resume=True, progress=False, lr_decay_iters=1)
    with pytest.raises(TinyGPTError, match=r"--lr-decay-iters 1 .*\(--warmup-iters 2\)"):
        Trainer(cfg, out_stream=lambda *_: None, explicit={"out", "resume", "progress", "lr_decay_iters"}).run()
    (note,) = notes["longer"]
    # the run's schedule (lr 3e-3, warm-up 2, decay to 3e-4 at step 8) had reached its floor at
    # step 8; the new one, decaying to step 16, is at 3e-4 + 2.7e-3 (1 + cos(pi 6/14)) / 2 there
    stretched = 3e-4 + 2.7e-3 * 0.5 * (1 + np.cos(np.pi * 6 / 14))
    assert "ends at step 16, not at 8" in note and f"it is {stretched:.2g} where the run had it at 0.0003" in note
    assert "--lr-decay-iters 8" in note


@pytest.mark.parametrize("first, then, expect", [
    # a warm-up longer than the first run: the rate is still rising, and the same either way
    ({"max_iters": 8, "warmup_iters": 20}, {"max_iters": 16}, None),
    # the warm-up changed too: --lr-decay-iters alone would not bring the old schedule back
    ({"max_iters": 8, "warmup_iters": 2}, {"max_iters": 16, "warmup_iters": 4}, "where the run had it at 0.0003"),
], ids=["still_warming_up", "warm_up_changed"])
def test_the_learning_rate_note_says_only_what_is_true(corpus, tmp_path, first, then, expect):
    run(small_config(corpus, tmp_path / "r", **first))
    lines = []
    cfg = TrainConfig(out=str(tmp_path / "r"), resume=True, progress=False, **then)
    Trainer(cfg, out_stream=lines.append, explicit={"out", "resume", "progress", *then}).run()
    notes = [line for line in lines if "learning rate's decay" in line]
    if expect is None:
        assert notes == []
    else:
        (note,) = notes
        assert expect in note and "--lr-decay-iters" not in note


def test_resuming_weights_that_do_not_fit_is_one_bounded_line(corpus, tmp_path):
    from tinygpt.checkpoint import save_arrays
    run(small_config(corpus, tmp_path / "r", max_iters=4))
    weights = read_arrays(tmp_path / "r" / "latest" / "model.safetensors")
    save_arrays({k: np.zeros((2,) + v.shape, v.dtype) for k, v in weights.items()},
                tmp_path / "r" / "latest" / "model.safetensors", metadata={"format": "tinygpt-checkpoint-1"})
    result = subprocess.run([sys.executable, "-m", "tinygpt", "train", "--resume", "--out", str(tmp_path / "r"),
                             "--max-iters", "6", "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert f"{tmp_path / 'r' / 'latest' / 'model.safetensors'} does not fit" in lines[0]
    assert "load_state_dict" not in lines[0] and "more" in lines[0] and len(lines[0]) < 600


def test_train_from_python_refuses_a_misspelt_setting_and_leaves_the_config_alone(corpus, tmp_path, capsys):
    from tinygpt.train import train
    with pytest.raises(TypeError, match="unknown settings: max_iter$|unknown settings: max_iter "):
        train(max_iter=5)                            # was ignored: a default 300-step run
    cfg = small_config(corpus, tmp_path / "r", max_iters=12)
    train(cfg, max_iters=2)
    assert cfg.max_iters == 12                      # the override made a new config
    assert json.loads((tmp_path / "r" / "latest" / "state.json").read_text())["step"] == 2


def test_train_from_python_resuming_applies_a_setting_given_at_its_default_value(corpus, tmp_path):
    """The run was made with lr 3e-3; train(resume=True, lr=<the default>) asks for the default
    back, which was dropped: only settings that differ from the defaults were counted as given."""
    from tinygpt.train import train
    run(small_config(corpus, tmp_path / "r", max_iters=2, eval_interval=2))
    default_lr = TrainConfig().lr
    assert default_lr != 3e-3
    train(out=str(tmp_path / "r"), resume=True, max_iters=4, progress=False, lr=default_lr)
    saved = json.loads((tmp_path / "r" / "latest" / "state.json").read_text())
    assert saved["step"] == 4 and saved["train_config"]["lr"] == default_lr
    assert saved["train_config"]["batch_size"] == 4                 # not given: the run's own


def test_resume_without_a_checkpoint_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(TinyGPTError, match="no checkpoint"):
        run(small_config(corpus, tmp_path / "empty", resume=True))


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    from autograd import optim
    cfg = small_config(corpus, tmp_path / "run", max_iters=12, eval_interval=4)
    original = optim.AdamW.step
    calls = {"n": 0}

    def step_then_poison(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 6:  # after the 6th update, a weight turns into NaN: step 6's loss is NaN
            self.param_groups[0]["params"][0].data[0, 0] = np.nan
    monkeypatch.setattr(optim.AdamW, "step", step_then_poison)
    with pytest.raises(TinyGPTError, match=r"loss became nan at step 6.*last good checkpoint \(step 4\)"):
        run(cfg)
    state = json.loads((tmp_path / "run" / "latest" / "state.json").read_text())
    assert state["step"] == 4
    weights = read_arrays(tmp_path / "run" / "latest" / "model.safetensors")
    assert all(np.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("numba", ["1", "0"], ids=["compiled", "numpy_threads"])
def test_a_diverging_run_from_the_command_line_is_one_line_without_numpys_warnings(corpus, tmp_path, numba):
    # without numba, GELU runs NumPy on worker threads, which start without the caller's errstate
    result = subprocess.run([sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out",
                             str(tmp_path / "run"), "--preset", "tiny", "--tokenizer", "char", "--max-iters", "20",
                             "--lr", "1e4", "--grad-clip", "0", "--batch-size", "16", "--no-progress"], cwd=ROOT,
                            capture_output=True, text=True, env=dict(os.environ, TINYGPT_NUMBA=numba))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr     # was: "RuntimeWarning: overflow ..."
    assert "the loss became" in lines[0] and "Try a lower --lr" in lines[0]


def test_a_damaged_log_neither_stops_a_plot_nor_a_resume(corpus, tmp_path):
    """A line of JSON that is no record, bytes that are not UTF-8, a train record without its
    loss: the plot and --resume had stopped with a traceback on each."""
    out = tmp_path / "run"
    run(small_config(corpus, out, max_iters=4, eval_interval=4))
    good = (out / "log.jsonl").read_bytes()
    damage = b'42\n\xff\xfe garbage\n{"kind": "train", "step": 3}\n["a list"]\n{"kind": "eval", "step": "x"}\n'
    first, rest = good.split(b"\n", 1)                     # (a log that does not start as JSON is not ours)
    other = b'{"kind": "note", "step": 2, "text": "a record of a kind this version does not plot"}\n'
    (out / "log.jsonl").write_bytes(first + b"\n" + damage + other + rest)
    plot = subprocess.run([sys.executable, "-m", "tinygpt", "plot", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert plot.returncode == 0 and "Traceback" not in plot.stderr, plot.stderr
    more = subprocess.run([sys.executable, "-m", "tinygpt", "train", "--resume", "--out", str(out), "--max-iters", "6",
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert more.returncode == 0 and "Traceback" not in more.stderr, more.stderr
    from tinygpt.plots import read_log
    steps = [r["step"] for r in read_log(out / "log.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]                     # the damage gone, the run's own records kept
    assert b'"kind": "note"' in (out / "log.jsonl").read_bytes()   # a resume keeps records of other kinds


def test_resume_finds_the_run_of_a_relative_data_path(corpus, tmp_path):
    """`--data .` trained into runs/<folder> and its --resume looked in runs/; a deleted
    corpus's --resume looked for runs/<name>.txt and blamed the run."""
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text(CORPUS)
    common = ["--preset", "tiny", "--tokenizer", "char", "--block-size", "16", "--eval-iters", "1",
              "--sample-tokens", "0", "--no-progress"]

    def train(*args):
        return subprocess.run([sys.executable, "-m", "tinygpt", "train", *args, *common], cwd=texts,
                              capture_output=True, text=True)
    first = train("--data", ".", "--max-iters", "2")
    assert first.returncode == 0 and (texts / "runs" / "texts" / "latest").is_dir(), first.stderr
    again = train("--data", ".", "--resume", "--max-iters", "3")
    assert again.returncode == 0 and "resuming runs/texts from step 2" in again.stdout, again.stderr
    shutil.copy(texts / "a.txt", texts / "b.txt")
    assert train("--data", "b.txt", "--max-iters", "2").returncode == 0
    (texts / "b.txt").unlink()
    gone = train("--data", "b.txt", "--resume", "--max-iters", "3")
    assert gone.returncode == 1 and f"data path {texts / 'b.txt'} does not exist" in gone.stderr, gone.stderr


def test_resuming_on_a_corpus_edited_in_place_says_so(corpus, tmp_path):
    run(small_config(corpus, tmp_path / "r", max_iters=4))
    notes = {}
    for name, text in (("same", CORPUS), ("edited", CORPUS + "Second Citizen:\nWe are accounted poor.\n")):
        corpus.write_text(text)
        lines = []
        cfg = TrainConfig(out=str(tmp_path / "r"), resume=True, progress=False, max_iters=4 + len(notes) + 1)
        Trainer(cfg, out_stream=lines.append, explicit={"out", "resume", "progress", "max_iters"}).run()
        notes[name] = [line for line in lines if "has changed since this run was saved" in line]
    assert notes["same"] == [] and len(notes["edited"]) == 1 and str(corpus) in notes["edited"][0]


def test_ctrl_c_saves_and_exits_cleanly(corpus, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out", str(out), "--preset", "tiny",
           "--tokenizer", "char", "--block-size", "16", "--batch-size", "4", "--max-iters", "100000",
           "--eval-interval", "100000", "--eval-iters", "1", "--sample-tokens", "0", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    deadline = time.time() + 60
    log = out / "log.jsonl"
    while time.time() < deadline and (not log.exists() or log.read_text().count('"train"') < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr      # as a shell reports SIGINT: a script can tell it from a finished run
    assert "Traceback" not in stderr
    assert "interrupted at step" in stdout and "--resume" in stdout
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["step"] >= 3


def test_train_then_generate_chat_and_load_end_to_end(corpus, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ)
    train = subprocess.run([sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out", str(out),
                            "--preset", "tiny", "--tokenizer", "char", "--block-size", "16", "--max-iters", "30",
                            "--eval-interval", "15", "--eval-iters", "2", "--sample-tokens", "10", "--no-progress"],
                           cwd=ROOT, capture_output=True, text=True, env=env)
    assert train.returncode == 0, train.stderr
    assert "done: 30 steps" in train.stdout
    gen = subprocess.run([sys.executable, "-m", "tinygpt", "generate", "--checkpoint", str(out), "--prompt", "All:",
                          "--max-new-tokens", "20", "--seed", "1"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("All:") and len(gen.stdout) >= 20
    # characters outside a char model's alphabet: warned about, and not echoed as if the
    # continuation had followed them (it follows "All:")
    odd = subprocess.run([sys.executable, "-m", "tinygpt", "generate", "--checkpoint", str(out), "--prompt", "Allé☃:",
                          "--max-new-tokens", "20", "--seed", "1"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert odd.returncode == 0, odd.stderr
    assert odd.stdout == gen.stdout                     # the same text seen, the same seed: the same sample
    assert "not in the model's alphabet" in odd.stderr and "é" in odd.stderr and "☃" in odd.stderr
    chat = subprocess.run([sys.executable, "-m", "tinygpt", "chat", "--checkpoint", str(out), "--max-new-tokens", "10"],
                          input="Speak, speak.\n/quit\n", cwd=ROOT, capture_output=True, text=True, env=env)
    assert chat.returncode == 0, chat.stderr
    assert "bot>" in chat.stdout
    model = GPT2.load(out)
    text = model.generate("First", max_length=15, seed=1)
    assert text.startswith("First") and len(text) > len("First")
    assert model.tokenizer.kind == "char" and model.config.block_size == 16
    more = subprocess.run([sys.executable, "-m", "tinygpt", "train", "--resume", "--out", str(out), "--max-iters", "34",
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert more.returncode == 0, more.stderr
    assert "done: step 34, 4 steps in" in more.stdout     # it said "done: 34 steps", counting the first run's


def test_the_same_seed_gives_the_same_run(corpus, tmp_path):
    run(small_config(corpus, tmp_path / "a", max_iters=6, dropout=0.1))
    run(small_config(corpus, tmp_path / "b", max_iters=6, dropout=0.1))
    a = read_arrays(tmp_path / "a" / "latest" / "model.safetensors")
    b = read_arrays(tmp_path / "b" / "latest" / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_equals_one_batch_of_the_combined_size(corpus, tmp_path):
    # two micro-batches of 4 draw the same windows as one batch of 8; the mean loss and
    # therefore the update are the same, up to float32 summation order
    run(small_config(corpus, tmp_path / "accum", max_iters=1, batch_size=4, grad_accum=2, eval_iters=1))
    run(small_config(corpus, tmp_path / "whole", max_iters=1, batch_size=8, grad_accum=1, eval_iters=1))
    a = read_arrays(tmp_path / "accum" / "latest" / "model.safetensors")
    b = read_arrays(tmp_path / "whole" / "latest" / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    la = [json.loads(line) for line in (tmp_path / "accum" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    train_a = [r["loss"] for r in la if r["kind"] == "train"]
    train_b = [r["loss"] for r in lb if r["kind"] == "train"]
    np.testing.assert_allclose(train_a, train_b, rtol=1e-5)


def test_plots_are_drawn_off_the_training_thread(corpus, tmp_path, monkeypatch):
    import threading

    import tinygpt.train as train_module
    threads = []
    real = train_module.plot_training

    def spy(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)
    monkeypatch.setattr(train_module, "plot_training", spy)
    run(small_config(corpus, tmp_path / "run", max_iters=8, eval_interval=4))
    # one figure per evaluation while training (in a background thread), then the final one
    assert threads[:-1] and not any(threads[:-1]) and threads[-1] is True


def test_a_plot_the_disk_refuses_is_a_note_and_the_run_goes_on(corpus, tmp_path, monkeypatch):
    """savefig failing (a full disk) printed a thread's traceback and left loss.png.tmp<pid>.png;
    at the end of the run it made a finished run exit with an error."""
    import errno

    from matplotlib.figure import Figure

    def full_disk(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a png")              # what a write cut short leaves
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Figure, "savefig", full_disk)
    lines = []
    summary = Trainer(small_config(corpus, tmp_path / "run", max_iters=8, eval_interval=4),
                      out_stream=lines.append).run()
    assert summary["step"] == 8 and not summary["interrupted"]
    notes = [line for line in lines if "could not write" in line]
    assert notes and all("No space left on device" in line for line in notes), lines
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best", "latest", "log.jsonl"]


# ----------------------------------------------------------------------------- a run is never lost
def cli_train(corpus, out, *extra):
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out", str(out), "--preset", "tiny",
           "--tokenizer", "char", "--block-size", "16", "--batch-size", "4", "--eval-iters", "1",
           "--sample-tokens", "0", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=300)


def file_hashes(folder):
    import hashlib
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_train_into_a_finished_run_is_refused_and_leaves_every_file_byte_for_byte(corpus, tmp_path):
    out = tmp_path / "run"
    first = cli_train(corpus, out, "--max-iters", "8", "--eval-interval", "4", "--no-progress")
    assert first.returncode == 0, first.stderr
    before = file_hashes(out)
    assert {"best/model.safetensors", "latest/state.json", "log.jsonl", "loss.png"} <= set(before)
    second = cli_train(corpus, out, "--max-iters", "20", "--no-progress")
    assert second.returncode == 1 and "Traceback" not in second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"{out} already holds a run (step 8, val loss" in lines[0]
    assert all(way in lines[0] for way in ("--resume", "--out DIR", "--overwrite"))
    assert file_hashes(out) == before


def test_overwrite_replaces_the_whole_run(corpus, tmp_path):
    out = tmp_path / "run"
    assert cli_train(corpus, out, "--max-iters", "12", "--eval-interval", "4", "--no-progress").returncode == 0
    (out / "notes.txt").write_text("mine")                       # not part of the run: it stays
    again = cli_train(corpus, out, "--max-iters", "6", "--eval-interval", "3", "--seed", "9", "--overwrite",
                      "--no-progress")
    assert again.returncode == 0, again.stderr
    for name in ("best", "latest"):
        state = json.loads((out / name / "state.json").read_text())
        assert state["train_config"]["seed"] == 9 and state["step"] <= 6, name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 6 and [r["step"] for r in records if r["kind"] == "eval"] == [0, 3, 6]
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["best", "latest", "log.jsonl", "loss.png", "notes.txt"]


@pytest.mark.parametrize("ending", ["an error", "a second Ctrl-C"])
def test_overwrite_keeps_the_old_run_until_the_new_one_saves_a_checkpoint(corpus, tmp_path, monkeypatch, ending):
    """A new run with --overwrite that ends before its first checkpoint (a crash, a diverging
    loss, a second Ctrl-C) puts the old run back, byte for byte: --overwrite deleted it first."""
    out = tmp_path / "run"
    run(small_config(corpus, out, max_iters=4, eval_interval=4))
    before = file_hashes(out)
    calls = []

    def fails_at_step_2(self):          # step 0's evaluation passes (the new log is written), then
        calls.append(self.step)
        if self.step == 2:
            raise RuntimeError("boom") if ending == "an error" else KeyboardInterrupt
        return {"train": 5.0, "val": 5.0}
    monkeypatch.setattr(Trainer, "evaluate", fails_at_step_2)
    lines = []
    trainer = Trainer(small_config(corpus, out, max_iters=8, eval_interval=2, seed=9, overwrite=True),
                      out_stream=lines.append)
    if ending == "an error":
        with pytest.raises(RuntimeError, match="boom"):
            trainer.run()
    else:
        assert trainer.run()["interrupted"]
    assert calls == [0, 2]
    assert file_hashes(out) == before                                # the new log and plot gone too
    assert any("is back as it was" in line for line in lines), lines


def _killed_overwrite(out, with_log=True):
    """What an --overwrite killed before its first checkpoint leaves: the old run in
    .replaced-run, and (if it got that far) the new attempt's log in the folder."""
    (out / ".replaced-run").mkdir()
    for p in list(out.iterdir()):
        if p.name != ".replaced-run":
            p.rename(out / ".replaced-run" / p.name)
    if with_log:
        (out / "log.jsonl").write_text('{"kind": "eval", "step": 0, "train_loss": 4.0, "val_loss": 4.0}\n')


@pytest.mark.parametrize("with_log", [True, False], ids=["after its log", "before its log"])
def test_a_run_an_overwrite_left_aside_comes_back_before_anything_else(corpus, tmp_path, with_log):
    """Killed (or, under mpiexec, another rank failing) before its first checkpoint and before
    putting the old run back: the folder looked empty, or held a log only; generate said 'no
    checkpoint', a plain train went ahead beside the hidden run, and a later --overwrite put
    that older run back over the newer one. Now readers find it, and the next train puts it
    back first (and then refuses to train over it without --resume or --overwrite)."""
    out = tmp_path / "run"
    run(small_config(corpus, out, max_iters=4, eval_interval=4))
    before = file_hashes(out)
    weights = read_arrays(out / "best" / "model.safetensors")
    _killed_overwrite(out, with_log)
    loaded = GPT2.load(out)                                    # found where it was set aside
    assert all(np.array_equal(p.data, weights[n]) for n, p in loaded.named_parameters())
    lines = []
    with pytest.raises(TinyGPTError, match="already holds a run"):
        Trainer(small_config(corpus, out, max_iters=4), out_stream=lines.append).run()
    assert any("the run it was replacing (step 4" in line and "is back" in line for line in lines), lines
    assert file_hashes(out) == before                          # back byte for byte, the attempt's log gone


def test_a_set_aside_run_goes_once_the_new_run_has_a_checkpoint(corpus, tmp_path):
    """Killed between the new run's first save and the deletion: the new run is the one asked for."""
    out = tmp_path / "run"
    run(small_config(corpus, out, max_iters=4, eval_interval=4))
    (out / ".replaced-run").mkdir()
    shutil.copytree(out / "latest", out / ".replaced-run" / "latest")
    run(small_config(corpus, out, max_iters=6, eval_interval=2, resume=True), explicit={"max_iters", "resume"})
    assert not (out / ".replaced-run").exists()
    assert json.loads((out / "latest" / "state.json").read_text())["step"] == 6


def test_a_save_killed_midway_leaves_no_folder_for_good(corpus, tmp_path):
    """latest.tmp-<pid> of a killed process stayed for ever (103 MB at 512 wide); the next save
    removes those of processes that no longer run, and keeps a live one's."""
    out = tmp_path / "run"
    run(small_config(corpus, out, max_iters=2, eval_interval=2))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getppid()
    for pid in (dead, alive):
        (out / f"latest.tmp-{pid}").mkdir()
        (out / f"latest.tmp-{pid}" / ".tmpGTLp6m").write_bytes(b"half a file")
    run(small_config(corpus, out, max_iters=4, eval_interval=2, resume=True), explicit={"max_iters", "resume"})
    assert not (out / f"latest.tmp-{dead}").exists() and (out / f"latest.tmp-{alive}").exists()


def test_the_second_ctrl_c_ends_the_process_instead_of_raising_where_python_is(corpus, tmp_path, monkeypatch):
    """Raised from the handler, KeyboardInterrupt landed wherever Python was, inside numba's
    compiler callbacks too (a traceback, once a segmentation fault: hard to time in a test).
    The handler itself is checked here: the second call ends the process with 130."""
    import tinygpt.train as train_module

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)
    monkeypatch.setattr(train_module.os, "_exit", fake_exit)
    lines = []
    trainer = Trainer(small_config(corpus, tmp_path / "run"), out_stream=lines.append)
    trainer.out, trainer.last_good_step = tmp_path / "run", 4
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set from the main thread only")
    with trainer._ctrl_c_finishes_the_step():
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)                         # the first: finish the step and save
        assert trainer._stop_requested and not lines[-1].startswith("\nstopped")
        try:
            handler(signal.SIGINT, None)                     # the second
        except KeyboardInterrupt:
            pytest.fail("the second Ctrl-C raised KeyboardInterrupt where Python was")
        except Exited as exc:
            assert exc.args == (130,)
        else:
            pytest.fail("the second Ctrl-C did not end the process")
    assert lines[-1] == f"\nstopped; the last checkpoint (step 4) is in {tmp_path / 'run' / 'latest'}"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent the POSIX way")
def test_a_second_ctrl_c_ends_at_once_with_130_and_puts_the_old_run_back(corpus, tmp_path):
    """The second Ctrl-C raised KeyboardInterrupt wherever Python was: inside numba's compiler
    callbacks it gave a traceback, once a segmentation fault, and an --overwrite's old run
    stayed set aside. Here both arrive during the new run's first evaluation."""
    out = tmp_path / "run"
    assert cli_train(corpus, out, "--max-iters", "4", "--eval-interval", "4", "--no-progress").returncode == 0
    before = file_hashes(out)
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out", str(out), "--preset", "tiny",
           "--tokenizer", "char", "--block-size", "16", "--batch-size", "4", "--max-iters", "8",
           "--eval-interval", "8", "--eval-iters", "20000", "--sample-tokens", "0", "--no-progress", "--overwrite"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert "training" in proc.stdout.readline()               # the banner: the evaluation starts next
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "is back as it was" in stdout and "nothing was saved" in stdout, stdout
    assert file_hashes(out) == before


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_out_that_cannot_be_a_folder_is_one_line_before_any_work(corpus, tmp_path, where):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    out = mine if where == "a file" else mine / "run"
    result = cli_train(corpus, out, "--max-iters", "2", "--no-progress")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("tinygpt train: error: --out") and str(mine) in lines[0]
    assert "training" not in result.stdout and mine.read_text() == "mine"


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_folder_with_the_users_own_best_folder_is_refused_even_with_overwrite(corpus, tmp_path, flags):
    """A best/ (or latest/, log.jsonl) that tinygpt did not write is not a run: it is not
    called one, and --overwrite does not delete it."""
    out = tmp_path / "mine"
    (out / "best").mkdir(parents=True)
    (out / "best" / "photo.jpg").write_text("mine")
    (out / "log.jsonl").write_text("not json\n")
    result = cli_train(corpus, out, "--max-iters", "2", "--no-progress", *flags)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "best/, log.jsonl" in lines[0] and "tinygpt did not write" in lines[0] and "--out DIR" in lines[0]
    assert "saved no checkpoint" not in lines[0]
    assert (out / "best" / "photo.jpg").read_text() == "mine"
    assert (out / "log.jsonl").read_text() == "not json\n"


def test_resume_says_from_which_step_towards_which_max_iters(corpus, tmp_path):
    out = tmp_path / "run"
    assert cli_train(corpus, out, "--max-iters", "8", "--eval-interval", "4", "--no-progress").returncode == 0
    resumed = cli_train(corpus, out, "--max-iters", "12", "--eval-interval", "4", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} from step 8 (val loss " in resumed.stdout and "towards --max-iters 12" in resumed.stdout
    done = cli_train(corpus, out, "--max-iters", "12", "--resume", "--no-progress")
    assert done.returncode == 0 and "nothing to train (pass a larger --max-iters)" in done.stdout


@pytest.mark.parametrize("extra,needle", [
    (["--overwrite"], "--resume continues the run in --out and --overwrite replaces it"),
    (["--block-size", "8"], "--block-size 8 (the run has 16) cannot change it"),
])
def test_resume_refuses_flags_that_contradict_it(corpus, tmp_path, extra, needle):
    out = tmp_path / "run"
    assert cli_train(corpus, out, "--max-iters", "4", "--eval-interval", "4", "--no-progress").returncode == 0
    before = file_hashes(out)
    result = cli_train(corpus, out, "--max-iters", "8", "--resume", "--no-progress", *extra)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert needle in result.stderr
    assert file_hashes(out) == before


def test_progress_to_a_pipe_is_plain_lines_without_carriage_returns(corpus, tmp_path):
    result = cli_train(corpus, tmp_path / "run", "--max-iters", "20", "--eval-interval", "20")   # progress on
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\r" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    # on steps whose loss was just read (every 10th): none blank, none repeating the one before
    assert [line.split(":")[0] for line in lines] == ["step 10/20", "step 20/20"]
    assert all(" loss " in line + " " and "tok/s" in line for line in lines), lines


def test_the_steps_read_the_device_once_every_ten_steps_and_log_every_step(corpus, tmp_path, monkeypatch):
    """On a GPU every read waits for the queued work: the loop keeps the loss and the
    gradient norm on the device and reads those of ten steps at once (backend.to_numpy is
    the trainer's one door from device to host). Evaluation and saving are left out here."""
    from autograd import backend
    reads, real = [], backend.to_numpy
    monkeypatch.setattr(backend, "to_numpy", lambda a: (reads.append(tuple(a.shape)), real(a))[1])
    monkeypatch.setattr(Trainer, "_eval_and_save", lambda self, final=False: {})
    run(small_config(corpus, tmp_path / "run", max_iters=25, eval_interval=100))
    assert reads == [(20,), (20,), (10,)]         # (loss, norm) of steps 1-10, 11-20, 21-25
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 26))
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in records)


def test_each_step_logs_its_own_loss_and_the_first_is_the_initial_models(corpus, tmp_path):
    """Reading ten steps at once puts each step's loss on its own line (three lines, three
    different losses); the first step's logged loss is the loss of the initial model on the
    first training batch, recomputed here."""
    from autograd import backend
    from tinygpt import preset
    from tinygpt.data import TokenData, load_corpus, stream_seed
    from tinygpt.tokenizer import make_tokenizer
    cfg = small_config(corpus, tmp_path / "run", max_iters=3, eval_interval=100)
    run(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3] and len({r["loss"] for r in steps}) == 3
    first = steps[0]
    text, _ = load_corpus(str(corpus))
    tokenizer = make_tokenizer("char", text)
    backend.seed(cfg.seed)
    model = GPT2(preset("tiny", vocab_size=tokenizer.vocab_size, block_size=16), tokenizer=tokenizer)
    data = TokenData(text, tokenizer, 16, seed=stream_seed(cfg.seed + 1, 0))
    x, y = data.get_batch("train", 4)
    # the same float32 computation on the same inputs; 1e-6 leaves room for a BLAS that
    # splits a product differently between two calls, far below the change of a step (~1e-2)
    assert first["loss"] == pytest.approx(float(model(x, y)[1].data), rel=1e-6)


def test_profile_prints_where_a_step_goes_and_writes_nothing(corpus, tmp_path):
    lines = []
    out = tmp_path / "run"
    summary = Trainer(small_config(corpus, out, profile=3), out_stream=lines.append).run()
    table = summary["profile"]
    assert lines[-1] == table and "3 steps after 2 warm-up steps" in table
    rows = {line.split("  ")[1].strip(): line for line in table.splitlines()[2:]}
    for name in ("LinearCrossEntropy", "LayerNorm", "GELU", "CausalAttention", "Linear", "AdamW (kernels/adamw.py)",
                 "clip_grad_norm", "the rest: the tape, Python, batches", "one step"):
        assert name in rows, (name, table)
    for name in ("LinearCrossEntropy", "LayerNorm", "GELU", "CausalAttention"):
        fwd, bwd, total = (float(v) for v in rows[name].split()[-4:-1])
        assert fwd > 0 and bwd > 0 and abs(fwd + bwd - total) <= 0.011   # printed to 0.01 ms
    assert float(rows["the rest: the tape, Python, batches"].split()[-2]) >= 0
    assert not out.exists()                          # nothing written


@pytest.mark.parametrize("stderr_too", [False, True], ids=["stdout", "stdout-and-stderr"])
def test_a_closed_output_pipe_stops_the_run_and_saves(corpus, tmp_path, stderr_too):
    """tinygpt train | head (or 2>&1 | head): once head has exited, the run finishes its step
    and saves, as at a Ctrl-C, and says so on stderr if stderr is still open, without a
    traceback."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out", str(out), "--preset", "tiny",
           "--tokenizer", "char", "--block-size", "16", "--batch-size", "4", "--max-iters", "100000",
           "--eval-interval", "3", "--eval-iters", "1", "--sample-tokens", "0", "--no-progress"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")            # the banner comes through the pipe at once
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env,
                            stderr=subprocess.STDOUT if stderr_too else subprocess.PIPE)
    watchdog = threading.Timer(90, proc.kill)                # a run that never stops fails, not hangs
    watchdog.start()
    try:
        first = proc.stdout.readline()
        proc.stdout.close()                                  # the reader goes away
        stderr = "" if stderr_too else proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()
    assert first.startswith("training "), first
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    if not stderr_too:
        assert "the output was closed: finishing this step and saving" in stderr
        assert "interrupted at step" in stderr and "--resume" in stderr
    state = json.loads((out / "latest" / "state.json").read_text())
    assert 1 <= state["step"] < 100000
    log_steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
                 if '"train"' in line]
    assert log_steps[-1] == state["step"]                   # saved where the run stopped


def test_a_callers_own_output_stream_breaking_leaves_standard_output_alone(corpus, tmp_path):
    def broken(message):
        raise BrokenPipeError
    def where_stdout_goes():                                 # the file behind sys.stdout's descriptor
        try:
            status = os.fstat(sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):
            return None
        return status.st_dev, status.st_ino
    before, file_before = sys.stdout, where_stdout_goes()
    summary = Trainer(small_config(corpus, tmp_path / "run", max_iters=100000), out_stream=broken).run()
    assert sys.stdout is before and where_stdout_goes() == file_before
    assert summary["interrupted"] and 1 <= summary["step"] < 100000
    assert json.loads((tmp_path / "run" / "latest" / "state.json").read_text())["step"] == summary["step"]


def test_output_closing_at_the_last_evaluation_finishes_the_run(corpus, tmp_path):
    lines = []
    def closes_at_the_end(message):
        if message.startswith("step 12:"):                   # the last evaluation's line
            raise BrokenPipeError
        lines.append(message)
    summary = Trainer(small_config(corpus, tmp_path / "run"), out_stream=closes_at_the_end).run()
    assert not summary["interrupted"] and summary["step"] == 12
    assert (tmp_path / "run" / "loss.png").exists()


def test_the_heads_buffer_is_let_go_when_the_run_ends(corpus, tmp_path):
    from autograd.kernels import linear_cross_entropy
    seen = []
    keep = linear_cross_entropy._probs_buffer
    def watch(ctx, shape, dtype):                                  # the buffer the steps use
        seen.append(keep(ctx, shape, dtype))
        return seen[-1]
    linear_cross_entropy._probs_buffer = watch
    try:
        Trainer(small_config(corpus, tmp_path / "run", max_iters=3), out_stream=lambda *_: None).run()
    finally:
        linear_cross_entropy._probs_buffer = keep
    assert seen and seen[1] is seen[0]                             # kept from step to step during the run
    assert linear_cross_entropy._SPARE["probs"] is None           # and not after it


def test_a_run_of_zero_steps_saves_the_untrained_model_it_reports(corpus, tmp_path):
    out = tmp_path / "run"
    result = cli_train(corpus, out, "--max-iters", "0", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "done: 0 steps" in result.stdout and "checkpoint" in result.stdout
    assert json.loads((out / "latest" / "state.json").read_text())["step"] == 0
    assert GPT2.load(out).config.block_size == 16


def test_a_second_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(corpus, tmp_path, monkeypatch):
    lines = []
    def interrupted(self):
        raise KeyboardInterrupt                              # a second Ctrl-C during step 0's evaluation
    monkeypatch.setattr(Trainer, "evaluate", interrupted)
    summary = Trainer(small_config(corpus, tmp_path / "run"), out_stream=lines.append).run()
    assert summary["interrupted"] and summary["step"] == 0
    said = " ".join(lines)
    assert "nothing was saved" in said and "--overwrite" in said and "None" not in said
    assert not (tmp_path / "run" / "latest").exists()


def test_a_folder_with_a_log_but_no_checkpoint_is_answered_with_overwrite_not_resume(corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"kind": "train", "step": 1, "loss": 4.0, "lr": 0.001, "dt": 0.1}\n')
    before = file_hashes(out)
    again = cli_train(corpus, out, "--max-iters", "4", "--no-progress")
    assert again.returncode == 1 and again.stderr.strip().count("\n") == 0, again.stderr
    assert "--overwrite" in again.stderr and "--resume" not in again.stderr
    resumed = cli_train(corpus, out, "--max-iters", "4", "--resume", "--no-progress")
    assert resumed.returncode == 1 and resumed.stderr.strip().count("\n") == 0, resumed.stderr
    assert "stopped before saving one" in resumed.stderr and "--overwrite" in resumed.stderr
    assert file_hashes(out) == before
    fresh = cli_train(corpus, out, "--max-iters", "4", "--eval-interval", "4", "--overwrite", "--no-progress")
    assert fresh.returncode == 0, fresh.stderr


def test_resuming_compares_a_model_flag_with_the_value_the_run_was_built_with(corpus, tmp_path):
    """A run trained without --block-size has the preset's context (tiny: 16) and stores None
    for the flag; on resume, --block-size 16 is that same model, and 8 is refused naming 16."""
    out = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out", str(out),
                            "--preset", "tiny", "--tokenizer", "char", "--batch-size", "4", "--eval-iters", "1",
                            "--sample-tokens", "0", "--max-iters", "4", "--eval-interval", "4", "--no-progress"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert GPT2.load(out).config.block_size == 16
    other = cli_train(corpus, out, "--max-iters", "8", "--resume", "--block-size", "8", "--no-progress")
    assert other.returncode == 1 and "--block-size 8 (the run has 16)" in other.stderr, other.stderr
    same = cli_train(corpus, out, "--max-iters", "8", "--eval-interval", "4", "--resume", "--no-progress")
    assert same.returncode == 0, same.stderr                 # cli_train passes --block-size 16


def test_resuming_on_another_corpus_says_so(corpus, tmp_path):
    out = tmp_path / "run"
    assert cli_train(corpus, out, "--max-iters", "4", "--eval-interval", "4", "--no-progress").returncode == 0
    other = tmp_path / "other.txt"
    other.write_text("\n".join(reversed(CORPUS.splitlines())) + "\n")   # the same characters, in another order
    resumed = cli_train(other, out, "--max-iters", "8", "--eval-interval", "4", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained on {corpus}" in resumed.stdout and f"goes on with {other}" in resumed.stdout
    same = cli_train(os.path.relpath(other, ROOT), out, "--max-iters", "12", "--eval-interval", "4", "--resume",
                     "--no-progress")                        # the same file, named another way
    assert same.returncode == 0 and "note: this run trained on" not in same.stdout, same.stdout


def test_a_warm_up_longer_than_the_run_is_pointed_out(corpus, tmp_path):
    lines = []
    Trainer(small_config(corpus, tmp_path / "run", max_iters=4, warmup_iters=10), out_stream=lines.append).run()
    notes = [line for line in lines if line.startswith("note: --warmup-iters 10")]
    assert len(notes) == 1 and "ends at 0.0012" in notes[0], lines          # 3e-3 * 4 / 10
    lines.clear()
    Trainer(small_config(corpus, tmp_path / "run2", max_iters=4, warmup_iters=4), out_stream=lines.append).run()
    assert not any(line.startswith("note: --warmup") for line in lines)     # it reaches --lr at the last step


def test_samples_are_shown_from_the_first_evaluation_after_training_not_at_step_0(corpus, tmp_path):
    lines = []
    Trainer(small_config(corpus, tmp_path / "run", max_iters=8, sample_tokens=5), out_stream=lines.append).run()
    evals_and_samples = [line.split(":")[0] if line.startswith("step ") else "sample"
                         for line in lines if line.startswith(("step ", "--- sample ---"))]
    assert evals_and_samples == ["step 0", "step 4", "sample", "step 8", "sample"], lines


def test_resuming_a_run_saved_at_step_0_does_not_evaluate_step_0_again(corpus, tmp_path):
    out = tmp_path / "run"
    assert cli_train(corpus, out, "--max-iters", "0", "--no-progress").returncode == 0
    assert cli_train(corpus, out, "--max-iters", "4", "--eval-interval", "4", "--resume", "--no-progress").returncode == 0
    evals = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    assert evals == [0, 4]


def test_the_corpus_path_is_saved_resolved_so_a_resume_from_another_folder_is_the_same_corpus(corpus, tmp_path):
    here = tmp_path / "x"
    (here / "sub").mkdir(parents=True)
    (here / "c.txt").write_text(CORPUS)
    common = ["--preset", "tiny", "--tokenizer", "char", "--block-size", "16", "--batch-size", "4", "--eval-iters", "1",
              "--sample-tokens", "0", "--eval-interval", "4", "--no-progress", "--out", str(tmp_path / "run")]
    def train(cwd, data, *extra):
        return subprocess.run([sys.executable, "-m", "tinygpt", "train", "--data", data, *common, *extra], cwd=cwd,
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert train(here, "c.txt", "--max-iters", "4").returncode == 0
    saved = json.loads((tmp_path / "run" / "latest" / "state.json").read_text())["train_config"]["data"]
    assert saved == str((here / "c.txt").resolve())
    resumed = train(here / "sub", "../c.txt", "--max-iters", "8", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "note: this run trained on" not in resumed.stdout, resumed.stdout


def test_checkpoint_files_get_the_mode_any_new_file_gets(tmp_path):
    """safetensors writes a private file and renames it: model.safetensors was 0600 where
    state.json beside it was 0644 (under the usual umask)."""
    from tinygpt import GPT2, GPTConfig
    model = GPT2(GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4))
    model.save(tmp_path / "ckpt")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert modes["model.safetensors"] == modes["state.json"], modes


@pytest.mark.skipif(not os.path.exists("/dev/stdin"), reason="no /dev/stdin on this system")
def test_a_corpus_piped_in_through_dev_stdin_trains(tmp_path):
    """--data /dev/stdin: the path is kept as given (resolved, it was the pipe's name in
    /proc, which 'does not exist')."""
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", "/dev/stdin", "--out", str(tmp_path / "run"),
           "--preset", "tiny", "--tokenizer", "char", "--block-size", "16", "--batch-size", "4",
           "--eval-iters", "1", "--sample-tokens", "0", "--max-iters", "2", "--no-progress"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, input=CORPUS, timeout=300,
                            env=dict(os.environ, TINYGPT_CACHE=str(tmp_path / "cache")))
    assert result.returncode == 0, result.stderr
    state = json.loads((tmp_path / "run" / "latest" / "state.json").read_text())
    assert state["step"] == 2 and state["train_config"]["data"] == "/dev/stdin"


def test_leftovers_of_an_interrupted_save_do_not_block_resume_or_overwrite(corpus, tmp_path):
    """A save killed midway leaves latest.tmp-<pid>/ with safetensors' own temporary file;
    a file browser leaves .DS_Store in latest/: still the run's, which --resume continues
    and --overwrite replaces."""
    out = tmp_path / "run"
    assert cli_train(corpus, out, "--max-iters", "4", "--eval-interval", "4", "--no-progress").returncode == 0
    (out / "latest.tmp-999").mkdir()
    (out / "latest.tmp-999" / ".tmpGTLp6m").write_bytes(b"half a file")
    (out / "latest" / ".DS_Store").write_bytes(b"")
    (out / "log.jsonl.tmp-998").write_text('{"kind": "tr')          # a resume's rewrite of the log, cut
    resumed = cli_train(corpus, out, "--max-iters", "6", "--eval-interval", "3", "--no-progress", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not any(p.name.startswith("log.jsonl.tmp-") and p.name != "log.jsonl.tmp-998" for p in out.iterdir())
    (out / "log.jsonl").write_text('{"kind": "ev')                  # a log cut in its first line
    again = cli_train(corpus, out, "--max-iters", "2", "--eval-interval", "2", "--no-progress", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert not (out / "latest.tmp-999").exists() and not (out / "log.jsonl.tmp-998").exists()


def test_a_users_best_txt_beside_a_run_is_not_the_runs(corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.txt").write_text("my best lines")
    first = cli_train(corpus, out, "--max-iters", "2", "--eval-interval", "2", "--no-progress")
    assert first.returncode == 0, first.stderr                   # not "a run that saved no checkpoint"
    again = cli_train(corpus, out, "--max-iters", "2", "--eval-interval", "2", "--no-progress", "--overwrite")
    assert again.returncode == 0 and (out / "best.txt").read_text() == "my best lines"


def test_a_corpus_path_through_a_linked_folder_and_dotdot_is_the_one_the_system_opens(corpus, tmp_path):
    """work/corpora -> real/corpora: work/corpora/../story.txt is real/story.txt, as the
    shell opens it, not work/story.txt."""
    (tmp_path / "real" / "corpora").mkdir(parents=True)
    (tmp_path / "real" / "story.txt").write_text(CORPUS)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "corpora").symlink_to(tmp_path / "real" / "corpora")
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", "corpora/../story.txt", "--out", str(tmp_path / "run"),
           "--preset", "tiny", "--tokenizer", "char", "--block-size", "16", "--batch-size", "4", "--eval-iters", "1",
           "--sample-tokens", "0", "--max-iters", "2", "--no-progress"]
    result = subprocess.run(cmd, cwd=tmp_path / "work", capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/stdin"), reason="no /dev/stdin on this system")
def test_resuming_a_piped_corpus_without_out_reads_the_pipe_once(tmp_path):
    def piped(*extra):
        cmd = [sys.executable, "-m", "tinygpt", "train", "--data", "/dev/stdin", "--preset", "tiny",
               "--tokenizer", "char", "--block-size", "16", "--batch-size", "4", "--eval-iters", "1",
               "--sample-tokens", "0", "--no-progress", *extra]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, input=CORPUS, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), TINYGPT_CACHE=str(tmp_path / "cache")))
    assert piped("--max-iters", "2").returncode == 0
    resumed = piped("--max-iters", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "runs" / "stdin" / "latest" / "state.json").read_text())["step"] == 4


def test_saving_a_model_never_deletes_what_the_folder_held(tmp_path, corpus):
    """GPT2.save writes a checkpoint folder whole and swaps it in: a folder holding anything
    else (a user's notes, a run) is refused in one line and left as it was."""
    from tinygpt import GPT2, GPTConfig, TinyGPTError
    model = GPT2(GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4))
    mine = tmp_path / "myproject"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(TinyGPTError, match="notes.txt, which saving a model there would delete"):
        model.save(mine)
    assert (mine / "notes.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    with pytest.raises(TinyGPTError, match="is a file"):
        model.save(mine / "notes.txt")
    # a run: refused whole, and its checkpoints one by one (its training replaces them)
    run(small_config(corpus, tmp_path / "run", max_iters=2, eval_interval=2))
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(TinyGPTError, match="holds a tinygpt run"):
        model.save(tmp_path / "run")
    with pytest.raises(TinyGPTError, match="a checkpoint of the run"):
        model.save(tmp_path / "run" / "best")
    with pytest.raises(TinyGPTError, match="inside the tinygpt checkpoint"):
        model.save(tmp_path / "run" / "latest" / "mine")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    assert not (tmp_path / "run" / "latest" / "mine").exists()
    # new, empty, or saved there before: written
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "new", tmp_path / "empty", tmp_path / "new"):
        model.save(folder)
        assert GPT2.load(folder).config == model.config


@pytest.mark.parametrize("where,needle", [("best", "is named like a checkpoint of the run"),
                                          ("best/sub", "is inside the tinygpt checkpoint"),
                                          ("saved", "holds a saved model")])
def test_training_into_a_checkpoint_folder_is_refused_before_any_work(corpus, tmp_path, where, needle):
    """--out runs/x/best wrote a whole run inside best/, which the run's next save replaced,
    deleting it; a folder GPT2.save wrote is a model, not a run."""
    run(small_config(corpus, tmp_path / "run", max_iters=2, eval_interval=2))
    GPT2.load(tmp_path / "run").save(tmp_path / "run" / "saved")  # beside the run, named like no part of it
    before = file_hashes(tmp_path / "run")
    out = tmp_path / "run" / where
    result = cli_train(corpus, out, "--max-iters", "2", "--no-progress")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and needle in lines[0], result.stderr
    assert file_hashes(tmp_path / "run") == before


@pytest.mark.skipif(sys.platform != "linux", reason="the address-space limit (RLIMIT_AS) is set the Linux way here")
def test_a_model_too_large_for_memory_is_one_line(corpus, tmp_path):
    """--block-size 1000000000: the position table alone is 954 GiB, and NumPy's MemoryError
    came out as a traceback. The process's address space is capped here, so that the
    allocation fails the same way whatever the machine's memory and overcommit setting."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(corpus), "--out", str(tmp_path / "run"),
           "--preset", "tiny", "--tokenizer", "char", "--block-size", "1000000000", "--no-progress"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=cap)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("tinygpt train: error: out of memory (") and "--block-size" in lines[0]
    assert not (tmp_path / "run" / "latest").exists()


def test_a_projects_own_state_json_above_the_run_is_not_a_checkpoint(corpus, tmp_path):
    """Any state.json in a folder above --out made train and save refuse: 'inside the tinygpt
    checkpoint'. A checkpoint has its model.safetensors beside it."""
    (tmp_path / "state.json").write_text('{"mine": true}')
    run(small_config(corpus, tmp_path / "runs" / "x", max_iters=2, eval_interval=2))
    GPT2.load(tmp_path / "runs" / "x").save(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()


def test_a_state_json_that_is_not_utf8_is_named_in_one_line(tmp_path):
    from tinygpt import GPTConfig
    GPT2(GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4)).save(tmp_path / "m")
    (tmp_path / "m" / "state.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(TinyGPTError, match=r"cannot read .*state\.json"):   # was 'this terminal's encoding'
        GPT2.load(tmp_path / "m")


def test_a_run_saved_before_a_rule_is_read_and_fixed_by_a_flag_on_resume(corpus, tmp_path):
    """A run saved with --lr-decay-iters below its warm-up (once accepted, the decay then ended
    with the warm-up) could not be read at all: its saved config failed the new rule."""
    out = tmp_path / "run"
    run(small_config(corpus, out, max_iters=2, eval_interval=2, warmup_iters=2, lr_decay_iters=4))
    for folder in ("latest", "best"):                # as an older version wrote it
        path = out / folder / "state.json"
        state = json.loads(path.read_text())
        state["train_config"]["lr_decay_iters"] = 1
        path.write_text(json.dumps(state))
    assert TrainConfig.from_dict(state["train_config"]).lr_decay_iters == 1
    resumed = dict(out=str(out), resume=True, max_iters=4, progress=False)
    with pytest.raises(TinyGPTError, match="give at least 2"):
        run(TrainConfig(**resumed), explicit={"out", "resume", "max_iters", "progress"})
    summary = run(TrainConfig(**resumed, lr_decay_iters=2), explicit={"out", "resume", "max_iters", "progress",
                                                                         "lr_decay_iters"})
    assert summary["step"] == 4


def test_a_second_train_while_an_overwrite_runs_is_refused_and_takes_nothing(corpus, tmp_path):
    """A second tinygpt train in the folder of an --overwrite not yet at its first checkpoint had
    put the old run back under it (deleting its live log), and the first one's later put-back
    then deleted that old run."""
    out = tmp_path / "run"
    run(small_config(corpus, out, max_iters=4, eval_interval=4))
    _killed_overwrite(out)
    (out / ".replaced-run" / ".owner").write_text(str(os.getppid()))   # a process that runs
    before = file_hashes(out)
    with pytest.raises(TinyGPTError, match=r"another tinygpt train \(process \d+\) is replacing the run"):
        run(small_config(corpus, out, max_iters=4, overwrite=True))
    with pytest.raises(TinyGPTError, match="saved no checkpoint"):
        run(small_config(corpus, out, max_iters=4))
    assert file_hashes(out) == before

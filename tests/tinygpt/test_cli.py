"""Every user mistake gets one clear line on stderr and a non-zero exit, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tinygpt(*args, cwd=None, input=None):
    return subprocess.run([sys.executable, "-m", "tinygpt", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, input=input, env=dict(os.environ), timeout=120)


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_a_missing_checkpoint_says_to_train_first(command, tmp_path):
    result = tinygpt(command, "--checkpoint", str(tmp_path / "nothing"), cwd=tmp_path)
    assert_one_line_error(result, "no checkpoint", f"tinygpt train --out {tmp_path / 'nothing'}")


def test_resuming_a_missing_run_names_the_folder_to_train_into(tmp_path):
    result = tinygpt("train", "--resume", "--out", "runs/none", cwd=tmp_path)
    assert_one_line_error(result, "no checkpoint at runs/none", "tinygpt train --out runs/none")


def test_a_hugging_face_folder_as_a_checkpoint_points_to_pretrained(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert_one_line_error(tinygpt("generate", "--checkpoint", str(tmp_path)), "holds a Hugging Face model",
                          f"--pretrained {tmp_path}", f"--init-from {tmp_path}")


def test_the_default_checkpoint_missing_says_to_train_first(tmp_path):
    assert_one_line_error(tinygpt("chat", cwd=tmp_path), "runs/shakespeare", "tinygpt train")


def test_an_empty_folder_is_not_a_checkpoint(tmp_path):
    assert_one_line_error(tinygpt("generate", "--checkpoint", str(tmp_path)), "no checkpoint in")


@pytest.mark.parametrize("args,needle", [
    (["--max-iters", "ten"], "--max-iters"),
    (["--lr", "fast"], "--lr"),
    (["--tokenizer", "words"], "--tokenizer"),
    (["--device", "tpu"], "--device"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_train_flags(args, needle, tmp_path):
    assert_one_line_error(tinygpt("train", *args, cwd=tmp_path), needle)


def test_an_unknown_flag_is_named_by_its_command(tmp_path):
    assert_one_line_error(tinygpt("train", "--bogus", cwd=tmp_path),
                          "tinygpt train: error: unrecognized arguments: --bogus", "tinygpt train --help")
    assert_one_line_error(tinygpt("--bogus", cwd=tmp_path), "tinygpt: error: unrecognized arguments: --bogus")
    assert_one_line_error(tinygpt("--bogus", "train", cwd=tmp_path), "tinygpt: error: unrecognized arguments: --bogus")


def test_out_dir_is_checked_as_it_will_be_written_a_tilde_the_shell_left_alone_included(tmp_path):
    """export-hf run '~/f' writes ./~/f: a file f in the home folder does not matter."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "f").write_text("mine")
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([sys.executable, "-m", "tinygpt", "export-hf", "no-run", "~/f"], cwd=work,
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, HOME=str(home), PYTHONPATH=str(ROOT)))
    assert_one_line_error(result, "no checkpoint")                # the run is missing; OUT_DIR is fine


@pytest.mark.parametrize("args,needle", [
    (["--preset", "gpt5"], "unknown preset 'gpt5'"),
    (["--data", "/no/such/file.txt"], "does not exist"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    # NaN passed the comparisons: --grad-clip nan turned clipping off, --weight-decay nan made
    # the loss NaN and the run stop advising a lower --lr
    (["--grad-clip", "nan"], "--grad-clip must be a finite number, got nan"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number, got inf"),
    (["--min-lr", "nan"], "--min-lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--min-lr", "0.01", "--lr", "0.001"], "--min-lr 0.01 is above --lr 0.001"),
    (["--lr-decay-iters", "-5"], "--lr-decay-iters -5 ends the decay before the warm-up ends"),
    (["--lr-decay-iters", "20", "--warmup-iters", "30"], "give at least 30"),
])
def test_bad_train_values(args, needle, tmp_path):
    assert_one_line_error(tinygpt("train", *args, cwd=tmp_path), needle)


@pytest.mark.parametrize("args,needle", [
    (["--temperature", "-1"], "--temperature"),
    (["--top-p", "1.5"], "--top-p"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
])
def test_bad_sampling_values(args, needle, tmp_path):
    assert_one_line_error(tinygpt("generate", *args, cwd=tmp_path), needle)


def test_asking_for_cuda_without_cupy_is_one_line(tmp_path):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    assert_one_line_error(tinygpt("train", "--device", "cuda", cwd=tmp_path), "CuPy", '[cuda]" (CUDA 12)')


def test_help_explains_every_command():
    top = tinygpt("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("train", "generate", "chat"))
    train = tinygpt("train", "--help")
    assert train.returncode == 0
    for flag in ("--data", "--preset", "--tokenizer", "--max-iters", "--batch-size", "--block-size", "--lr",
                 "--eval-interval", "--out", "--resume", "--device", "--seed", "--grad-accum", "--warmup-iters"):
        assert flag in train.stdout, flag


def test_every_train_config_field_is_a_flag():
    from dataclasses import fields

    from tinygpt import TrainConfig
    from tinygpt.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in sub._actions}
    assert {f.name for f in fields(TrainConfig)} <= dests


def test_plot_redraws_a_runs_figure_from_its_log(tmp_path):
    import json
    run = tmp_path / "run"
    run.mkdir()
    records = [{"kind": "train", "step": s, "loss": 5.0 - s / 10, "lr": 1e-3} for s in range(1, 11)]
    records += [{"kind": "eval", "step": s, "train_loss": 5.0 - s / 10, "val_loss": 5.2 - s / 10} for s in (0, 10)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = tinygpt("plot", str(run))
    assert result.returncode == 0, result.stderr
    png = (run / "loss.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    height = int.from_bytes(png[20:24], "big")                 # IHDR: width, then height
    # with gradient norms in the log, the figure gains a third panel for them
    with_norms = [dict(r, grad_norm=3.0 / r["step"]) if r["kind"] == "train" else r for r in records]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in with_norms))
    assert tinygpt("plot", str(run)).returncode == 0
    assert int.from_bytes((run / "loss.png").read_bytes()[20:24], "big") > height


def test_plot_without_a_log_is_one_line(tmp_path):
    assert_one_line_error(tinygpt("plot", str(tmp_path)), "no training log")


def test_plot_of_a_file_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert_one_line_error(tinygpt("plot", str(tmp_path / "notes.txt")), "is a file", "run folder")


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_export_hf_to_a_path_that_cannot_be_a_folder_is_one_line(tmp_path, where):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    out = mine if where == "a file" else mine / "hf"
    result = tinygpt("export-hf", str(tmp_path / "no-run"), str(out))
    assert_one_line_error(result, "OUT_DIR", str(mine))
    assert mine.read_text() == "mine"


def test_an_error_of_the_file_system_is_one_line(monkeypatch, capsys, tmp_path):
    """Disk full, permissions and the like: what the system said, and the file, in one line."""
    from tinygpt import cli

    def refuse(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "runs"))
    monkeypatch.setattr(cli, "_cmd_plot", refuse)
    assert cli.main(["plot", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tinygpt plot: error: Permission denied: {tmp_path / 'runs'}"]


@pytest.mark.parametrize("command", ["generate", "chat", "explore"])
def test_checkpoint_and_pretrained_together_are_refused(command, tmp_path):
    # before, --pretrained silently won
    result = tinygpt(command, "--checkpoint", str(tmp_path), "--pretrained", "gpt2", cwd=tmp_path)
    assert_one_line_error(result, "--checkpoint", "--pretrained", "give one of them")


def test_version_is_printed():
    result = tinygpt("--version")
    assert result.returncode == 0 and result.stdout.startswith("tinygpt "), result.stdout


def test_a_file_given_as_checkpoint_names_its_folder(tmp_path):
    from autograd import backend
    from tinygpt import GPT2, GPTConfig
    from tinygpt.checkpoint import save_model
    from tinygpt.tokenizer import CharTokenizer
    backend.seed(0)
    tok = CharTokenizer.from_text("abc\n")
    save_model(GPT2(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=4),
                    tokenizer=tok), tmp_path / "best")
    weights = tmp_path / "best" / "model.safetensors"
    assert weights.exists()
    assert_one_line_error(tinygpt("generate", "--checkpoint", str(weights)), "is a file",
                          f"({tmp_path / 'best'})")
    log = tmp_path / "run" / "log.jsonl"                            # a file in a run folder: the run is named
    (tmp_path / "best").rename(tmp_path / "run")
    (tmp_path / "run" / "best").mkdir()
    for name in ("model.safetensors", "state.json"):
        (tmp_path / "run" / name).rename(tmp_path / "run" / "best" / name)
    log.write_text("")
    assert_one_line_error(tinygpt("generate", "--checkpoint", str(log)), "is a file", f"({tmp_path / 'run'})")
    stray = tmp_path / "elsewhere" / "random.bin"
    stray.parent.mkdir()
    stray.write_bytes(b"\x00" * 10)
    assert_one_line_error(tinygpt("generate", "--checkpoint", str(stray)), "is a file", "tinygpt train")


@pytest.mark.parametrize("command", [["generate", "--seed", "-1"], ["chat", "--seed", "-2"], ["train", "--seed", "-1"]],
                         ids=["generate", "chat", "train"])
def test_a_negative_seed_is_one_line(command, tmp_path):
    """generate and train printed NumPy's ValueError; the chat only at its first reply."""
    result = tinygpt(*command, cwd=tmp_path, input="hi\n")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and "seed" in lines[0] and "0 or more" in lines[0], result.stderr


def test_a_corpus_folder_given_as_a_checkpoint_points_to_training_on_it(tmp_path):
    (tmp_path / "notes.txt").write_text("some text")
    # it had said "train one first with: tinygpt train --out <the corpus folder>"
    assert_one_line_error(tinygpt("chat", "--checkpoint", str(tmp_path)), "holds text",
                          f"tinygpt train --data {tmp_path}")
    nested, hidden = tmp_path / "nested", tmp_path / "hidden"
    (nested / "ch1").mkdir(parents=True)
    (nested / "ch1" / "a.txt").write_text("text in a subfolder")
    hidden.mkdir()
    (hidden / ".n.txt").write_text("hidden: training leaves it out")
    assert_one_line_error(tinygpt("chat", "--checkpoint", str(nested)), "holds text", f"--data {nested}")
    assert_one_line_error(tinygpt("chat", "--checkpoint", str(hidden)), f"tinygpt train --out {hidden}")
    assert_one_line_error(tinygpt("generate", "--checkpoint", "/dev/null"), "no checkpoint in /dev/null")


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_a_model_saved_without_a_tokenizer_is_one_line(command, tmp_path):
    """A model saved from Python with no tokenizer: the chat printed an AttributeError's
    traceback at the first turn; both say what is missing, before any turn."""
    from tinygpt import GPT2, GPTConfig
    GPT2(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4)).save(tmp_path / "m")
    result = tinygpt(command, "--checkpoint", str(tmp_path / "m"), cwd=tmp_path, input="hello\n")
    assert_one_line_error(result, "no tokenizer", "vocabulary of 10")


@pytest.mark.parametrize("state", ['{"format": "tinygpt-checkpoint-1"}', "[1]",
                                   '{"format": "tinygpt-checkpoint-1", "model_config": {"n_layer": "two"}}',
                                   '{"format": "tinygpt-checkpoint-1", "model_config": {}, "tokenizer": 7}'],
                         ids=["no model_config", "a list", "a wrong type", "a wrong tokenizer"])
def test_a_damaged_state_json_is_one_line(state, tmp_path):
    """Valid JSON that is not a checkpoint's state: a KeyError or AttributeError traceback."""
    from tinygpt import GPT2, GPTConfig
    GPT2(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4)).save(tmp_path / "m")
    (tmp_path / "m" / "state.json").write_text(state)
    result = tinygpt("generate", "--checkpoint", str(tmp_path / "m"), cwd=tmp_path)
    assert_one_line_error(result, str(tmp_path / "m"))


def test_several_greedy_samples_say_they_are_the_same(tmp_path):
    from tinygpt import GPT2, GPTConfig
    from tinygpt.tokenizer import CharTokenizer
    tok = CharTokenizer.from_text("abc \n")
    GPT2(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=4), tokenizer=tok).save(
        tmp_path / "m")
    args = ["generate", "--checkpoint", str(tmp_path / "m"), "--prompt", "ab", "--max-new-tokens", "5"]
    greedy = tinygpt(*args, "--num-samples", "2", "--temperature", "0", cwd=tmp_path)
    assert greedy.returncode == 0, greedy.stderr
    assert "the 2 samples will be the same" in greedy.stderr
    texts = greedy.stdout.split("--- sample 2 ---")
    assert len(texts) == 2 and texts[0].split("---\n", 1)[1] == texts[1].removeprefix("\n")   # and they are
    for extra in (["--num-samples", "2"], ["--temperature", "0"]):          # sampled, or one sample: no note
        result = tinygpt(*args, *extra, cwd=tmp_path)
        assert result.returncode == 0 and "same" not in result.stderr, result.stderr


def test_a_prompt_with_bytes_that_are_not_utf8_is_not_a_traceback(tmp_path):
    """--prompt $'caf\\xe9' (Latin-1) arrives as a lone surrogate, which a strict UTF-8 standard
    output (a usual desktop locale) could not print: a UnicodeEncodeError traceback."""
    from tinygpt import GPT2, GPTConfig
    from tinygpt.tokenizer import CharTokenizer
    tok = CharTokenizer.from_text("caf \n")
    GPT2(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=4), tokenizer=tok).save(
        tmp_path / "m")
    result = subprocess.run([sys.executable, "-m", "tinygpt", "generate", "--checkpoint", str(tmp_path / "m"),
                             "--prompt", b"caf\xe9", "--max-new-tokens", "3"], cwd=ROOT, capture_output=True,
                            timeout=120, env=dict(os.environ, PYTHONIOENCODING="utf-8:strict"))
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    # U+FFFD stands for the byte; it is not in this model's alphabet, so it is named in the
    # warning and left out of the echo, as out of what the model reads
    assert result.stdout.startswith(b"caf") and not result.stdout.startswith("caf\ufffd".encode())
    assert "\ufffd".encode() in result.stderr and b"not in the model's alphabet" in result.stderr

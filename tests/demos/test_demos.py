"""Every lesson in demos/ runs in its quick mode and writes its figures.

Each lesson runs as a user runs it (``python demos/NN_name.py``), in a subprocess,
with ``--quick --out tmp_path``; it must exit 0, write each expected PNG (non-empty,
a real PNG), and print the line that says what it showed.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# lesson -> (figures it writes, a line its printout must contain)
LESSONS = {
    "01_autograd_by_hand": (["01_gradient_is_slope.png"], "largest difference: 0.0e+00"),
    "02_gradient_check": (["02_error_vs_step.png", "02_broken_backward_caught.png"],
                          "caught: the gradient check rejected the broken backward"),
    "03_layernorm_backward": (["03_layernorm_paths.png"], "max |three paths - compact formula|"),
    "04_attention_backward": (["04_attention_backward.png"], "dq: max |engine - derivation|"),
    "05_train_tiny_gpt": (["05_training_curves.png"], "backward visits"),
    "06_sampling": (["06_next_token_distribution.png"], "--- top-p 0.9 (temperature 1) ---"),
    "07_attention_maps": (["07_attention_layer0.png", "07_attention_layer1.png", "07_attention_distance.png"],
                          "mean distance"),
    "08_what_the_model_learned": (["08_gradient_norms.png", "08_embedding_pca.png"],
                                  "nearest characters by cosine similarity"),
}


def run_lesson(name, out, *extra):
    env = dict(os.environ)
    env["TINYGPT_CACHE"] = str(out.parent / "token-cache")   # never the user's home
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, str(ROOT / "demos" / f"{name}.py"), "--quick", "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_every_lesson_in_demos_is_tested():
    on_disk = {p.stem for p in (ROOT / "demos").glob("[0-9][0-9]_*.py")}
    assert on_disk == set(LESSONS)


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_runs_in_quick_mode_and_writes_its_figures(name, tmp_path):
    figures, expected_line = LESSONS[name]
    out = tmp_path / name
    result = run_lesson(name, out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert expected_line in result.stdout, result.stdout[-3000:]
    for figure in figures:
        path = out / figure
        assert path.is_file(), f"{name} did not write {figure}; it wrote {sorted(p.name for p in out.iterdir())}"
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, f"{figure} is not a real PNG ({len(data)} bytes)"


def test_a_lesson_given_a_checkpoint_uses_it_instead_of_training(tmp_path):
    trained = tmp_path / "05"
    assert run_lesson("05_train_tiny_gpt", trained, "--steps", "5").returncode == 0
    result = run_lesson("06_sampling", tmp_path / "06", "--checkpoint", str(trained / "model"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loading the model of" in result.stdout and "training a small" not in result.stdout
    assert (tmp_path / "06" / "06_next_token_distribution.png").stat().st_size > 5000


def test_a_lesson_that_trains_runs_again_into_the_same_folder(tmp_path):
    """Its model's folder is its own: a second run trains it afresh (it was refused as a run
    already there, with advice to use flags the lessons do not have)."""
    out = tmp_path / "05"
    assert run_lesson("05_train_tiny_gpt", out, "--steps", "5").returncode == 0
    again = run_lesson("05_train_tiny_gpt", out, "--steps", "5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr


def test_a_lesson_leaves_a_run_it_did_not_train_alone(tmp_path):
    """--out pointing where tinygpt train wrote a run named model: the lesson says so in one
    line and changes nothing."""
    out = tmp_path / "mine"
    assert run_lesson("05_train_tiny_gpt", tmp_path / "05", "--steps", "5").returncode == 0
    import shutil
    shutil.copytree(tmp_path / "05" / "model", out / "model")
    (out / "model" / "trained-by-a-lesson.txt").unlink()       # now a run no lesson made
    before = {p: p.read_bytes() for p in sorted((out / "model").rglob("*")) if p.is_file()}
    result = run_lesson("06_sampling", out)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no lesson trained" in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert {p: p.read_bytes() for p in sorted((out / "model").rglob("*")) if p.is_file()} == before


def test_device_cuda_without_cupy_or_a_gpu_ends_with_one_line(tmp_path):
    from tests.conftest import cuda_available
    if cuda_available():
        pytest.skip("this machine has a CUDA device: the error path cannot be reached")
    result = run_lesson("01_autograd_by_hand", tmp_path / "01", "--device", "cuda")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda is not available here" in lines[0], result.stderr


def _one_line(result, *needles):
    """One line of error (a tokenizer's warning before it may say which characters it skipped)."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("name,flag", [("06_sampling", "--checkpoint"), ("07_attention_maps", "--checkpoint")])
def test_a_checkpoint_that_is_not_there_is_one_line(tmp_path, name, flag):
    _one_line(run_lesson(name, tmp_path / "out", flag, str(tmp_path / "nothing")), "no checkpoint at", "tinygpt train")


@pytest.mark.parametrize("name,flag,value", [("06_sampling", "--prompt", ""), ("07_attention_maps", "--text", ""),
                                             ("07_attention_maps", "--text", "\u65e5\u672c")])
def test_a_text_with_no_token_the_model_knows_is_one_line(tmp_path, name, flag, value):
    _one_line(run_lesson(name, tmp_path / "out", flag, value), flag, "no token this model knows")


@pytest.mark.parametrize("name", ["05_train_tiny_gpt", "08_what_the_model_learned"])
@pytest.mark.parametrize("steps", ["-5", "0"])
def test_steps_below_one_are_refused_by_the_flag(tmp_path, name, steps):
    result = run_lesson(name, tmp_path / "out", "--steps", steps)
    _one_line(result, "--steps", "at least 1")
    assert not (tmp_path / "out" / "model").exists()                # nothing trained, nothing left behind


def test_an_out_that_is_a_file_is_one_line(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    _one_line(run_lesson("01_autograd_by_hand", mine), "--out", "is a file")
    assert mine.read_text() == "mine"


def test_the_attention_lesson_leaves_no_figure_of_a_deeper_model_from_an_earlier_run(tmp_path):
    out = tmp_path / "07"
    out.mkdir()
    (out / "07_attention_layer5.png").write_bytes(PNG_MAGIC)      # as a 6-layer model's run left it
    assert run_lesson("07_attention_maps", out).returncode == 0
    assert not (out / "07_attention_layer5.png").exists() and (out / "07_attention_layer0.png").exists()

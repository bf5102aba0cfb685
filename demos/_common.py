"""What every lesson in demos/ shares: the command line, the device switch, figures
and a small trained model.

Each lesson is a script: ``python demos/01_autograd_by_hand.py [--device cuda]
[--out DIR] [--quick]``. It prints what it teaches and writes its figures (PNG) to
``--out`` (default: ``demos/out/<lesson>/``, which git ignores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# The lessons multiply tiny matrices (64 wide), for which one BLAS thread is as fast as
# several, and, unlike several, does not slow down tenfold when other programs keep the
# cores busy. This must run before NumPy is first imported, which is why every lesson
# imports _common first. An explicit setting in the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

DEMOS = Path(__file__).resolve().parent


def parser(lesson_file: str, description: str) -> argparse.ArgumentParser:
    """The flags every lesson takes; a lesson adds its own before parsing."""
    lesson = Path(lesson_file).stem
    from tinygpt.cli import OneLineParser     # mistakes in one line, as the tinygpt command gives them
    p = OneLineParser(prog=f"python demos/{lesson}.py", description=description)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (NumPy) or cuda (CuPy); default: cpu")
    p.add_argument("--out", default=str(DEMOS / "out" / lesson),
                   help=f"folder for the figures (default: demos/out/{lesson})")
    p.add_argument("--quick", action="store_true",
                   help="a smaller, faster run (what the tests use)")
    return p


def steps_flag(p: argparse.ArgumentParser, quick: int, full: int = 300) -> None:
    """--steps: how long the lesson's model trains, a whole number of at least 1."""
    from tinygpt.cli import positive_int
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"training steps (default: {full}, or {quick} with --quick)")


def run(main) -> None:
    """Run a lesson's ``main``: a mistake the learner can fix (a checkpoint that is not
    there, a folder that cannot be made) ends it with one line, not a traceback."""
    from tinygpt.errors import TinyGPTError
    try:
        main()
    except TinyGPTError as exc:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {exc}")
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        sys.exit(f"{Path(sys.argv[0]).name}: error: {exc.strerror or exc}{where}")


def prompt_ids(model, text: str, flag: str) -> list:
    """The token ids of ``text``; one line instead of a traceback when there are none (an
    empty text, or no character the model's alphabet has)."""
    ids = model.tokenizer.encode(text)
    if not ids:
        raise SystemExit(f"{flag} {text!r} gives no token this model knows: give some text"
                         + (" in its alphabet" if model.tokenizer.kind == "char" else ""))
    return ids


def setup(args) -> Path:
    """Select the array backend and create the output folder; returns the folder.

    A missing CuPy or GPU ends the lesson with one line, not a traceback."""
    from autograd import BackendUnavailable, use_backend
    try:
        use_backend("cupy" if args.device == "cuda" else "numpy")
    except BackendUnavailable as exc:
        sys.exit(f"--device cuda is not available here: {exc}")
    from tinygpt.errors import TinyGPTError, folder_to_write
    try:
        out = folder_to_write(args.out, "--out")
    except TinyGPTError as exc:
        sys.exit(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    return out


def heading(text: str) -> None:
    """A section title in the printed lesson."""
    print()
    print(text)
    print("-" * len(text))


# ----------------------------------------------------------------------------- figures
def figure(nrows=1, ncols=1, size=(8, 5), **kwargs):
    """(fig, axes): a matplotlib Figure drawn by the Agg backend into a file, never a
    window (as tinygpt/plots.py does: no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")   # no overlapping labels
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    if nrows == 1 and ncols == 1:
        return fig, axes[0, 0]
    return fig, axes


def save(fig, out: Path, name: str) -> Path:
    """Write ``fig`` to ``out/name`` and say so."""
    path = Path(out) / name
    fig.savefig(path)                  # the constrained layout already fits every label in
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- a trained model
def tiny_train_config(out: Path, steps: int, device: str, seed: int = 1337):
    """A character-level GPT small enough to learn something in a few seconds on 2 cores:
    2 layers, 4 heads, 64 wide, a context of 64 characters, batches of 16."""
    from tinygpt.config import TrainConfig

    return TrainConfig(out=str(out), tokenizer="char", preset="tiny", n_layer=2, n_head=4, n_embd=64,
                       block_size=64, batch_size=16, max_iters=steps, lr=1e-2, min_lr=1e-3,
                       warmup_iters=min(30, max(1, steps // 5)), beta2=0.99,
                       eval_interval=max(1, steps // (5 if steps >= 100 else 2)), eval_iters=4, sample_tokens=0, progress=False,
                       device=device, seed=seed)


LESSON_MARK = "trained-by-a-lesson.txt"   # in out/model: the run there is a lesson's, which it may replace


def trained_model(args, out: Path, steps: int):
    """A GPT2 to look at: ``--checkpoint DIR`` if given (a run of ``tinygpt train``),
    otherwise one trained here, with tinygpt's own Trainer, into ``out/model``: the
    lesson's own folder (it leaves a LESSON_MARK file there), trained afresh on every run
    of the lesson. A run there that a lesson did not train is left alone: one line asks
    for another --out."""
    from tinygpt import GPT2
    from tinygpt.train import Trainer

    if getattr(args, "checkpoint", None):
        print(f"loading the model of {args.checkpoint}")
        return GPT2.load(args.checkpoint, device=args.device)
    from tinygpt.checkpoint import describe_run
    run = Path(out) / "model"
    mark = run / LESSON_MARK
    if describe_run(run) is not None and not mark.exists():
        raise SystemExit(f"{run} holds a run that no lesson trained (tinygpt train's?); it is left as it is: "
                         "give the lesson another --out")
    run.mkdir(parents=True, exist_ok=True)
    mark.write_text("This model was trained by a lesson in demos/; the next run of a lesson replaces it.\n")
    print(f"training a small character-level GPT for {steps} steps (run folder {run}) ...")
    t0 = time.time()
    cfg = tiny_train_config(run, steps, args.device)
    cfg.overwrite = True          # a lesson's own folder (marked): the next run replaces its model
    summary = Trainer(cfg, out_stream=lambda line: print("  " + line)).run()
    print(f"  done in {time.time() - t0:.0f} s: validation loss {summary['val_loss']:.3f} nats/character")
    return GPT2.load(run, device=args.device)


def token_label(tokenizer, token_id) -> str:
    """A token as a readable tick label: spaces and newlines made visible."""
    text = tokenizer.token_str(int(token_id))
    return text.replace(" ", "\u2423").replace("\n", "\\n") or "?"


def shortened(text: str, width: int = 60) -> str:
    """``text`` quoted for a figure's title, cut to about ``width`` characters ("..." after):
    a long prompt had run off both edges of the figure. By characters, not words, so that a
    text without spaces keeps its start too."""
    shown = repr(text)
    return shown if len(shown) <= width else shown[:width - 4] + " ..."

"""The benchmark scripts keep working (a smoke run each; no timing is asserted)."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import torch_or_skip

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args, env=None, transformers=True):
    torch_or_skip()
    if transformers:
        pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[parity]')")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_bench_train_times_every_framework_in_alternating_rounds_and_reports_ratio_spreads():
    (row,) = run_script("benchmarks/bench_train.py", "--configs", "baby-char", "--steps", "1", "--warmup", "0",
                        "--rounds", "2", "--no-memory")
    assert row["rounds"] == 2
    for fw in ("tinygpt", "torch-eager", "torch-sdpa"):
        rounds = row[fw]["ms_per_round"]
        assert len(rounds) == 2 and min(rounds) > 0 and 0 < row[fw]["mfu"] < 1.5
        # ms per round rounded to 0.01: the median of two is their mean
        assert row[fw]["ms_median"] == pytest.approx(sum(rounds) / 2, abs=0.011)
    for fw in ("torch-eager", "torch-sdpa"):
        # the ratio of each round's pair, then their median: not the ratio of the medians
        ratios = [ours / theirs for ours, theirs in zip(row["tinygpt"]["ms_per_round"], row[fw]["ms_per_round"])]
        slack = 2e-3   # the per-round times were rounded to 0.01 ms, the ratios to 0.001
        assert row[f"time_ratio_vs_{fw}"] == pytest.approx(sum(ratios) / 2, abs=slack)
        assert row[f"time_ratio_range_vs_{fw}"] == pytest.approx([min(ratios), max(ratios)], abs=slack)


def test_the_children_take_turns_and_pytorch_runs_with_its_own_malloc_and_the_thread_flag_reads_both_forms():
    """In a process of its own: importing the scripts sets the thread variables and pins the
    process (threads.py)."""
    check = textwrap.dedent("""
        import os, sys
        sys.argv = ["x", "--threads", "1"]
        sys.path.insert(0, "benchmarks")
        os.environ.pop("TINYGPT_MALLOC", None)
        import bench_generate, bench_revisions, bench_train, threads
        fws = bench_train.FRAMEWORKS
        orders = [bench_train.round_order(r) for r in range(4)]
        assert [o[0] for o in orders[:3]] == list(fws) and orders[3] == orders[0], orders
        assert all(sorted(o) == sorted(fws) for o in orders)
        assert [name for name, _ in bench_revisions.pair_order(0, "b", "n")] == ["base", "new"]
        assert [name for name, _ in bench_revisions.pair_order(1, "b", "n")] == ["new", "base"]
        assert bench_generate.child_order(0) == ("tinygpt", "hf-generate")
        assert bench_generate.child_order(1) == ("hf-generate", "tinygpt")
        for fw in ("torch-eager", "torch-sdpa"):
            assert bench_train.child_env(fw)["TINYGPT_MALLOC"] == "0"
        assert "TINYGPT_MALLOC" not in bench_train.child_env("tinygpt")
        assert threads._threads_from_argv(["--threads=3"]) == 3
        assert threads._threads_from_argv(["--threads", "1", "--threads=2"]) == 2   # the last, as argparse
        assert threads._threads_from_argv(["--threads", "x"]) == (os.cpu_count() or 1)   # argparse says why
        changes = bench_revisions.parse_env("TINYGPT_NUMBA=0 'X_Y=a b' OPENBLAS_CORETYPE=", "--base-env")
        assert changes == {"TINYGPT_NUMBA": "0", "X_Y": "a b", "OPENBLAS_CORETYPE": None}, changes
        env = bench_revisions.side_env(changes, {"OPENBLAS_CORETYPE": "Haswell", "KEEP": "1"})
        assert env == {"TINYGPT_NUMBA": "0", "X_Y": "a b", "KEEP": "1"}, env
        try:
            bench_revisions.parse_env("NUMBA0", "--new-env")
            raise AssertionError("a value-less item was taken")
        except SystemExit as exc:
            assert "--new-env" in str(exc) and "NUMBA0" in str(exc)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_the_hugging_face_copy_of_the_weights_refuses_a_name_left_out():
    torch_or_skip()
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[parity]')")
    check = textwrap.dedent("""
        import sys
        sys.path.insert(0, "benchmarks")
        import common
        from tinygpt import GPTConfig
        cfg = GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16)
        ours = common.tiny_gpt(cfg)
        common.hf_model(cfg, ours, "eager")                       # every name copied
        full = common.to_hf_state_dict
        common.to_hf_state_dict = lambda state: {k: v for k, v in full(state).items() if "ln_f" not in k}
        try:
            common.hf_model(cfg, ours, "eager")
        except RuntimeError as exc:
            assert "ln_f" in str(exc), exc
            print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_bench_train_memory_probe_measures_a_step():
    (row,) = run_script("benchmarks/bench_train.py", "--configs", "baby-char", "--memory-only")
    assert set(row["peak_added_mb"]) == {"tinygpt", "torch-eager", "torch-sdpa"}
    assert all(v > 0 for v in row["peak_added_mb"].values())


def test_bench_generate_produces_the_same_tokens_as_hugging_face_and_measures_the_bandwidth_bound():
    (row,) = run_script("benchmarks/bench_generate.py", "--configs", "small", "--repeats", "1", "--rounds", "1")
    assert row["same_tokens"] is True
    assert row["tinygpt"]["tokens_per_s"] > 0 and row["hf-generate"]["tokens_per_s"] > 0
    assert row["ratio_tokens_per_s"] > 0
    assert row["gemv_bytes"] == 50257 * 256 * 4
    assert row["gemv_gb_per_s"]["median"] > 0 and row["bound_tokens_per_s"]["median"] > 0
    bound = row["gemv_gb_per_s"]["median"] * 1e9 / row["weight_bytes"]
    # both were rounded in the JSON: the bandwidth to 0.01 GB/s, the bound to 0.1 token/s
    slack = 0.005e9 / row["weight_bytes"] + 0.05
    assert row["bound_tokens_per_s"]["median"] == pytest.approx(bound, abs=slack)
    assert row["tinygpt_fraction_of_bound"]["median"] > 0
    assert row["tinygpt_fraction_of_best_call_bound"]["median"] > 0
    # one round: the ratio is that round's tokens/s, tinygpt's over Hugging Face's (rounded to 0.1, 0.001)
    ours, theirs = row["tinygpt"]["tokens_per_s"], row["hf-generate"]["tokens_per_s"]
    slack = ours / theirs * (0.05 / ours + 0.05 / theirs) + 5e-4
    assert row["ratio_tokens_per_s"] == pytest.approx(ours / theirs, abs=slack)
    if sys.platform.startswith("linux"):
        # freed pages go back to the system before the measured generation, so its KV cache and
        # logits are faulted in afresh: more than nothing on both sides
        ours, theirs = row["tinygpt"]["peak_added_bytes"], row["hf-generate"]["peak_added_bytes"]
        assert ours > 0 and theirs > 0
        assert row["peak_added_ratio"]["median"] == pytest.approx(ours / theirs, abs=1e-3)   # one round; 3 decimals


def test_bench_recipe_trains_both_to_a_finite_best_val_loss_and_writes_their_checkpoints(tmp_path):
    env = dict(os.environ, TINYGPT_CACHE=str(tmp_path / "cache"))
    (report,) = run_script("benchmarks/bench_recipe.py", "--max-iters", "4", "--eval-interval", "2", "--pairs", "1",
                           "--out-dir", str(tmp_path / "runs"), env=env, transformers=False)
    assert report["max_iters"] == 4 and report["threads"] == 2 and report["pairs"] == 1
    for fw in ("tinygpt", "torch"):
        (run,) = report[fw]["runs"]
        assert math.isfinite(run["best_val_loss"]) and 0 < run["best_val_loss"] < 10
        assert run["wall_s"] > 0
        assert 30 < run["peak_mb"] < 8192   # a Python process with NumPy loaded holds more than 30 MB
    ours, theirs = report["tinygpt"]["runs"][0]["wall_s"], report["torch"]["runs"][0]["wall_s"]
    assert report["time_ratio"] == pytest.approx(ours / theirs, abs=1e-3)   # one pair; 3 decimals
    ours, theirs = report["tinygpt"]["runs"][0]["peak_mb"], report["torch"]["runs"][0]["peak_mb"]
    assert report["peak_memory_ratio"] == pytest.approx(ours / theirs, abs=2e-3)   # from values rounded to 0.1 MB
    assert (tmp_path / "runs" / "pair1-tinygpt" / "run" / "latest" / "state.json").exists()
    assert (tmp_path / "runs" / "pair1-torch" / "run" / "latest.pt").exists()
    # an untimed warm-up of each first; the timed tinygpt run tokenized the corpus itself,
    # into its own empty cache (the PyTorch trainer tokenizes at every run)
    assert (tmp_path / "runs" / "warm-up-tinygpt" / "run" / "latest" / "state.json").exists()
    assert (tmp_path / "runs" / "warm-up-torch" / "run" / "latest.pt").exists()
    assert any((tmp_path / "runs" / "pair1-tinygpt" / "token-cache" / "tokens").iterdir())
    assert not (tmp_path / "cache").exists()   # the shared cache was not used


def test_torch_trainer_draws_tinygpts_batches_and_follows_its_schedule_and_shape(tmp_path):
    """The recipe comparison rests on these: the same windows in the same order, the same
    learning rate at every step, the same architecture (tinygpt's weights give tinygpt's
    loss in the torch model), tinygpt's baby preset in bench_recipe.py."""
    torch_or_skip()
    check = textwrap.dedent("""
        import sys
        sys.path.insert(0, "benchmarks")
        import numpy as np
        import bench_recipe, torch_trainer
        from autograd import optim
        from tinygpt.config import PRESETS
        from tinygpt.data import TokenData, load_corpus, stream_seed
        from tinygpt.tokenizer import CharTokenizer

        text, _ = load_corpus(None)
        ours = TokenData(text, CharTokenizer.from_text(text), 64, seed=stream_seed(1337 + 1))
        theirs = torch_trainer.CharData(open(torch_trainer.BUNDLED, encoding="utf-8").read(), 64, seed=1337 + 1)
        assert theirs.chars == CharTokenizer.from_text(text).chars
        for split in ("train", "val", "train"):
            x, y = ours.get_batch(split, 12)
            tx, ty = theirs.get_batch(split, 12)
            assert np.array_equal(x, tx.numpy()) and np.array_equal(y, ty.numpy()), split
        schedule = optim.WarmupCosine(1e-3, 1e-4, 100, 2000)
        for step in (0, 50, 99, 100, 101, 1000, 1999, 2000, 2001):
            assert abs(schedule(step) - torch_trainer.learning_rate(step, 1e-3, 1e-4, 100, 2000)) < 1e-15, step
        # the same architecture: with tinygpt's weights the torch model gives tinygpt's logits
        # (2-D weights scaled up, so that the GELU's form and the causal mask show clearly:
        # erf's GELU would be off by about 3e-3, attention to the future by about 8)
        import torch
        from autograd import backend
        from tinygpt import GPT2
        from tinygpt.config import preset
        backend.seed(0)
        model = GPT2(preset("baby", vocab_size=len(theirs.chars), block_size=64))
        for p in model.parameters():
            if p.ndim == 2:
                p.data *= 10.0
        net = torch_trainer.GPT(len(theirs.chars), 64, 4, 4, 128, 0.0)
        weights = {name.removeprefix("transformer."): torch.from_numpy(np.array(p.data))
                   for name, p in model.named_parameters()}
        net.load_state_dict(weights)   # strict: every name and shape matches
        ids = np.random.default_rng(0).integers(0, len(theirs.chars), (2, 64))
        logits = np.array(model(ids)[0].data)                          # (B, T, V)
        with torch.no_grad():
            tlogits = net(torch.from_numpy(ids))[0].numpy()
        assert np.abs(logits - tlogits).max() < 3e-4, np.abs(logits - tlogits).max()
        baby = PRESETS["baby"]
        assert bench_recipe.BABY == {"n_layer": baby.n_layer, "n_head": baby.n_head, "n_embd": baby.n_embd}
        # bench_recipe passes only the recipe's flags: the rest come from each trainer's
        # defaults, which must be the same
        from tinygpt.config import TrainConfig
        theirs = torch_trainer.build_parser().parse_args([])
        ours = TrainConfig()
        for name in ("batch_size", "max_iters", "lr", "min_lr", "warmup_iters", "weight_decay", "beta1", "beta2",
                     "grad_clip", "eval_interval", "eval_iters", "sample_tokens", "seed", "dropout"):
            mine = getattr(ours, name) if hasattr(ours, name) else getattr(baby, name)
            assert getattr(theirs, name) == mine, (name, getattr(theirs, name), mine)
        print("ok")
    """)
    env = dict(os.environ, TINYGPT_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def _git_head_or_skip():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout: bench_revisions.py compares revisions of one")


def test_bench_revisions_times_each_tree_in_its_own_process_and_reports_the_speedup():
    _git_head_or_skip()
    result = subprocess.run([sys.executable, "benchmarks/bench_revisions.py", "--base", "HEAD", "--shape", "char",
                             "--pairs", "2", "--steps", "1", "--warmup", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["pairs"] == 2 and len(report["speedup_per_pair"]) == 2
    for key in ("base_ms", "new_ms", "speedup"):
        assert 0 < report[key]["min"] <= report[key]["median"] <= report[key]["max"]
    assert "pair 2/2" in result.stdout


def test_bench_revisions_compares_one_tree_under_two_settings():
    _git_head_or_skip()
    result = subprocess.run([sys.executable, "benchmarks/bench_revisions.py", "--base", "HEAD", "--new", "HEAD",
                             "--base-env", "TINYGPT_NUMBA=0", "--shape", "char", "--pairs", "1", "--steps", "1",
                             "--warmup", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["base_env"] == "TINYGPT_NUMBA=0" and report["new_env"] == ""
    assert "HEAD [TINYGPT_NUMBA=0] against HEAD" in result.stdout
    bad = subprocess.run([sys.executable, "benchmarks/bench_revisions.py", "--base", "HEAD", "--new-env", "oops"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--new-env" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_gemm_times_the_product_with_the_environments_kernels_and_openblas_own():
    result = subprocess.run([sys.executable, "benchmarks/bench_gemm.py", "--size", "64,32,48", "--pairs", "2",
                             "--seconds", "0.05"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["shape"] == [64, 32, 48] and report["pairs"] == 2
    for side in ("environment", "own choice"):
        assert report[side]["gflops"]["median"] > 0 and report[side]["kernels"]
    assert "pair 2/2" in result.stdout
    bad = subprocess.run([sys.executable, "benchmarks/bench_gemm.py", "--size", "64,32"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--size" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_revisions_names_a_revision_git_does_not_know():
    _git_head_or_skip()
    result = subprocess.run([sys.executable, "benchmarks/bench_revisions.py", "--base", "no-such-revision-x"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no-such-revision-x" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_revisions_whole_runs_time_the_tinygpt_command_of_each_tree():
    _git_head_or_skip()
    result = subprocess.run([sys.executable, "benchmarks/bench_revisions.py", "--base", "HEAD", "--whole-run",
                             "--pairs", "1", "--train-args", "--max-iters 3 --eval-iters 1 --eval-interval 2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["mode"] == "whole-run" and report["pairs"] == 1
    assert len(report["speedup_by_run_s_per_pair"]) == 1
    for tree in ("base", "new"):
        assert 0 < report["step_ms"][tree]["median"] and report["run_s"][tree]["median"] < report["wall_s"][tree]["median"]
        # two evaluations of one batch each, a sample and a checkpoint: some time, less than the run
        assert 0 < report["outside_s"][tree]["median"] < report["run_s"][tree]["median"]
        assert report["val_loss"][tree]["median"] > 0
    assert "base 3 steps in" in result.stdout

"""Data-parallel training (tinygpt/dist.py and the trainer under mpiexec).

Without MPI (one process) the world is a no-op of size 1 and mpi4py is never imported.
With MPI (the ``mpi`` extra: mpi4py and MPICH's mpiexec), 2-rank jobs are launched as
subprocesses with timeouts: weights identical on every rank after every step, 2 ranks
at batch B equal to one process at batch 2B (float64), a failing rank ending the whole
job, and resuming on the same or a different number of ranks.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from autograd import Tensor, backend, optim
from tinygpt import GPT2, TinyGPTError, TrainConfig, dist, preset
from tinygpt.checkpoint import read_arrays
from tinygpt.data import TokenData, load_corpus, stream_seed
from tinygpt.tokenizer import make_tokenizer
from tinygpt.train import Trainer

from .test_train import CORPUS, small_config

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "mpi_worker.py"
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_RANK")


def find_mpiexec():
    """The mpiexec installed next to this Python (pip install "tinygpt[mpi]"), else PATH's."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_or_skip():
    if importlib.util.find_spec("mpi4py") is None or find_mpiexec() is None:
        pytest.skip("MPI is not installed (mpi4py and mpiexec): pip install -e '.[mpi]'")
    return find_mpiexec()


def clean_env(**extra):
    """The environment for a job: no launcher variables of our own, one BLAS thread per rank."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def mpirun(n, *args, timeout=60):
    """Run ``mpiexec -n n python ARGS``; returns (CompletedProcess, seconds)."""
    cmd = [mpi_or_skip(), "-n", str(n), sys.executable, *map(str, args)]
    t0 = time.time()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=clean_env())
    return result, time.time() - t0


def worker(n, mode, cfg, timeout=60):
    result, seconds = mpirun(n, WORKER, mode, json.dumps(cfg.to_dict()), timeout=timeout)
    return result, seconds


def last_json(stdout):
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "citizens.txt"
    path.write_text(CORPUS)
    return path


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------- one process, no MPI
def test_one_process_is_a_world_of_one_and_never_imports_mpi4py(corpus, tmp_path):
    code = ("import sys\nfrom tinygpt import dist\nfrom tinygpt.train import train\n"
            f"train(data={str(corpus)!r}, out={str(tmp_path / 'run')!r}, preset='tiny', tokenizer='char', "
            "block_size=16, batch_size=2, max_iters=2, eval_interval=2, eval_iters=1, sample_tokens=0, "
            "progress=False)\n"
            "w = dist.init()\nprint(type(w).__name__, w.rank, w.size, 'mpi4py' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-4:] == ["LocalWorld", "0", "1", "False"]


def test_the_local_world_leaves_gradients_and_loss_as_they_are(no_launcher):
    world = dist.init()
    assert isinstance(world, dist.LocalWorld) and world.is_main
    p = Tensor(np.arange(3.0), requires_grad=True)
    p.grad = np.array([1.0, 2.0, 3.0])
    assert world.average_gradients([p], 2.5, False) == (2.5, False)
    assert p.grad.tolist() == [1.0, 2.0, 3.0]
    assert world.gather_objects("x") == ["x"] and world.broadcast_object(7) == 7
    with world.abort_on_error():
        pass
    with pytest.raises(ValueError):   # one process: exceptions go on up, unchanged
        with world.abort_on_error():
            raise ValueError("not swallowed")


def test_a_launcher_without_mpi4py_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py now fails
    with pytest.raises(TinyGPTError, match=r"mpiexec started 2 processes, but mpi4py cannot be imported.*"
                                           r"pip install .*\[mpi\]\""):
        dist.init(environ={"PMI_SIZE": "2", "PMI_RANK": "0"})


def test_launcher_variables_of_mpich_open_mpi_and_pmix_are_read():
    assert dist.launcher_size({}) is None
    assert dist.launcher_size({"PMI_SIZE": "4"}) == 4
    assert dist.launcher_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert dist.launcher_size({"PMIX_RANK": "0"}) == 0
    assert isinstance(dist.init(environ={"PMI_SIZE": "1"}), dist.LocalWorld)   # mpiexec -n 1


def test_batch_streams_rank_0_keeps_the_old_seed_and_other_ranks_differ():
    old = np.random.default_rng(42).integers(0, 10**9, 4)
    assert np.array_equal(np.random.default_rng(stream_seed(42, 0)).integers(0, 10**9, 4), old)
    rank1 = np.random.default_rng(stream_seed(42, 1)).integers(0, 10**9, 4)
    resumed = np.random.default_rng(stream_seed(42, 1, step=8)).integers(0, 10**9, 4)
    assert not np.array_equal(rank1, old) and not np.array_equal(resumed, rank1)


# ----------------------------------------------------------------------------- buckets and transports
def test_buckets_pack_parameters_in_order_by_size_and_dtype():
    slots = [((10, 10), "float32"), ((50,), "float32"), ((300,), "float32"), ((4,), "float64"), ((5,), "float32")]
    buckets = dist.Buckets(slots, bucket_bytes=800)
    # 400 B + 200 B fit in 800; 1200 B alone; the float64 slot apart; then the last float32
    assert [b.size for b in buckets.buffers] == [150, 300, 4, 5]
    arrays = [np.random.default_rng(i).standard_normal(shape).astype(dtype) for i, (shape, dtype) in enumerate(slots)]
    buckets.pack(arrays[:2] + [None] + arrays[3:])
    for i, array in enumerate(arrays):
        expected = np.zeros(array.shape) if i == 2 else array
        assert buckets.view(i).shape == array.shape and np.array_equal(buckets.view(i), expected)
    out = [np.empty_like(a) for a in arrays]
    buckets.unpack_into(out)
    assert np.array_equal(out[0], arrays[0]) and np.array_equal(out[4], arrays[4])


class FakeComm:
    """Two ranks as seen from rank 0, rank 1 holding rank 0's buffer plus one: a sum makes
    every element 2 b + 1, so that an average differs from either rank's own value."""

    def __init__(self, kinds="mpi,system"):
        self.calls, self.kinds = [], kinds

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def Split_type(self, kind):
        return self

    def Allreduce(self, inplace, buffer, op=None):
        self.calls.append(buffer.size)
        buffer *= 2
        buffer += 1                                    # + rank 1's (b + 1)

    def bcast(self, obj, root=0):
        return obj

    def Get_info(self):
        kinds = self.kinds

        class Info:
            def Get(self, key):
                return kinds if key == "mpi_memory_alloc_kinds" else None
        return Info()


class FakeMPI:
    IN_PLACE, SUM, COMM_TYPE_SHARED = object(), object(), object()


def test_gradients_are_averaged_with_one_allreduce_per_bucket_not_per_parameter():
    comm = FakeComm()
    world = dist.MPIWorld(comm, FakeMPI, bucket_mb=0.001)           # ~1 KB buckets
    params = [Tensor(np.zeros(shape), dtype="float32", requires_grad=True)
              for shape in [(16, 16), (16,), (16, 16), (16,), (64,), (8,)]]
    grads = [np.random.default_rng(i).standard_normal(p.shape).astype(np.float32) for i, p in enumerate(params)]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    loss, stop = world.average_gradients(params, 3.0, False)
    assert (loss, stop) == (3.5, True)                 # (3 + 4) / 2; rank 1 asked to stop (its flag 0 + 1)
    for p, g in zip(params, grads):
        # (g + (g + 1)) / 2, each in float32 as the buckets hold it
        np.testing.assert_array_equal(p.grad, (np.float32(2) * g + np.float32(1)) * np.float32(0.5))
    buckets = len(world._grad_buckets[1])
    assert 1 < buckets < len(params) and world.allreduce_calls == buckets
    assert len(comm.calls) == buckets + 1              # the buckets, then loss and stop flag together


def test_the_nccl_transport_all_reduces_device_pointers_on_the_current_stream():
    """The NCCL wiring with stand-ins for cupy.cuda.nccl and CuPy (no GPU here)."""
    log = []

    class Communicator:
        def __init__(self, size, uid, rank):
            log.append(("init", size, uid, rank))

        def allReduce(self, send, recv, count, dtype, op, stream):
            log.append(("allReduce", send, recv, count, dtype, op, stream))

        def broadcast(self, send, recv, count, dtype, root, stream):
            log.append(("broadcast", send, recv, count, dtype, root, stream))

    class Nccl:
        NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 6, 7, 8, 0
        NcclCommunicator = Communicator

        @staticmethod
        def get_unique_id():
            return (1, 2, 3)

    class Stream:
        ptr = 99

        def synchronize(self):
            log.append(("synchronize",))

    class Cuda:
        @staticmethod
        def get_current_stream():
            return Stream()

    class Xp:
        cuda = Cuda

    class DeviceBuffer:
        size, dtype = 1000, np.dtype("float32")

        class data:
            ptr = 12345

    transport = dist.NcclTransport(FakeComm(), Nccl, Xp)
    transport.start()
    transport.allreduce_sum_(DeviceBuffer())
    transport.broadcast_(DeviceBuffer(), root=0)
    transport.finish()
    assert log == [("init", 2, (1, 2, 3), 0), ("allReduce", 12345, 12345, 1000, 7, 0, 99),
                   ("broadcast", 12345, 12345, 1000, 7, 0, 99), ("synchronize",)]


def test_cuda_aware_mpi_is_recognised_from_the_memory_kinds_it_lists():
    assert dist._mpi_reads_device_memory(FakeComm("mpi,system,cuda:device")) is True
    assert dist._mpi_reads_device_memory(FakeComm("mpi,system")) is False


# ----------------------------------------------------------------------------- two ranks (mpiexec)
def test_two_ranks_hold_identical_weights_after_every_step(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "run", max_iters=5, eval_interval=5, eval_iters=1, bucket_mb=0.01)
    result, _ = worker(2, "steps", cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    report = last_json(result.stdout)
    assert report["world_size"] == 2 and report["step"] == 5
    assert report["identical_after_each_step"] == [True] * 5
    # bucketed: a few Allreduce calls per step, far fewer than the 26 parameters
    assert 1 < report["buckets"] < report["parameters"] / 4
    assert report["allreduce_calls_per_step"] == [report["buckets"]] * 5
    # rank 0 alone wrote the run folder: no file of another rank anywhere
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["best", "latest", "log.jsonl", "loss.png"]


@pytest.mark.gpu
def test_two_ranks_on_two_gpus_all_reduce_with_nccl_and_stay_identical(corpus, tmp_path):
    backend.use_backend("cupy")
    try:
        gpus = backend.xp().cuda.runtime.getDeviceCount()
    finally:
        backend.use_backend("numpy")
    if gpus < 2:
        pytest.skip(f"needs 2 CUDA devices, found {gpus}")
    cfg = small_config(corpus, tmp_path / "run", max_iters=5, eval_interval=5, eval_iters=1, bucket_mb=0.01,
                       device="cuda")
    result, _ = worker(2, "steps", cfg, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = last_json(result.stdout)
    assert report["transport"] == "NCCL"
    assert report["identical_after_each_step"] == [True] * 5


def reference_steps(cfg, ranks, steps):
    """One process, batch ranks * B: each step's batch is rank 0's B windows then rank 1's,
    exactly as the ranks draw them; the loop written out with the public API."""
    text, _ = load_corpus(cfg.data)
    tokenizer = make_tokenizer(cfg.tokenizer, text)
    mcfg = preset(cfg.preset, vocab_size=tokenizer.vocab_size, block_size=cfg.block_size, dropout=0.0)
    backend.seed(cfg.seed)
    model = GPT2(mcfg, tokenizer=tokenizer).to(cfg.dtype)
    streams = [TokenData(text, tokenizer, mcfg.block_size, seed=stream_seed(cfg.seed + 1, r)) for r in range(ranks)]
    opt = optim.AdamW(optim.decay_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2))
    schedule = optim.WarmupCosine(cfg.lr, cfg.lr / 10, cfg.warmup_iters, cfg.max_iters)
    losses = []
    for step in range(steps):
        opt.set_lr(schedule(step))
        batches = [s.get_batch("train", cfg.batch_size) for s in streams]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        _, loss = model(x, y)
        loss.backward()
        losses.append(float(loss.data))
        optim.clip_grad_norm(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
    return model, losses


def test_two_ranks_at_batch_b_take_the_steps_of_one_process_at_batch_2b_in_float64(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "run", max_iters=5, eval_interval=5, eval_iters=1, batch_size=3,
                       dtype="float64", grad_clip=0.05)
    result, _ = worker(2, "steps", cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    model, ref_losses = reference_steps(cfg, ranks=2, steps=5)
    got = read_arrays(tmp_path / "run" / "latest" / "model.safetensors")
    worst = 0.0
    for name, p in model.named_parameters():
        assert got[name].dtype == np.float64
        ref = p.data
        worst = max(worst, float(np.max(np.abs(got[name] - ref)) / np.max(np.abs(ref))))
    print(f"max relative difference, 2 ranks vs 1 process: {worst:.2e}")
    assert worst < 1e-10
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    np.testing.assert_allclose([r["loss"] for r in train], ref_losses, rtol=1e-12)
    assert all(r["grad_norm"] > cfg.grad_clip for r in train)   # clipping was active on every step


def test_a_rank_that_raises_ends_the_whole_job_promptly_with_its_error(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "run", max_iters=1000, eval_interval=1000, eval_iters=1)
    result, seconds = worker(2, "raise", cfg, timeout=60)
    assert result.returncode != 0
    assert "tinygpt train (rank 1 of 2): RuntimeError: deliberate failure on rank 1" in result.stderr
    assert seconds < 30, f"the job took {seconds:.1f} s to end"
    print(f"the job ended {seconds:.1f} s after launch (rank 0 was waiting in an all-reduce)")


def cli_train(n, corpus, out, *extra):
    args = ["-m", "tinygpt", "train", "--data", corpus, "--out", out, "--preset", "tiny", "--tokenizer", "char",
            "--block-size", "16", "--batch-size", "4", "--eval-iters", "1", "--sample-tokens", "0",
            "--no-progress", "--warmup-iters", "2", "--lr-decay-iters", "16", "--seed", "5", *extra]
    result, _ = mpirun(n, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_resume_on_the_same_number_of_ranks_continues_exactly(corpus, tmp_path):
    straight = cli_train(2, corpus, tmp_path / "straight", "--max-iters", "8", "--eval-interval", "4",
                         "--dropout", "0.1")
    assert straight.stdout.count("done: 8 steps") == 1        # printed by rank 0 alone
    cli_train(2, corpus, tmp_path / "split", "--max-iters", "4", "--eval-interval", "4", "--dropout", "0.1")
    cli_train(2, corpus, tmp_path / "split", "--max-iters", "8", "--resume")
    a = read_arrays(tmp_path / "straight" / "latest" / "model.safetensors")
    b = read_arrays(tmp_path / "split" / "latest" / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_on_a_different_number_of_ranks_keeps_weights_and_moments(corpus, tmp_path, no_launcher):
    # two ranks save at step 4; one process (this one) reads rank 0's checkpoint alone
    cli_train(2, corpus, tmp_path / "two", "--max-iters", "4", "--eval-interval", "4")
    weights = read_arrays(tmp_path / "two" / "latest" / "model.safetensors")
    moments = read_arrays(tmp_path / "two" / "latest" / "optimizer.safetensors")
    messages = []
    resumed = TrainConfig(out=str(tmp_path / "two"), resume=True, max_iters=6, progress=False)
    explicit = {"out", "resume", "max_iters", "progress"}
    trainer = Trainer(resumed, explicit=explicit, out_stream=messages.append)
    trainer._setup()
    for name, p in trainer.model.named_parameters():
        assert np.array_equal(p.data, weights[name])
        state = trainer.optimizer.state[id(p)]
        assert state["step"] == 4 and np.array_equal(state["exp_avg_sq"], moments[f"exp_avg_sq/{name}"])
    assert any("saved by 2 process(es) and continues on 1" in m for m in messages)
    # --batch-size 4 per process: 2 x 4 sequences a step before, 1 x 4 now
    assert any("a step now takes 4 sequences, where it took 8" in m for m in messages)
    summary = Trainer(resumed, explicit=explicit, out_stream=lambda *_: None).run()
    assert summary["step"] == 6 and summary["world_size"] == 1
    # one process saves at step 4; two ranks go on to step 6 from it
    run_one = small_config(corpus, tmp_path / "one", max_iters=4, eval_interval=4, eval_iters=1, lr_decay_iters=16)
    Trainer(run_one, out_stream=lambda *_: None).run()
    cli_train(2, corpus, tmp_path / "one", "--max-iters", "6", "--resume")
    state = json.loads((tmp_path / "one" / "latest" / "state.json").read_text())
    assert state["step"] == 6 and state["world_size"] == 2 and len(state["ranks"]) == 2


def test_a_piped_corpus_under_several_ranks_is_refused_in_one_line_not_a_hang(tmp_path):
    """Every rank reads --data; a pipe reaches rank 0 alone (mpiexec gives the others a
    stdin that never ends), so /dev/stdin had every other rank wait for ever."""
    from tests.tinygpt.test_train import CORPUS
    cmd = [mpi_or_skip(), "-n", "2", sys.executable, "-m", "tinygpt", "train", "--data", "/dev/stdin",
           "--out", str(tmp_path / "run"), "--preset", "tiny", "--tokenizer", "char", "--max-iters", "2",
           "--no-progress"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env(), input=CORPUS)
    assert result.returncode != 0
    assert "--data /dev/stdin is not a file: with several processes" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr

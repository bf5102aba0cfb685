"""Run under ``mpiexec -n N python tests/tinygpt/mpi_worker.py MODE CONFIG_JSON`` by
test_dist.py: the trainer of ``tinygpt train`` with a spy, one JSON line from rank 0.

Modes:
    steps   train; after every optimizer step, compare a digest of the weights across
            the ranks; report whether they matched, and the all-reduce calls per step
    raise   train, but rank 1 raises at its third batch (the job must end promptly)
"""
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mpi4py import MPI  # noqa: E402

from autograd import backend, optim  # noqa: E402
from tinygpt import TrainConfig  # noqa: E402
from tinygpt.data import TokenData  # noqa: E402
from tinygpt.train import Trainer  # noqa: E402

comm = MPI.COMM_WORLD


def digest(params):
    h = hashlib.sha256()
    for p in params:
        h.update(backend.to_numpy(p.data).tobytes())
    return h.hexdigest()


def steps(cfg):
    trainer = Trainer(cfg, out_stream=lambda *_: None)
    identical, calls = [], []
    original = optim.AdamW.step

    def step_and_compare(self):
        original(self)
        params = [p for group in self.param_groups for p in group["params"]]
        everyone = comm.allgather(digest(params))
        identical.append(len(set(everyone)) == 1)
        calls.append(trainer.world.allreduce_calls)
    optim.AdamW.step = step_and_compare
    summary = trainer.run()
    if comm.Get_rank() == 0:
        per_step = [b - a for a, b in zip([0] + calls[:-1], calls)]
        print(json.dumps({"identical_after_each_step": identical, "allreduce_calls_per_step": per_step,
                          "buckets": len(trainer.world._grad_buckets[1]),
                          "parameters": len(trainer.model.parameters()),
                          "world_size": summary["world_size"], "step": summary["step"],
                          "transport": trainer.world.transport_name}), flush=True)


def raise_on_rank_1(cfg):
    original = TokenData.get_batch
    count = {"n": 0}

    def failing(self, split, batch_size, rng=None):
        if rng is None and comm.Get_rank() == 1:
            count["n"] += 1
            if count["n"] == 3:
                raise RuntimeError("deliberate failure on rank 1")
        return original(self, split, batch_size, rng=rng)
    TokenData.get_batch = failing
    Trainer(cfg, out_stream=lambda *_: None).run()
    time.sleep(60)   # never reached on rank 1; rank 0 waits in the all-reduce until the abort


if __name__ == "__main__":
    mode, config = sys.argv[1], TrainConfig(**json.loads(sys.argv[2]))
    {"steps": steps, "raise": raise_on_rank_1}[mode](config)

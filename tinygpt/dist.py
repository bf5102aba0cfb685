"""Data parallelism over MPI: several processes ("ranks") train one model together.

    mpiexec -n 4 tinygpt train ...        four ranks on this machine
    tinygpt train ...                     one process: everything here is a no-op

Every rank holds the whole model and the whole optimizer. One optimizer step:

    rank r:     x_r, y_r = its own batch (B, T)        drawn from a stream seeded by (seed, r)
                loss_r = mean cross-entropy over x_r
                g_r = d loss_r / d w                      its own backward
    all ranks:  g = (g_0 + g_1 + ... + g_{N-1}) / N      Allreduce, a few flat buckets
    rank r:     clip(g); AdamW(w, g)                      the same update on every rank

Why the average is the right gradient: one process with a batch of N*B sequences
minimises L = 1/(N*B*T) * sum over all N*B*T positions of the cross-entropy. Split
those positions by rank: L = 1/N * sum_r [1/(B*T) * sum over rank r's positions] =
1/N * sum_r loss_r, because every rank has the same B and T. The gradient is linear, so
dL/dw = 1/N * sum_r g_r. N ranks at batch B therefore take the same steps as one process
at batch N*B (up to the order of floating-point sums), and clipping and AdamW, which
see only the averaged g, stay identical on every rank: the weights never drift apart.

Rank 0's initial weights are broadcast to the others, so they start identical too.

Buckets: the gradients are copied into a few contiguous buffers of about
``bucket_mb`` megabytes each (parameters in order; one larger than that gets a buffer
to itself), each buffer is summed in place across ranks (one Allreduce per buffer, not
one per parameter: per-call latency dominates small messages), divided by N, and each
parameter's ``.grad`` becomes a view into its buffer.

Transports, chosen once per run:
    CPU                 mpi4py ``Allreduce(IN_PLACE)`` on the NumPy buffers
    CUDA with NCCL      ``cupy.cuda.nccl``: a communicator made from a unique id that rank
                        0 creates and MPI broadcasts; ``allReduce`` on device buffers,
                        queued on the current stream, which is synchronised at the end
    CUDA-aware MPI      mpi4py on the CuPy buffers directly, when the MPI library lists
                        "cuda" in its ``mpi_memory_alloc_kinds`` (MPI 4.1)
    otherwise on CUDA   the buffers are copied to the host, reduced there and copied back

Failures: a rank that raises while the others wait in an Allreduce would leave them
waiting for ever. ``abort_on_error()`` prints that rank's error (one line, naming the
rank) and calls ``MPI.COMM_WORLD.Abort``, which ends every rank of the job at once.

One process (not started by an MPI launcher, or started as a single rank): ``init()``
returns a ``LocalWorld`` of size 1 whose every method is a no-op, and mpi4py is not
imported at all (it is an optional extra, ``mpi``).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from typing import NamedTuple

import numpy as np

from autograd import backend
from autograd.install import install_hint

from .errors import TinyGPTError

DEFAULT_BUCKET_MB = 25.0
ABORT_GRACE_S = 0.5   # how long a failing rank waits for its error to be printed before MPI Abort

# What MPI launchers put in each process's environment: the number of processes.
# (MPICH's and Intel MPI's hydra: PMI_SIZE; Open MPI: OMPI_COMM_WORLD_SIZE; MVAPICH2.)
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launcher_size(environ=None) -> int | None:
    """How many processes an MPI launcher says it started (None: not started by one;
    0: started by one that does not say how many, e.g. a PMIx launcher)."""
    environ = os.environ if environ is None else environ
    for variable in _SIZE_VARIABLES:
        if environ.get(variable, "").strip():
            try:
                return int(environ[variable])
            except ValueError:
                continue
    if "PMIX_RANK" in environ:
        return 0
    return None


def init(bucket_mb: float = DEFAULT_BUCKET_MB, environ=None):
    """The world this process trains in: ``MPIWorld`` under an MPI launcher with more
    than one process, else ``LocalWorld`` (size 1, no MPI)."""
    size = launcher_size(environ)
    if size is None or size == 1:
        return LocalWorld()
    try:
        from mpi4py import MPI
    except ImportError as exc:
        started = f"{size} processes" if size else "several processes"
        raise TinyGPTError(f"mpiexec started {started}, but mpi4py cannot be imported ({exc}); "
                           f"{install_hint('mpi')} (mpi4py and MPICH), or run without mpiexec") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        if size > 1:  # every process initialised MPI alone: the launcher is another MPI's
            library = MPI.Get_library_version().strip().splitlines()[0]
            raise TinyGPTError(
                f"the launcher started {size} processes but MPI sees only one: the mpiexec used belongs to a "
                f"different MPI than mpi4py's ({library}); use the mpiexec installed with it "
                f"(after {install_hint('mpi')}, the one in the virtual environment)")
        return LocalWorld()
    return MPIWorld(comm, MPI, bucket_mb)


# ----------------------------------------------------------------------------- buckets
class Buckets:
    """A fixed layout of several arrays (shapes and dtypes) in a few flat buffers.

    ``slots`` is a list of (shape, dtype). Slots are taken in order; a bucket closes
    when the next slot would take it past ``bucket_bytes`` (a slot larger than that
    gets a bucket alone), and slots of different dtypes never share one. The buffers
    are allocated once, on the active backend.
    """

    def __init__(self, slots, bucket_bytes):
        xp = backend.xp()
        self.buffers = []     # one flat array per bucket
        self.places = []      # slot index -> (bucket index, offset, size, shape)
        open_bucket = None    # [dtype, total elements, total bytes]
        layout = []           # per bucket: [dtype, elements]
        for shape, dtype in slots:
            dtype = xp.dtype(dtype)
            size = 1
            for n in shape:
                size *= int(n)
            nbytes = size * dtype.itemsize
            if (open_bucket is None or open_bucket[0] != dtype
                    or (open_bucket[2] > 0 and open_bucket[2] + nbytes > bucket_bytes)):
                open_bucket = [dtype, 0, 0]
                layout.append(open_bucket)
            self.places.append((len(layout) - 1, open_bucket[1], size, tuple(shape)))
            open_bucket[1] += size
            open_bucket[2] += nbytes
        self.buffers = [xp.empty(elements, dtype=dtype) for dtype, elements, _ in layout]

    def __len__(self):
        return len(self.buffers)

    def view(self, index):
        """Slot ``index`` as an array of its shape, sharing the bucket's memory."""
        bucket, offset, size, shape = self.places[index]
        return self.buffers[bucket][offset:offset + size].reshape(shape)

    def pack(self, arrays):
        """Copy ``arrays`` (one per slot; None counts as zeros) into the buffers."""
        for index, array in enumerate(arrays):
            bucket, offset, size, _ = self.places[index]
            part = self.buffers[bucket][offset:offset + size]
            if array is None:
                part[...] = 0
            else:
                part[...] = array.reshape(-1)

    def unpack_into(self, arrays):
        """Copy the buffers back into ``arrays`` (one per slot), in place."""
        for index, array in enumerate(arrays):
            array[...] = self.view(index)


# ----------------------------------------------------------------------------- transports
class MpiTransport:
    """Sum or broadcast flat buffers in place with MPI. ``staged``: the buffers live on
    a GPU but MPI cannot read device memory, so each goes through a host copy."""

    def __init__(self, comm, MPI, staged=False, name="MPI"):
        self.comm, self.MPI, self.staged = comm, MPI, staged
        self.name = name + (", through host copies" if staged else "")

    def allreduce_sum_(self, buffer):
        if self.staged:
            host = backend.to_numpy(buffer)
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            buffer[...] = backend.asarray(host)
        else:
            self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def broadcast_(self, buffer, root=0):
        if self.staged:
            host = backend.to_numpy(buffer)
            self.comm.Bcast(host, root=root)
            buffer[...] = backend.asarray(host)
        else:
            self.comm.Bcast(buffer, root=root)

    def start(self):
        """Called before a round of collectives: device work must be done before MPI
        reads device memory (a no-op on CPU)."""
        backend.synchronize()

    def finish(self):
        pass


class NcclTransport:
    """Sum or broadcast CuPy buffers in place with NCCL, on the current CUDA stream.

    ``nccl`` is ``cupy.cuda.nccl`` and ``xp`` is CuPy (both passed in, so that the
    wiring can be checked without a GPU). The communicator is made once: rank 0 asks
    NCCL for a unique id and MPI broadcasts it; every rank then joins with its rank.
    """

    def __init__(self, comm, nccl, xp):
        self.nccl, self.xp = nccl, xp
        uid = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        uid = comm.bcast(uid, root=0)
        self.communicator = nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())
        self.name = "NCCL"

    def _dtype(self, buffer):
        types = {"float16": self.nccl.NCCL_FLOAT16, "float32": self.nccl.NCCL_FLOAT32,
                 "float64": self.nccl.NCCL_FLOAT64}
        return types[str(buffer.dtype)]

    def allreduce_sum_(self, buffer):
        stream = self.xp.cuda.get_current_stream()
        pointer = buffer.data.ptr
        self.communicator.allReduce(pointer, pointer, buffer.size, self._dtype(buffer), self.nccl.NCCL_SUM,
                                    stream.ptr)

    def broadcast_(self, buffer, root=0):
        stream = self.xp.cuda.get_current_stream()
        pointer = buffer.data.ptr
        self.communicator.broadcast(pointer, pointer, buffer.size, self._dtype(buffer), root, stream.ptr)

    def start(self):
        pass  # NCCL calls are queued on the same stream as the kernels that wrote the buffers

    def finish(self):
        # the reduced gradients are read next on this stream anyway; the explicit
        # synchronisation makes a NCCL failure surface here, at the all-reduce
        self.xp.cuda.get_current_stream().synchronize()


def _nccl_module(xp):
    """``cupy.cuda.nccl`` reached through the CuPy module the backend handed out, or None."""
    import importlib
    try:
        nccl = importlib.import_module(xp.__name__ + ".cuda.nccl")
    except Exception:
        return None
    return nccl if getattr(nccl, "available", True) else None


def _mpi_reads_device_memory(comm) -> bool:
    """Whether the MPI library says it accepts CUDA device buffers (MPI 4.1's
    ``mpi_memory_alloc_kinds`` info key lists "cuda", e.g. "mpi,system,cuda:device")."""
    try:
        kinds = comm.Get_info().Get("mpi_memory_alloc_kinds") or ""
    except Exception:
        return False
    return any(kind.strip().startswith("cuda") for kind in kinds.split(","))


# ----------------------------------------------------------------------------- worlds
class _Slot(NamedTuple):
    """Where an array stood in what rank 0 read (from_main): its place in the list of arrays."""
    index: int
    shape: tuple
    dtype: str


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (int, float))


def _split_arrays(value, arrays):
    """``value`` with every array inside (dicts, lists, tuples) replaced by a _Slot; the arrays,
    as arrays of the active backend, appended to ``arrays`` in order."""
    if isinstance(value, dict):
        return {k: _split_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_split_arrays(v, arrays) for v in value)
    if _is_array(value):
        arrays.append(backend.asarray(value))
        return _Slot(len(arrays) - 1, tuple(value.shape), str(value.dtype))
    return value


def _slots(value):
    if isinstance(value, _Slot):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _slots(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _slots(v)


def _join_arrays(value, arrays):
    if isinstance(value, _Slot):
        return arrays[value.index]
    if isinstance(value, dict):
        return {k: _join_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_join_arrays(v, arrays) for v in value)
    return value


class LocalWorld:
    """One process: rank 0 of 1. Every collective is a no-op."""

    rank, size, local_rank = 0, 1, 0
    is_main = True
    transport_name = "none"

    def describe(self) -> str:
        return "1 process"

    def bind_device(self):
        pass

    def broadcast_arrays(self, arrays):
        pass

    def broadcast_object(self, obj):
        return obj

    def from_main(self, read):
        """``read()``: one process is rank 0 and every rank."""
        return read()

    def gather_objects(self, obj):
        return [obj]

    def average_gradients(self, params, loss, stop):
        """(loss, stop) unchanged: one process is its own average."""
        return loss, bool(stop)

    def barrier(self):
        pass

    def abort_on_error(self, program="tinygpt train"):
        return contextlib.nullcontext()


class MPIWorld:
    """N processes under mpiexec, talking through ``comm`` (MPI.COMM_WORLD)."""

    def __init__(self, comm, MPI, bucket_mb=DEFAULT_BUCKET_MB):
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_main = self.rank == 0
        # the rank among the processes on this machine, to pick this rank's GPU
        self.local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.transport = MpiTransport(comm, MPI)
        self._grad_buckets = None   # (parameters, Buckets), made at the first all-reduce
        self.allreduce_calls = 0    # buffers summed so far (the tests count them)

    @property
    def transport_name(self):
        return self.transport.name

    def describe(self) -> str:
        return f"{self.size} processes (MPI, gradients all-reduced by {self.transport.name})"

    def bind_device(self):
        """After the backend is chosen: on CUDA, use GPU ``local_rank % count`` and pick
        the device transport (NCCL, else CUDA-aware MPI, else host copies)."""
        if not backend.is_cuda():
            self.transport = MpiTransport(self.comm, self.MPI)
            return
        xp = backend.xp()
        count = xp.cuda.runtime.getDeviceCount()
        xp.cuda.Device(self.local_rank % count).use()
        backend.seed(0)  # the generator again, now on this rank's device (re-seeded later)
        nccl = _nccl_module(xp)
        if nccl is not None:
            self.transport = NcclTransport(self.comm, nccl, xp)
        elif _mpi_reads_device_memory(self.comm):
            self.transport = MpiTransport(self.comm, self.MPI, name="CUDA-aware MPI")
        else:
            self.transport = MpiTransport(self.comm, self.MPI, staged=True)

    # -------------------------------------------------------------- collectives
    def broadcast_arrays(self, arrays):
        """Overwrite ``arrays`` on every rank with rank 0's, in place (bucketed)."""
        arrays = list(arrays)
        if not arrays:
            return
        buckets = Buckets([(a.shape, a.dtype) for a in arrays], self.bucket_bytes)
        if self.is_main:
            buckets.pack(arrays)
        self.transport.start()
        for buffer in buckets.buffers:
            self.transport.broadcast_(buffer, root=0)
        self.transport.finish()
        if not self.is_main:
            buckets.unpack_into(arrays)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (anything picklable) on every rank."""
        return self.comm.bcast(obj, root=0)

    def from_main(self, read):
        """``read()`` called on rank 0 alone, and its result on every rank: rank 0 reads (a
        checkpoint, a tokenizer, a model's shape) and the others receive it, so the ranks
        need no shared disk. Plain values travel by MPI's object broadcast; the arrays inside
        dicts, lists and tuples travel as arrays, bucketed on the device's transport, and
        arrive on every rank (rank 0 too) as arrays of the active backend."""
        arrays = []
        skeleton = self.broadcast_object(_split_arrays(read(), arrays) if self.is_main else None)
        if not self.is_main:
            xp = backend.xp()
            arrays = [xp.empty(slot.shape, dtype=slot.dtype) for slot in sorted(_slots(skeleton))]
        self.broadcast_arrays(arrays)
        return _join_arrays(skeleton, arrays)

    def gather_objects(self, obj):
        """On rank 0 the list of every rank's ``obj``, in rank order; None elsewhere."""
        return self.comm.gather(obj, root=0)

    def average_gradients(self, params, loss, stop):
        """Replace every parameter's ``.grad`` by its mean over the ranks.

        Also returns the mean of ``loss`` over the ranks and whether any rank asked to
        ``stop`` (one more tiny Allreduce), so that every rank logs, checks for NaN and
        stops at the same step.
        """
        params = list(params)
        if self._grad_buckets is None or self._grad_buckets[0] != [id(p) for p in params]:
            layout = Buckets([(p.shape, p.dtype) for p in params], self.bucket_bytes)
            self._grad_buckets = ([id(p) for p in params], layout)
        buckets = self._grad_buckets[1]
        buckets.pack([p.grad for p in params])
        self.transport.start()
        for buffer in buckets.buffers:
            self.transport.allreduce_sum_(buffer)
            self.allreduce_calls += 1
        self.transport.finish()
        scale = 1.0 / self.size
        for buffer in buckets.buffers:
            buffer *= buffer.dtype.type(scale)
        for index, p in enumerate(params):
            p.grad = buckets.view(index)      # a view: no copy back
        scalars = np.array([float(loss), 1.0 if stop else 0.0], dtype=np.float64)   # reads the loss: one sync
        self.comm.Allreduce(self.MPI.IN_PLACE, scalars, op=self.MPI.SUM)
        return float(scalars[0]) / self.size, bool(scalars[1] > 0)

    def barrier(self):
        self.comm.Barrier()

    @contextlib.contextmanager
    def abort_on_error(self, program="tinygpt train"):
        """Any exception on this rank: print it (one line, naming the rank; a traceback
        first when it is not a user mistake) and end the whole job with MPI Abort, so
        that the other ranks do not wait for ever in their next collective."""
        try:
            yield
        except BaseException as exc:  # noqa: BLE001  (KeyboardInterrupt too: the others must stop)
            if isinstance(exc, SystemExit) and not exc.code:
                raise
            where = f"{program} (rank {self.rank} of {self.size})"
            report = ""
            if isinstance(exc, KeyboardInterrupt):
                line, code = f"{where}: stopped by Ctrl-C; ending every rank", 130
            elif isinstance(exc, TinyGPTError):
                line, code = f"{where}: error: {exc}", 1
            else:
                report = traceback.format_exc()
                line, code = f"{where}: {type(exc).__name__}: {exc}; ending every rank", 1
            try:
                sys.stdout.flush()
            except Exception:
                pass
            # one write, then a moment for mpiexec to forward it: Abort tears down the
            # processes and their output pipes at once
            os.write(2, (report + line + "\n").encode("utf-8", "replace"))
            time.sleep(ABORT_GRACE_S)
            try:
                self.comm.Abort(code)
            finally:
                os._exit(code)   # Abort should not return; if it does (the job is already ending), leave now


def quiet_unless_main(world) -> None:
    """Discard the standard output of every rank but 0, so that a job prints each line
    once (progress, samples, the closing summary); errors still reach stderr."""
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")

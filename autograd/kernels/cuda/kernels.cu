// Hand-written CUDA kernels for tinygpt's engine, loaded with cupy.RawModule.
//
// Each kernel mirrors a NumPy kernel in autograd/kernels/*.py and computes the same
// thing (the derivations are in those files' docstrings, in the same symbols):
//   layernorm_forward / layernorm_backward_dx   <-> layernorm.py
//   gelu_forward / gelu_backward                 <-> gelu.py
//   softmax_xent_rows                            <-> linear_cross_entropy.py, cross_entropy.py
//   causal_softmax_forward / softmax_backward    <-> attention.py
//   embedding_backward                           <-> embedding.py (scatter-add with atomics)
//   adamw_step                                   <-> optim.py (AdamW)
//
// The module is compiled twice, with REAL defined as float and as double (gradient
// checks run in float64). Row kernels use one block per row: each thread walks the
// row with a stride of blockDim.x, and block_sum / block_max reduce across the block
// with warp shuffles, then one value per warp through shared memory.

#ifndef REAL
#define REAL float
#endif

// -infinity without math.h (NVRTC, which CuPy uses, compiles without the host headers)
#define NEG_INF ((REAL)(-__int_as_float(0x7f800000)))

__device__ __forceinline__ REAL warp_sum(REAL v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
    return v;
}

__device__ __forceinline__ REAL warp_max(REAL v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffff, v, offset));
    return v;
}

// Sum of v over the block; every thread gets the result. blockDim.x a multiple of 32, <= 1024.
__device__ REAL block_sum(REAL v) {
    __shared__ REAL partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads();                      // partial[] may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = blockDim.x / 32;
    v = (threadIdx.x < warps) ? partial[threadIdx.x] : (REAL)0;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    return partial[0];
}

__device__ REAL block_max(REAL v) {
    __shared__ REAL partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = blockDim.x / 32;
    v = (threadIdx.x < warps) ? partial[threadIdx.x] : NEG_INF;
    if (warp == 0) v = warp_max(v);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    return partial[0];
}

// ---------------------------------------------------------------------------- layernorm
// One block per row of C: mu, var (two passes, as the NumPy kernel), rstd; writes
// y = w * xhat + b, and saves xhat and rstd for the backward.
extern "C" __global__ void layernorm_forward(const REAL* x, const REAL* w, const REAL* b, REAL* y, REAL* xhat,
                                             REAL* rstd, int C, REAL eps, int has_bias) {
    long row = blockIdx.x;
    const REAL* xr = x + row * C;
    REAL s = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
    REAL mu = block_sum(s) / C;
    REAL v = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) { REAL d = xr[i] - mu; v += d * d; }
    REAL r = (REAL)1 / sqrt(block_sum(v) / C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        REAL h = (xr[i] - mu) * r;
        xhat[row * C + i] = h;
        y[row * C + i] = h * w[i] + (has_bias ? b[i] : (REAL)0);
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

// dx_j = rstd * (dxhat_j - mean(dxhat) - xhat_j * mean(dxhat * xhat)),  dxhat = g * w
extern "C" __global__ void layernorm_backward_dx(const REAL* g, const REAL* xhat, const REAL* rstd, const REAL* w,
                                                 REAL* dx, int C) {
    long row = blockIdx.x;
    REAL a = 0, c = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        REAL d = g[row * C + i] * w[i];
        a += d;
        c += d * xhat[row * C + i];
    }
    REAL mean_d = block_sum(a) / C;
    REAL mean_dx = block_sum(c) / C;
    REAL r = rstd[row];
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        REAL d = g[row * C + i] * w[i];
        dx[row * C + i] = r * (d - mean_d - xhat[row * C + i] * mean_dx);
    }
}

// ---------------------------------------------------------------------------- GELU (tanh form)
#define GELU_K ((REAL)0.7978845608028654)   // sqrt(2 / pi)
#define GELU_C ((REAL)0.044715)

extern "C" __global__ void gelu_forward(const REAL* x, REAL* y, REAL* t, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        REAL v = x[i];
        REAL th = tanh(GELU_K * (v + GELU_C * v * v * v));
        t[i] = th;
        y[i] = (REAL)0.5 * v * ((REAL)1 + th);
    }
}

// dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)
extern "C" __global__ void gelu_backward(const REAL* g, const REAL* x, const REAL* t, REAL* dx, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        REAL v = x[i], th = t[i];
        REAL du = GELU_K * ((REAL)1 + (REAL)3 * GELU_C * v * v);
        dx[i] = g[i] * (REAL)0.5 * (((REAL)1 + th) + v * ((REAL)1 - th * th) * du);
    }
}

// ---------------------------------------------------------------------------- softmax cross-entropy
// One block per row i of z (V columns), in one pass over the row for the max, one for
// the sum of exponentials and one to write: loss_i = lse_i - z_{i,t_i}; and, if
// write_grad, z_i is overwritten in place by scale_i * (softmax(z_i) - onehot(t_i)).
extern "C" __global__ void softmax_xent_rows(REAL* z, const long long* targets, const REAL* row_scale,
                                             double* losses, int V, int write_grad) {
    long row = blockIdx.x;
    REAL* zr = z + row * (long)V;
    REAL m = NEG_INF;
    for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmax(m, zr[j]);
    m = block_max(m);
    REAL s = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += exp(zr[j] - m);
    s = block_sum(s);
    REAL lse = m + log(s);
    long long t = targets[row];
    if (threadIdx.x == 0) losses[row] = (double)(lse - zr[t]);
    if (write_grad) {
        __syncthreads();                 // z[t] was read above
        REAL scale = row_scale[row];
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            REAL p = exp(zr[j] - lse);
            zr[j] = scale * (p - (j == t ? (REAL)1 : (REAL)0));
        }
    }
}

// ---------------------------------------------------------------------------- attention softmax
// S holds rows of Tk scores (B*nh*Tq rows); row r is query i = r % Tq, which sees keys
// j <= i + (Tk - Tq). In place: S <- softmax(scale * S) with the future masked to 0.
extern "C" __global__ void causal_softmax_forward(REAL* S, int Tq, int Tk, REAL scale) {
    long row = blockIdx.x;
    int last = (int)(row % Tq) + (Tk - Tq);   // the last key this query may see
    REAL* sr = S + row * (long)Tk;
    REAL m = NEG_INF;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) m = fmax(m, sr[j] * scale);
    m = block_max(m);
    REAL s = 0;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) s += exp(sr[j] * scale - m);
    s = block_sum(s);
    __syncthreads();
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) sr[j] = j <= last ? exp(sr[j] * scale - m) / s : (REAL)0;
}

// dS = P * (dP - sum_l dP_l P_l) * scale, in place in dP.
extern "C" __global__ void softmax_backward(const REAL* P, REAL* dP, int Tk, REAL scale) {
    long row = blockIdx.x;
    const REAL* pr = P + row * (long)Tk;
    REAL* dr = dP + row * (long)Tk;
    REAL a = 0;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) a += dr[j] * pr[j];
    a = block_sum(a);
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) dr[j] = pr[j] * (dr[j] - a) * scale;
}

// ---------------------------------------------------------------------------- embedding
// dW[ids[n], c] += g[n, c] for every n: atomic adds make repeated ids add up.
extern "C" __global__ void embedding_backward(const long long* ids, const REAL* g, REAL* dW, long N, int C) {
    for (long k = blockIdx.x * (long)blockDim.x + threadIdx.x; k < N * C; k += (long)gridDim.x * blockDim.x) {
        long n = k / C;
        int c = (int)(k % C);
        atomicAdd(&dW[ids[n] * (long)C + c], g[k]);
    }
}

// ---------------------------------------------------------------------------- AdamW
// One element of one parameter per thread; the same order of operations as optim.py.
extern "C" __global__ void adamw_step(REAL* p, const REAL* g, REAL* m, REAL* v, long n, REAL lr, REAL beta1,
                                      REAL beta2, REAL eps, REAL decay, REAL step_size, REAL bc2_sqrt) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        REAL gi = g[i];
        REAL pi = p[i] * ((REAL)1 - lr * decay);
        REAL mi = m[i] + ((REAL)1 - beta1) * (gi - m[i]);
        REAL vi = beta2 * v[i] + ((REAL)1 - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / (sqrt(vi) / bc2_sqrt + eps);
    }
}

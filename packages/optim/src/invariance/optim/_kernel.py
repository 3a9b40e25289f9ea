"""The CPU kernel of ``fused=True``: AdamP/SGDP over a parameter group in one native call.

A small C++ source (below, no torch headers) is built once per machine with the system C++
compiler into a shared library (cached under ``~/.cache/invariance-optim/kernels``, or
``$INVARIANCE_OPTIM_KERNELS``) and called through :mod:`ctypes` with the tensors' data pointers:
one call per (dtype, group) and step, no Python per tensor beyond collecting the pointers, and the
parameters, gradients and state stay where they are (no flat buffers, no copies).

Per tensor ``(rows, L)`` (each output channel a dense block of ``L`` values; contiguous or
channels-last) the kernel makes the fewest passes the arithmetic allows:

1. the cosine tests need only the weight and the *raw* gradient: one read of ``p, g`` gives the
   channel dot products and norms, the layer view is their sum, and the view that fires is known
   before any moment is touched;
2. one pass over the rows updates the moments and forms the update ``u`` row by row; where the
   channel view fired, the row's radial coefficient needs only that row, so the row's step is
   taken right away from the row still in cache (``u`` kept in a row-sized scratch); where
   nothing fired the step is taken in the same loop;
3. only where the layer view fired (its coefficient sums over the whole tensor) a second pass
   recomputes ``u`` from the stored moments and takes the step.

Memory streams per value (float32, AdamW's fused step: 7): channel view or no projection 9,
layer view 12. The arithmetic is the foreach path's (the same formulas in the compute dtype,
rounded differently only by the order of the row sums); the thresholds, the step size and
``sqrt(1 - beta2^t)`` are computed in double per tensor and rounded to the compute dtype, as
the foreach path's Python scalars are. The kernel runs on one thread per call; with
``torch.get_num_threads() > 1`` the tensors are split into balanced shares run on that many
threads (:mod:`ctypes` releases the GIL).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invariance.optim._utils import rows_dense

__all__ = ["KernelUnavailable", "load", "supports", "run", "build", "hyper"]


class KernelUnavailable(RuntimeError):
    """The CPU kernel cannot be built or loaded on this machine."""


_SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// Channel statistics of p and the raw gradient g: which view fires (0 none, 1 channel, 2 layer).
template <typename T>
int decide(const T* P, const T* G, int64_t R, int64_t L, T eps, T thr_c, T thr_l, T* pn2,
           T* spp) {
  T sdot = 0, sp = 0, sg = 0, maxc = -INFINITY;
  bool nan = false;
  for (int64_t r = 0; r < R; ++r) {
    const T* p = P + r * L;
    const T* g = G + r * L;
    T dot = 0, pp = 0, gg = 0;
#pragma omp simd reduction(+ : dot, pp, gg)
    for (int64_t j = 0; j < L; ++j) {
      dot += p[j] * g[j];
      pp += p[j] * p[j];
      gg += g[j] * g[j];
    }
    pn2[r] = pp;
    T c = std::fabs(dot) / (std::max(std::sqrt(pp), eps) * std::max(std::sqrt(gg), eps));
    if (std::isnan(c)) nan = true;
    else if (c > maxc) maxc = c;
    sdot += dot;
    sp += pp;
    sg += gg;
  }
  *spp = sp;
  if (!nan && maxc < thr_c) return 1;
  T cl = std::fabs(sdot) / (std::max(std::sqrt(sp), eps) * std::max(std::sqrt(sg), eps));
  return cl < thr_l ? 2 : 0;
}

template <typename T>
struct Adam {
  T b1, w, w1, b2, omb2, eps, bc2;
  bool lo, nest;
  // moments in place (torch's lerp_ and mul_/addcmul_), returns the update u
  inline T update(T g, T* m, T* v) const {
    T mm = *m, vv = *v;
    mm = lo ? mm + w * (g - mm) : g - (g - mm) * w1;
    vv = vv * b2 + omb2 * g * g;
    *m = mm;
    *v = vv;
    return direction(g, mm, vv);
  }
  void set_bc2(T x) { bc2 = x; }
  inline T direction(T g, T mm, T vv) const {
    T d = std::sqrt(vv) / bc2 + eps;
    return nest ? (mm * b1 + g * w) / d : mm / d;
  }
};

template <typename T>
struct Sgd {
  T mom, damp1;
  bool nest;
  inline T update(T g, T* b, T*) const {
    T bb = *b * mom + damp1 * g;
    *b = bb;
    return nest ? g + mom * bb : bb;
  }
  void set_bc2(T) {}
  inline T direction(T g, T bb, T) const { return nest ? g + mom * bb : bb; }
};

// One tensor: moments (S::update), projection, decoupled decay, step.
// keep_dir: the projected direction is written back into the first state tensor (SGDP's
// official in-place buffer projection).
template <typename T, typename S>
void tensor_step(const S& s, T* P, const T* G, T* A, T* B, int64_t R, int64_t L, bool project,
                 T step, T eps, T thr_c, T thr_l, double lr_wd, double wd_ratio, bool keep_dir,
                 T* pn2, T* row) {
  int mode = 0;
  T spp = 0;
  if (project) mode = decide<T>(P, G, R, L, eps, thr_c, thr_l, pn2, &spp);
  const T decay = (T)(1.0 - lr_wd * (mode ? wd_ratio : 1.0));
  const int64_t n = R * L;
  if (mode == 0) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T u = s.update(G[i], A + i, B + i);
      P[i] = P[i] * decay - u * step;
    }
    return;
  }
  if (mode == 1) {
    for (int64_t r = 0; r < R; ++r) {
      T* p = P + r * L;
      const T* g = G + r * L;
      T* a = A + r * L;
      T* b = B + r * L;
      T pu = 0;
#pragma omp simd reduction(+ : pu)
      for (int64_t j = 0; j < L; ++j) {
        T u = s.update(g[j], a + j, b + j);
        row[j] = u;
        pu += p[j] * u;
      }
      T den = std::sqrt(pn2[r]) + eps;
      T coef = pu / (den * den);
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) {
        T u = row[j] - p[j] * coef;
        if (keep_dir) a[j] = u;
        p[j] = p[j] * decay - u * step;
      }
    }
    return;
  }
  T spu = 0;
  for (int64_t r = 0; r < R; ++r) {
    T pu = 0;
    const int64_t o = r * L;
#pragma omp simd reduction(+ : pu)
    for (int64_t j = o; j < o + L; ++j) pu += P[j] * s.update(G[j], A + j, B + j);
    spu += pu;
  }
  T den = std::sqrt(spp) + eps;
  T coef = spu / (den * den);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T u = s.direction(G[i], A[i], B[i]) - P[i] * coef;
    if (keep_dir) A[i] = u;
    P[i] = P[i] * decay - u * step;
  }
}

// ptr: n x 4 (p, g, state0, state1); shape: n x 3 (rows, L, project);
// scal: n x 4 (step size or lr, sqrt(1 - beta2^t), thr_c, thr_l)
template <typename T, typename S>
void run(const S& s, int64_t n, const int64_t* ptr, const int64_t* shape, const double* scal,
         double eps, double lr_wd, double wd_ratio, bool keep_dir) {
  int64_t maxr = 1, maxl = 1;
  for (int64_t t = 0; t < n; ++t) {
    maxr = std::max(maxr, shape[3 * t]);
    maxl = std::max(maxl, shape[3 * t + 1]);
  }
  std::vector<T> pn2(maxr), row(maxl);
  for (int64_t t = 0; t < n; ++t) {
    S st = s;
    st.set_bc2((T)scal[4 * t + 1]);
    T* P = (T*)ptr[4 * t];
    T* A = (T*)ptr[4 * t + 2];
    T* B = ptr[4 * t + 3] ? (T*)ptr[4 * t + 3] : A;
    tensor_step<T, S>(st, P, (const T*)ptr[4 * t + 1], A, B, shape[3 * t], shape[3 * t + 1],
                      shape[3 * t + 2] != 0, (T)scal[4 * t], (T)eps, (T)scal[4 * t + 2],
                      (T)scal[4 * t + 3], lr_wd, wd_ratio, keep_dir, pn2.data(), row.data());
  }
}

template <typename T>
void adamp(int64_t n, const int64_t* ptr, const int64_t* shape, const double* scal,
           double beta1, double beta2, double eps, double lr_wd, double wd_ratio, int nesterov) {
  Adam<T> s;
  double w = 1.0 - beta1;
  s.b1 = (T)beta1;
  s.w = (T)w;
  s.w1 = (T)1 - s.w;
  s.lo = std::fabs(s.w) < (T)0.5;
  s.b2 = (T)beta2;
  s.omb2 = (T)(1.0 - beta2);
  s.eps = (T)eps;
  s.bc2 = 1;
  s.nest = nesterov != 0;
  run<T, Adam<T>>(s, n, ptr, shape, scal, eps, lr_wd, wd_ratio, false);
}

template <typename T>
void sgdp(int64_t n, const int64_t* ptr, const int64_t* shape, const double* scal,
          double momentum, double dampening, double eps, double lr_wd, double wd_ratio,
          int nesterov, int project_buffer) {
  Sgd<T> s;
  s.mom = (T)momentum;
  s.damp1 = (T)(1.0 - dampening);
  s.nest = nesterov != 0;
  run<T, Sgd<T>>(s, n, ptr, shape, scal, eps, lr_wd, wd_ratio,
                 project_buffer != 0 && nesterov == 0);
}

}  // namespace

extern "C" {
#define ARGS int64_t n, const int64_t* ptr, const int64_t* shape, const double* scal, \
  double a, double b, double eps, double lr_wd, double wd_ratio, int nesterov
#define PASS n, ptr, shape, scal, a, b, eps, lr_wd, wd_ratio, nesterov
void adamp_f32(ARGS) { adamp<float>(PASS); }
void adamp_f64(ARGS) { adamp<double>(PASS); }
void sgdp_f32(ARGS, int pb) { sgdp<float>(PASS, pb); }
void sgdp_f64(ARGS, int pb) { sgdp<double>(PASS, pb); }
}
"""

#: compiler flags: vectorised (``omp simd`` reductions without OpenMP threads), no ``-ffast-math``
#: (NaN checks and the rounding of the formulas stay IEEE), no FMA contraction.
_FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-ffp-contract=off",
    "-fPIC",
    "-shared",
    "-std=c++17",
]

_LIB: dict[str, Any] = {}
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}


def _cache_dir() -> Path:
    env = os.environ.get("INVARIANCE_OPTIM_KERNELS")
    return Path(env) if env else Path.home() / ".cache" / "invariance-optim" / "kernels"


def _compiler() -> str | None:
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return c
    return None


def _key(cxx: str) -> str:
    """Source, flags, compiler and CPU (``-march=native`` code must not run on another CPU)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                cpu += line
    except OSError:
        pass
    text = "\n".join([_SOURCE, " ".join(_FLAGS), cxx, cpu])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(directory: Path | None = None) -> Path:
    """Compile the kernel into ``directory`` (default: the cache) unless it is there already;
    returns the library's path. Raises :class:`KernelUnavailable` without a working compiler."""
    cxx = _compiler()
    if cxx is None:
        raise KernelUnavailable("no C++ compiler found (set CXX)")
    d = directory if directory is not None else _cache_dir()
    lib = d / f"adamp_{_key(cxx)}.so"
    if lib.exists():
        return lib
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        src = Path(tmp) / "adamp.cpp"
        src.write_text(_SOURCE)
        out = Path(tmp) / "adamp.so"
        try:
            subprocess.run(
                [cxx, *_FLAGS, str(src), "-o", str(out)],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except (OSError, subprocess.SubprocessError) as e:
            err = getattr(e, "stderr", "") or str(e)
            raise KernelUnavailable(f"building the CPU kernel failed: {err[-500:]}") from e
        os.replace(out, lib)  # atomic: concurrent builders leave one complete library
    return lib


def load() -> ctypes.CDLL:
    """The kernel library, built on first use. Raises :class:`KernelUnavailable`."""
    if "lib" in _LIB:
        if _LIB["lib"] is None:
            raise KernelUnavailable(_LIB["err"])
        return _LIB["lib"]
    try:
        lib = ctypes.CDLL(str(build()))
    except Exception as e:  # noqa: BLE001 - any failure (no compiler, no cache dir): no kernel
        _LIB.update(lib=None, err=str(e))
        raise KernelUnavailable(str(e)) from e
    vp, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    base = [i64, vp, vp, vp, f64, f64, f64, f64, f64, i32]
    for name in ("adamp_f32", "adamp_f64"):
        getattr(lib, name).argtypes = base
        getattr(lib, name).restype = None
    for name in ("sgdp_f32", "sgdp_f64"):
        getattr(lib, name).argtypes = [*base, i32]
        getattr(lib, name).restype = None
    _LIB["lib"] = lib
    return lib


def supports(p: Tensor, g: Tensor, state: list[Tensor]) -> bool:
    """The kernel can step ``p``: a non-empty float32/float64 CPU tensor whose channels are dense
    blocks, with its gradient and state tensors in the same memory layout."""
    return (
        p.device.type == "cpu"
        and p.dtype in _DTYPES
        and p.numel() > 0
        and rows_dense(p)
        and all(t.dtype == p.dtype and t.stride() == p.stride() for t in (g, *state))
    )


def hyper(kind: str, hp: dict[str, Any]) -> tuple[Any, ...]:
    """The kernel's hyper-parameters for the group ``hp`` (see :func:`run`)."""
    if kind == "adamp":
        beta1, beta2 = hp["betas"]
        lr_wd = hp["lr"] * hp["weight_decay"]
        return (beta1, beta2, hp["eps"], lr_wd, hp["wd_ratio"], hp["nesterov"])
    mom = hp["momentum"]
    lr_wd = hp["lr"] * hp["weight_decay"] / (1 - mom)
    return (
        mom,
        hp["dampening"],
        hp["eps"],
        lr_wd,
        hp["wd_ratio"],
        hp["nesterov"],
        hp["project_buffer"],
    )


_POOL: dict[int, ThreadPoolExecutor] = {}
if hasattr(os, "register_at_fork"):  # a forked child (e.g. a DataLoader worker) starts a new pool
    os.register_at_fork(after_in_child=_POOL.clear)


def _shares(sizes: list[int], k: int) -> list[list[int]]:
    """Split tensor indices into ``k`` shares of about equal size (largest first, greedy)."""
    shares: list[list[int]] = [[] for _ in range(k)]
    load_ = [0] * k
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        j = load_.index(min(load_))
        shares[j].append(i)
        load_[j] += sizes[i]
    return [s for s in shares if s]


def run(
    kind: str,
    dtype: torch.dtype,
    tensors: list[tuple[Tensor, Tensor, Tensor, Tensor | None]],
    scalars: list[tuple[float, float, float, float]],
    hyper: tuple[Any, ...],
    threads: int = 1,
) -> None:
    """Step ``tensors`` (``(p, g, state0, state1 or None)`` each) in place.

    ``scalars[i]``: step size (AdamP: ``lr / (1 - beta1^t)``; SGDP: ``lr``), ``sqrt(1 - beta2^t)``
    (AdamP; unused by SGDP), the channel and the layer threshold. ``hyper``: AdamP ``(beta1,
    beta2, eps, lr_wd, wd_ratio, nesterov)``; SGDP ``(momentum, dampening, eps, lr_wd, wd_ratio,
    nesterov, project_buffer)``, with ``lr_wd`` the decoupled decay factor before ``wd_ratio``."""
    fn = getattr(load(), f"{kind}_{_DTYPES[dtype]}")
    n = len(tensors)
    pl, sl = [], []
    for p, g, a, b in tensors:
        pl.append((p.data_ptr(), g.data_ptr(), a.data_ptr(), 0 if b is None else b.data_ptr()))
        proj = p.ndim > 1
        sl.append((p.shape[0], p.numel() // p.shape[0], 1) if proj else (1, p.numel(), 0))
    ptr = torch.tensor(pl, dtype=torch.int64)
    shape = torch.tensor(sl, dtype=torch.int64)
    scal = torch.tensor(scalars, dtype=torch.float64)
    args = [float(h) for h in hyper[:5]] + [int(bool(h)) for h in hyper[5:]]
    if threads <= 1 or n == 1:
        fn(n, ptr.data_ptr(), shape.data_ptr(), scal.data_ptr(), *args)
        return
    shares = _shares([t[0].numel() for t in tensors], threads)
    pool = _POOL.get(threads) or _POOL.setdefault(threads, ThreadPoolExecutor(threads))
    jobs = []
    for idx in shares:
        ix = torch.tensor(idx)
        sp, ss, sc = ptr[ix].contiguous(), shape[ix].contiguous(), scal[ix].contiguous()
        jobs.append(
            (
                pool.submit(fn, len(idx), sp.data_ptr(), ss.data_ptr(), sc.data_ptr(), *args),
                (sp, ss, sc),
            )
        )
    for job, _keep in jobs:
        job.result()

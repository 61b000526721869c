// Small-batch matmul for the CPU decode loop, as an XLA FFI custom call (see
// modeling/cpu_kernels.py, which compiles this file on first use).
//
//   y[M, P * W] = x[M, K] @ B,   B given as column panels wp[P, K, W] = B[:, p*W:(p+1)*W]
//
// Decoding multiplies a few rows (one per sequence) by every weight matrix of the model once
// per token. XLA:CPU hands such matmuls to YNNPACK, which repacks the weights on every call:
// at 8 rows that costs about as much as the multiply itself. Here the weights are packed once
// per generate call (outside the decode loop), so each panel is one contiguous stream that the
// kernel reads once for all rows: the time stays close to that of reading the weights, whatever
// the number of rows up to kRows.
//
// Threads: panels are handed out from an atomic counter to the calling thread and to helpers
// scheduled on XLA's intra-op pool. The caller waits only for panels that some thread has
// claimed, so it never waits for a helper that the pool has not started (no deadlock when every
// pool thread is busy); late helpers find nothing left and return.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__AVX512F__)
constexpr int kLanes = 16, kRows = 8;  // 8 x 3 accumulators of the 32 vector registers
#elif defined(__AVX__)
constexpr int kLanes = 8, kRows = 4;  // 4 x 3 accumulators of 16
#else
constexpr int kLanes = 4, kRows = 8;  // 128-bit vectors (NEON: 32 registers, SSE: spills)
#endif
constexpr int kVecs = 3;
constexpr int64_t kWidth = kLanes * kVecs;  // panel width W
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

static inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

static inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }

// y[0:R, 0:W] = x[0:R, 0:K] @ w[0:K, 0:W] (w one panel, row stride W).
template <int R>
static void tile(const float* __restrict x, int64_t ldx, const float* __restrict w, int64_t K,
                 float* __restrict y, int64_t ldy) {
  Vec acc[R][kVecs];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = Vec{};
  for (int64_t k = 0; k < K; ++k) {
    Vec wk[kVecs];
    for (int v = 0; v < kVecs; ++v) wk[v] = load(w + k * kWidth + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const float xr = x[r * ldx + k];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += wk[v] * xr;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVecs; ++v) store(y + r * ldy + v * kLanes, acc[r][v]);
}

// tile<rows> for a runtime rows in 1..R.
template <int R>
static void tile_rows(int64_t rows, const float* x, int64_t ldx, const float* w, int64_t K,
                      float* y, int64_t ldy) {
  if constexpr (R > 0) {
    if (rows == R) return tile<R>(x, ldx, w, K, y, ldy);
    tile_rows<R - 1>(rows, x, ldx, w, K, y, ldy);
  }
}

static void panel(const float* x, int64_t M, int64_t K, const float* wp, int64_t p, float* y,
                  int64_t ldy) {
  const float* w = wp + p * K * kWidth;
  for (int64_t m = 0; m < M; m += kRows) {
    tile_rows<kRows>(std::min<int64_t>(kRows, M - m), x + m * K, K, w, K,
                     y + m * ldy + p * kWidth, ldy);
  }
}

struct Progress {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

static ffi::Error PanelMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> panels, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions();
  auto pd = panels.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 2 || pd.size() != 3 || pd[1] != xd[1] || pd[2] != kWidth ||
      yd.size() != 2 || yd[0] != xd[0] || yd[1] != pd[0] * kWidth) {
    return ffi::Error::InvalidArgument(
        "panel_matmul: expected x [M, K], panels [P, K, panel_width()], y [M, P * panel_width()]");
  }
  const int64_t M = xd[0], K = xd[1], P = pd[0];
  const float* xs = x.typed_data();
  const float* ws = panels.typed_data();
  float* ys = y->typed_data();
  if (M == 0 || P == 0) return ffi::Error::Success();
  auto progress = std::make_shared<Progress>();
  auto work = [=]() {
    for (int64_t p; (p = progress->next.fetch_add(1, std::memory_order_relaxed)) < P;) {
      panel(xs, M, K, ws, p, ys, P * kWidth);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), P) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work]() { work(); });
  work();
  while (progress->done.load(std::memory_order_acquire) < P) std::this_thread::yield();
  return ffi::Error::Success();
}

extern "C" int64_t panel_width() { return kWidth; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(panel_matmul, PanelMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

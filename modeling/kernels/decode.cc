// The CPU decode loop's kernels, as XLA FFI custom calls (see modeling/cpu_kernels.py, which
// compiles this file on first use):
//
//   panel_matmul:      y[M, N] = x[M, K] @ B, B [K, N] given as column panels wp[P, K, W]
//                      (zero-padded to P * W >= N columns)
//   decode_attention:  one new query token per row against that row's KV cache
//   greedy_argmax:     each row's first largest logit (greedy decoding's next token)
//   bf16_take:         a block of a bfloat16 array (one layer of a stacked weight), widened to
//                      float32 in a fresh buffer
//   bf16_matmul_t:     y[M, V] = x[M, K] @ E^T, E [V, K] bfloat16 (the tied output embedding)
//   bf16_gather:       rows of a bfloat16 table [V, D] (the token embedding), widened to float32
//   bf16_matmul:       y[M, G * N] = x[M, K] @ each of G blocks [K, N] of a bfloat16 array, read
//                      in place (one layer's projection inside a stacked weight)
//
// panel_matmul. Decoding multiplies a few rows (one per sequence) by every weight matrix of the
// model once per token. XLA:CPU hands such matmuls to YNNPACK, which repacks the weights on every
// call: at 8 rows that costs about as much as the multiply itself. Here the weights are packed
// once per model (outside the decode loop), so each panel is one contiguous stream that the
// kernel reads once for all rows: the time stays close to that of reading the weights, whatever
// the number of rows up to kRows.
//
// decode_attention. XLA runs the decode step's attention as two YNNPACK batched matmuls (scores,
// then probabilities @ values) that pack the cache on every call, plus the soft-cap, mask and
// softmax as separate passes. Here each (row, kv head) task reads its keys once for all the
// query heads of its group, skips the slots the mask hides, and reads the visible values once.
//
// Threads: work items (panels, or (row, kv head) pairs) are handed out from an atomic counter to
// the calling thread and to helpers scheduled on XLA's intra-op pool. The caller waits only for
// items that some thread has claimed, so it never waits for a helper that the pool has not
// started (no deadlock when every pool thread is busy); late helpers find nothing left and return.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <limits>
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
constexpr int64_t kPrefetch = 8192 / (kWidth * sizeof(float));  // rows of a panel ahead (~8 KB)
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

static inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

static inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }

// y[0:R, 0:cols] = (x[0:R, 0:K] @ w[0:K, 0:W])[:, 0:cols] (w one panel, row stride W; cols < W
// only in the last panel of a matrix whose width is not a multiple of W).
template <int R>
static void tile(const float* __restrict x, int64_t ldx, const float* __restrict w, int64_t K,
                 float* __restrict y, int64_t ldy, int64_t cols) {
  Vec acc[R][kVecs];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = Vec{};
  for (int64_t k = 0; k < K; ++k) {
    // software prefetch: at 8 rows the FMAs keep the core busy and the hardware prefetcher
    // alone leaves the weight stream at ~40 GB/s from DRAM (bench: 1.6x slower than this)
    for (int64_t line = 0; line < kWidth; line += 64 / sizeof(float))
      __builtin_prefetch(w + (k + kPrefetch) * kWidth + line);
    Vec wk[kVecs];
    for (int v = 0; v < kVecs; ++v) wk[v] = load(w + k * kWidth + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const float xr = x[r * ldx + k];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += wk[v] * xr;
    }
  }
  if (cols == kWidth) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kVecs; ++v) store(y + r * ldy + v * kLanes, acc[r][v]);
    return;
  }
  for (int r = 0; r < R; ++r) {
    float row[kWidth];
    for (int v = 0; v < kVecs; ++v) store(row + v * kLanes, acc[r][v]);
    std::memcpy(y + r * ldy, row, cols * sizeof(float));
  }
}

// tile<rows> for a runtime rows in 1..R.
template <int R>
static void tile_rows(int64_t rows, const float* x, int64_t ldx, const float* w, int64_t K,
                      float* y, int64_t ldy, int64_t cols) {
  if constexpr (R > 0) {
    if (rows == R) return tile<R>(x, ldx, w, K, y, ldy, cols);
    tile_rows<R - 1>(rows, x, ldx, w, K, y, ldy, cols);
  }
}

// Panel p of y [M, N] = x [M, K] @ panels.
static void panel(const float* x, int64_t M, int64_t K, const float* wp, int64_t p, float* y,
                  int64_t N) {
  const float* w = wp + p * K * kWidth;
  const int64_t cols = std::min<int64_t>(kWidth, N - p * kWidth);
  for (int64_t m = 0; m < M; m += kRows) {
    tile_rows<kRows>(std::min<int64_t>(kRows, M - m), x + m * K, K, w, K, y + m * N + p * kWidth,
                     N, cols);
  }
}

// Runs work(i) for i in [0, n) on the calling thread and up to n - 1 pool helpers (see the
// header: the caller waits only for items that some thread has claimed).
template <typename Work>
static void parallel_for(ffi::ThreadPool& pool, int64_t n, Work work) {
  struct Progress {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  if (n <= 0) return;
  auto progress = std::make_shared<Progress>();
  auto run = [=]() {
    for (int64_t i; (i = progress->next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      work(i);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([run]() { run(); });
  run();
  while (progress->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

static ffi::Error PanelMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> panels, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions();
  auto pd = panels.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 2 || pd.size() != 3 || pd[1] != xd[1] || pd[2] != kWidth ||
      yd.size() != 2 || yd[0] != xd[0] || yd[1] > pd[0] * kWidth ||
      yd[1] <= (pd[0] - 1) * kWidth) {
    return ffi::Error::InvalidArgument(
        "panel_matmul: expected x [M, K], panels [P, K, panel_width()], y [M, N] with "
        "(P - 1) * panel_width() < N <= P * panel_width()");
  }
  const int64_t M = xd[0], K = xd[1], P = pd[0], N = yd[1];
  const float* xs = x.typed_data();
  const float* ws = panels.typed_data();
  float* ys = y->typed_data();
  if (M == 0) return ffi::Error::Success();
  parallel_for(pool, P, [=](int64_t p) { panel(xs, M, K, ws, p, ys, N); });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------- decode attention

typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

static inline Vec splat(float s) { return Vec{} + s; }

// tanh as Eigen's and XLA's float rational approximation (|error| < 4e-7 against float64).
static inline Vec vtanh(Vec x) {
  const Vec c = splat(7.90531110763549805f);
  x = x > c ? c : x;
  x = x < -c ? -c : x;
  const Vec x2 = x * x;
  Vec p = splat(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  Vec q = splat(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

// exp for x <= 0 (softmax after subtracting the maximum): Cody-Waite reduction to
// r in [-ln2/2, ln2/2], a degree-6 polynomial, and 2^n from the exponent bits; exactly 0 below
// the smallest normal float's logarithm, as float exp underflows.
static inline Vec vexp(Vec x) {
  const Vec lo = splat(-87.33654f);
  const Vec xc = x < lo ? lo : x;
  const Vec n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  Vec r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  Vec scale;
  std::memcpy(&scale, &bits, sizeof(Vec));
  const Vec y = p * scale;
  return x < lo ? Vec{} : y;
}

// v + v rotated by W lanes.
template <int W>
static inline Vec fold(Vec v) {
  IVec idx;
  for (int i = 0; i < kLanes; ++i) idx[i] = (i + W) & (kLanes - 1);
  return v + __builtin_shuffle(v, idx);
}

// The sum of v's lanes, as a tree of rotations (a scalar loop would add them one by one).
static inline float hsum(Vec v) {
  if constexpr (kLanes >= 16) v = fold<8>(v);
  if constexpr (kLanes >= 8) v = fold<4>(v);
  v = fold<2>(v);
  return fold<1>(v)[0];
}

// The largest of v's lanes, as a tree of rotations.
static inline float hmax(Vec v) {
  for (int w = kLanes / 2; w > 0; w /= 2) {
    IVec idx;
    for (int i = 0; i < kLanes; ++i) idx[i] = (i + w) & (kLanes - 1);
    const Vec r = __builtin_shuffle(v, idx);
    v = r > v ? r : v;
  }
  return v[0];
}

// v + v rotated by W lanes within each half.
template <int W>
static inline Vec fold_half(Vec v) {
  constexpr int kHalf = kLanes / 2;
  IVec idx;
  for (int i = 0; i < kLanes; ++i) idx[i] = (i & ~(kHalf - 1)) | ((i + W) & (kHalf - 1));
  return v + __builtin_shuffle(v, idx);
}

// The lane sums of a and b: one vector holds both halves' partial sums, then folds within halves
// (9 shuffles and adds at 16 lanes, where two hsum calls take 16).
static inline void hsum2(Vec a, Vec b, float* sa, float* sb) {
  constexpr int kHalf = kLanes / 2;
  IVec lo, hi;
  for (int i = 0; i < kHalf; ++i) {
    lo[i] = i, lo[i + kHalf] = kLanes + i;
    hi[i] = kHalf + i, hi[i + kHalf] = kLanes + kHalf + i;
  }
  Vec m = __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);
  if constexpr (kHalf >= 8) m = fold_half<4>(m);
  if constexpr (kHalf >= 4) m = fold_half<2>(m);
  m = fold_half<1>(m);
  *sa = m[0];
  *sb = m[kHalf];
}

// x and y each hold kLanes / W lane sums in groups of W lanes; returns their 2 * kLanes / W sums
// in groups of W / 2 lanes (x's first), each group the sum of its two halves.
template <int W>
static inline Vec combine(Vec x, Vec y) {
  constexpr int n = kLanes / W, half = W / 2;
  IVec lo, hi;
  for (int d = 0; d < 2 * n; ++d) {
    const int from = d < n ? d * W : kLanes + (d - n) * W;
    for (int j = 0; j < half; ++j) {
      lo[d * half + j] = from + j;
      hi[d * half + j] = from + half + j;
    }
  }
  return __builtin_shuffle(x, y, lo) + __builtin_shuffle(x, y, hi);
}

// Lane i of the result is the sum of v[i]'s lanes (i < kLanes; v is overwritten): a transposing
// tree of kLanes - 1 pair combines, 2 shuffles each, where kLanes hsum calls take log2(kLanes)
// apiece (16 lanes: 30 shuffles for 16 sums instead of 64).
template <int W = kLanes>
static inline Vec transpose_sum(Vec* v) {
  constexpr int n = W;  // vectors at this level
  for (int i = 0; i < n / 2; ++i) v[i] = combine<W>(v[2 * i], v[2 * i + 1]);
  if constexpr (W > 2) {
    return transpose_sum<W / 2>(v);
  } else {
    return v[0];
  }
}

constexpr int64_t kMaxGroup = 8;  // query heads per kv head (Gemma 2: 2)
constexpr int64_t kAheadBytes = 4096;  // how far ahead of the cache reads to prefetch

// Prefetch the cache lines of row[0:n].
static inline void prefetch_row(const float* row, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / sizeof(float)) __builtin_prefetch(row + i);
}

struct AttentionShape {
  int64_t G, R, H;  // query heads per kv head, cache slots, head dim
  float scale, softcap, mask_value;
};

// s[g] = q[g] . k (g < G), with the head dim in vectors and a scalar tail.
template <int G>
static inline void dots(const float* __restrict q, const float* __restrict k, int64_t H,
                        float* s) {
  Vec acc[G];
  for (int g = 0; g < G; ++g) acc[g] = Vec{};
  int64_t h = 0;
  for (; h + kLanes <= H; h += kLanes) {
    const Vec kv = load(k + h);
    for (int g = 0; g < G; ++g) acc[g] += load(q + g * H + h) * kv;
  }
  int g = 0;
  for (; g + 1 < G; g += 2) hsum2(acc[g], acc[g + 1], s + g, s + g + 1);
  if (g < G) s[g] = hsum(acc[g]);
  for (g = 0; g < G; ++g)
    for (int64_t j = h; j < H; ++j) s[g] += q[g * H + j] * k[j];
}

// scores[g * R + t + j] = (q[g] . k[t + j]) * scale for the kLanes / G slots j of a block that
// are all visible: the G * (kLanes / G) dot products' vectors reduced by one transpose_sum.
template <int G>
static inline void block_dots(const float* __restrict q, const float* __restrict k, int64_t H,
                              float scale, float* scores, int64_t R) {
  constexpr int S = kLanes / G;
  Vec acc[kLanes];
#pragma GCC unroll 16
  for (int i = 0; i < kLanes; ++i) acc[i] = Vec{};  // (unrolled: registers, not a memset)
  int64_t h = 0;
  for (; h + kLanes <= H; h += kLanes) {
    Vec qv[G];
    for (int g = 0; g < G; ++g) qv[g] = load(q + g * H + h);
    for (int j = 0; j < S; ++j) {
      const Vec kv = load(k + j * H + h);
      for (int g = 0; g < G; ++g) acc[g * S + j] += qv[g] * kv;
    }
  }
  float sum[kLanes];
  store(sum, transpose_sum(acc) * scale);
  if (h < H) {  // the head dim's scalar tail
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < S; ++j) {
        float tail = 0.0f;
        for (int64_t i = h; i < H; ++i) tail += q[g * H + i] * k[j * H + i];
        sum[g * S + j] += tail * scale;
      }
  }
  for (int g = 0; g < G; ++g) std::memcpy(scores + g * R, sum + g * S, S * sizeof(float));
}

// out[g, h:h + C * kLanes] = sum_t scores[g, t] v[t, h:h + C * kLanes] * inv_sum[g] over the
// visible slots t (every slot when `any` is false). The pass at h == 0 prefetches whole rows
// (the later ones find them in L2).
template <int G, int C>
static inline void weigh(const AttentionShape& a, const float* __restrict v, const bool* visible,
                         bool any, const float* __restrict scores, const float* inv_sum,
                         int64_t ahead, int64_t h, float* __restrict out) {
  const int64_t R = a.R, H = a.H;
  Vec acc[G][C];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < C; ++c) acc[g][c] = Vec{};
  for (int64_t t = 0; t < R; ++t) {
    if (h == 0 && t + ahead < R && (!any || visible[t + ahead]))
      prefetch_row(v + (t + ahead) * H, H);
    if (any && !visible[t]) continue;
    for (int c = 0; c < C; ++c) {
      const Vec vv = load(v + t * H + h + c * kLanes);
      for (int g = 0; g < G; ++g) acc[g][c] += scores[g * R + t] * vv;
    }
  }
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < C; ++c) store(out + g * H + h + c * kLanes, acc[g][c] * inv_sum[g]);
}

// One (row, kv head): q [G, H], k, v [R, H], visible [R] -> out [G, H]. `scores` holds G * R.
template <int G>
static void attend(const AttentionShape& a, const float* q, const float* k, const float* v,
                   const bool* visible, float* scores, float* out) {
  const int64_t R = a.R, H = a.H;
  bool any = false;
  for (int64_t t = 0; t < R; ++t) any |= visible[t];
  float s[G];
  const int64_t ahead = std::max<int64_t>(1, kAheadBytes / (H * int64_t(sizeof(float))));
  // blocks of kLanes / G slots (kLanes / G dot products per query head at once) where every slot
  // of the block is visible, one slot at a time elsewhere (hidden slots are never read)
  for (int64_t t = 0; t < R;) {
    if constexpr (kLanes % G == 0) {
      constexpr int64_t S = kLanes / G;
      bool all = t + S <= R;
      for (int64_t j = 0; all && j < S; ++j) all = visible[t + j];
      if (all) {
        for (int64_t j = ahead; j < ahead + S && t + j < R; ++j)
          if (visible[t + j]) prefetch_row(k + (t + j) * H, H);
        block_dots<G>(q, k + t * H, H, a.scale, scores + t, R);
        t += S;
        continue;
      }
    }
    if (t + ahead < R && visible[t + ahead]) prefetch_row(k + (t + ahead) * H, H);
    if (!visible[t]) {
      for (int g = 0; g < G; ++g) scores[g * R + t] = a.mask_value;
      ++t;
      continue;
    }
    dots<G>(q, k + t * H, H, s);
    for (int g = 0; g < G; ++g) scores[g * R + t] = s[g] * a.scale;
    ++t;
  }
  // soft-cap, mask, softmax over each query head's R scores (a scalar tail after the vectors)
  float inv_sum[G];
  for (int g = 0; g < G; ++g) {
    float* sg = scores + g * R;
    int64_t t = 0;
    if (a.softcap > 0.0f) {
      for (; t + kLanes <= R; t += kLanes) store(sg + t, vtanh(load(sg + t) / a.softcap) * a.softcap);
      for (; t < R; ++t) {
        Vec x = splat(sg[t]);
        sg[t] = (vtanh(x / a.softcap) * a.softcap)[0];
      }
    }
    // masked slots again (the soft-cap moved the mask value)
    for (t = 0; t < R; ++t)
      if (!visible[t]) sg[t] = a.mask_value;
    // the maximum, kLanes running maxima at a time (a scalar loop waits on each comparison)
    Vec mv = splat(-std::numeric_limits<float>::infinity());
    for (t = 0; t + kLanes <= R; t += kLanes) {
      const Vec x = load(sg + t);
      mv = x > mv ? x : mv;
    }
    float m = hmax(mv);
    for (; t < R; ++t) m = std::max(m, sg[t]);
    Vec sum = Vec{};
    for (t = 0; t + kLanes <= R; t += kLanes) {
      const Vec e = vexp(load(sg + t) - m);
      store(sg + t, e);
      sum += e;
    }
    float total = hsum(sum);
    for (; t < R; ++t) {
      const float e = vexp(splat(sg[t] - m))[0];
      sg[t] = e;
      total += e;
    }
    inv_sum[g] = 1.0f / total;
  }
  // out[g] = sum_t p[g, t] v[t] / sum[g], over the visible slots (all when none is: then every
  // score is the mask value and the weights are uniform, as in XLA's softmax); one pass per
  // C vectors of the head dim, its G * C accumulators in registers (independent FMA chains).
  constexpr int C = G <= 2 ? 4 : G <= 4 ? 2 : 1;
  int64_t h = 0;
  for (; h + C * kLanes <= H; h += C * kLanes)
    weigh<G, C>(a, v, visible, any, scores, inv_sum, ahead, h, out);
  for (; h + kLanes <= H; h += kLanes)
    weigh<G, 1>(a, v, visible, any, scores, inv_sum, ahead, h, out);
  for (; h < H; ++h) {
    float acc[G] = {};
    for (int64_t t = 0; t < R; ++t) {
      if (any && !visible[t]) continue;
      for (int g = 0; g < G; ++g) acc[g] += scores[g * R + t] * v[t * H + h];
    }
    for (int g = 0; g < G; ++g) out[g * H + h] = acc[g] * inv_sum[g];
  }
}

template <int G>
static void attend_group(int64_t group, const AttentionShape& a, const float* q, const float* k,
                         const float* v, const bool* visible, float* scores, float* out) {
  if constexpr (G > 0) {
    if (group == G) return attend<G>(a, q, k, v, visible, scores, out);
    attend_group<G - 1>(group, a, q, k, v, visible, scores, out);
  }
}

//   q [B, K, G, H], k, v [B, K, R, H], visible [B, R] -> out [B, K, G, H]
// scores = (q . k) * scale, soft-capped as softcap * tanh(scores / softcap) when softcap > 0,
// mask_value where !visible, softmax over R, then @ v: XLA's decode-step attention, fused.
static ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                                  ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                                  ffi::Buffer<ffi::PRED> visible, ffi::ResultBuffer<ffi::F32> out,
                                  float scale, float softcap, float mask_value) {
  auto qd = q.dimensions();
  auto kd = k.dimensions();
  auto vd = v.dimensions();
  auto md = visible.dimensions();
  auto od = out->dimensions();
  bool ok = qd.size() == 4 && kd.size() == 4 && vd.size() == 4 && md.size() == 2 &&
            od.size() == 4;
  for (int i = 0; ok && i < 4; ++i) ok = kd[i] == vd[i] && qd[i] == od[i];
  ok = ok && kd[0] == qd[0] && kd[1] == qd[1] && kd[3] == qd[3] && md[0] == qd[0] &&
       md[1] == kd[2];
  if (!ok) {
    return ffi::Error::InvalidArgument(
        "decode_attention: expected q [B, K, G, H], k and v [B, K, R, H], visible [B, R], "
        "out [B, K, G, H]");
  }
  const int64_t B = qd[0], K = qd[1], G = qd[2], H = qd[3], R = kd[2];
  if (G > kMaxGroup) {
    return ffi::Error::InvalidArgument("decode_attention: at most 8 query heads per kv head");
  }
  if (B * K * G * H == 0) return ffi::Error::Success();
  if (R == 0) return ffi::Error::InvalidArgument("decode_attention: empty cache");
  const AttentionShape a{G, R, H, scale, softcap, mask_value};
  const float* qs = q.typed_data();
  const float* ks = k.typed_data();
  const float* vs = v.typed_data();
  const bool* ms = visible.typed_data();
  float* os = out->typed_data();
  parallel_for(pool, B * K, [=](int64_t task) {
    thread_local std::unique_ptr<float[]> scores;
    thread_local int64_t capacity = 0;
    if (capacity < G * R) {
      scores.reset(new float[G * R]);
      capacity = G * R;
    }
    const int64_t b = task / K;
    attend_group<kMaxGroup>(G, a, qs + task * G * H, ks + task * R * H, vs + task * R * H,
                            ms + b * R, scores.get(), os + task * G * H);
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------- greedy argmax

// The index of row x[0:V]'s first largest value; V - 1 for a row holding a NaN (what
// generate.greedy_token gives: the NaN maximum equals nothing).
static int32_t row_argmax(const float* x, int64_t V) {
  Vec best = splat(-std::numeric_limits<float>::infinity());
  IVec at = IVec{} + int32_t(V);
  IVec lane;
  for (int i = 0; i < kLanes; ++i) lane[i] = i;
  Vec nan = Vec{};
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes) {
    const Vec x_v = load(x + v);
    nan += x_v - x_v;  // NaN stays NaN; inf - inf is NaN too, so check infinities separately
    const IVec better = x_v > best;  // strictly: the first index of a tie stays
    best = better ? x_v : best;
    at = better ? lane + int32_t(v) : at;
  }
  float m = -std::numeric_limits<float>::infinity();
  int64_t index = V;
  for (int i = 0; i < kLanes; ++i) {
    if (best[i] > m || (best[i] == m && at[i] < index)) {
      m = best[i];
      index = at[i];
    }
  }
  bool has_nan = false;
  for (int i = 0; i < kLanes; ++i) has_nan |= nan[i] != 0.0f;
  for (; v < V; ++v) {
    has_nan |= std::isnan(x[v]);
    if (x[v] > m) {
      m = x[v];
      index = v;
    }
  }
  if (has_nan) {  // the vector check also flags +-inf (inf - inf): look again, exactly
    has_nan = false;
    for (int64_t j = 0; j < V && !has_nan; ++j) has_nan = std::isnan(x[j]);
  }
  if (has_nan) return int32_t(V - 1);
  if (index >= V) return 0;  // every value is -inf: the first
  return int32_t(index);
}

//   x [B, V] float32 -> [B] int32
static ffi::Error GreedyArgmax(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                               ffi::ResultBuffer<ffi::S32> out) {
  auto xd = x.dimensions();
  auto od = out->dimensions();
  if (xd.size() != 2 || od.size() != 1 || od[0] != xd[0] || xd[1] == 0) {
    return ffi::Error::InvalidArgument("greedy_argmax: expected x [B, V] with V > 0, out [B]");
  }
  const int64_t V = xd[1];
  const float* xs = x.typed_data();
  int32_t* os = out->typed_data();
  parallel_for(pool, xd[0], [=](int64_t b) { os[b] = row_argmax(xs + b * V, V); });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------- bfloat16 weights
//
// XLA:CPU computes few-row matmuls, slices and gathers of bfloat16 arrays in float32: it converts
// the whole operand first, and inside the decode loop it hoists that conversion of a loop-invariant
// weight out of the loop, i.e. it keeps a float32 copy of every weight (twice the model). These two
// custom calls read the bfloat16 weights where they are, so no such copy exists: bf16_take widens
// one layer (a contiguous block) into a fresh float32 buffer, and its extra operand (any array the
// caller computes just before) orders it inside the program, so each layer's copy lives only while
// that layer runs; bf16_matmul_t multiplies rows by the transposed embedding directly.

static inline float widen(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

constexpr int64_t kTakeChunk = int64_t(1) << 16;

//   w [...] bfloat16, after (unused), offset attr -> out [...] float32 = w.flat[offset:offset+n]
static ffi::Error Bf16Take(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> w, ffi::AnyBuffer after,
                           ffi::ResultBuffer<ffi::F32> out, int64_t offset) {
  (void)after;
  const int64_t n = out->element_count();
  if (offset < 0 || offset + n > int64_t(w.element_count())) {
    return ffi::Error::InvalidArgument("bf16_take: offset + output size exceeds the weight");
  }
  const uint16_t* src = w.typed_data() + offset;
  float* dst = out->typed_data();
  parallel_for(pool, (n + kTakeChunk - 1) / kTakeChunk, [=](int64_t c) {
    const int64_t end = std::min(n, (c + 1) * kTakeChunk);
    for (int64_t i = c * kTakeChunk; i < end; ++i) dst[i] = widen(src[i]);
  });
  return ffi::Error::Success();
}

constexpr int64_t kTableRows = 64;  // embedding rows per work item

//   x [M, K] float32, e [V, K] bfloat16 -> y [M, V] float32 = x @ e^T
static ffi::Error Bf16MatmulT(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::BF16> e, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions();
  auto ed = e.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 2 || ed.size() != 2 || ed[1] != xd[1] || yd.size() != 2 ||
      yd[0] != xd[0] || yd[1] != ed[0]) {
    return ffi::Error::InvalidArgument("bf16_matmul_t: expected x [M, K], e [V, K], y [M, V]");
  }
  const int64_t M = xd[0], K = xd[1], V = ed[0];
  const float* xs = x.typed_data();
  const uint16_t* es = e.typed_data();
  float* ys = y->typed_data();
  parallel_for(pool, (V + kTableRows - 1) / kTableRows, [=](int64_t b) {
    thread_local std::unique_ptr<float[]> row;
    thread_local int64_t capacity = 0;
    if (capacity < K) {
      row.reset(new float[K]);
      capacity = K;
    }
    const int64_t end = std::min(V, (b + 1) * kTableRows);
    for (int64_t v = b * kTableRows; v < end; ++v) {
      const uint16_t* src = es + v * K;
      for (int64_t k = 0; k < K; ++k) row[k] = widen(src[k]);
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = xs + m * K;
        Vec acc{};
        int64_t k = 0;
        for (; k + kLanes <= K; k += kLanes) acc += load(xm + k) * load(row.get() + k);
        float sum = hsum(acc);
        for (; k < K; ++k) sum += xm[k] * row[k];
        ys[m * V + v] = sum;
      }
    }
  });
  return ffi::Error::Success();
}

//   table [V, D] bfloat16, ids [N] int32 -> out [N, D] float32 = table[clip(ids, 0, V - 1)]
static ffi::Error Bf16Gather(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> table,
                             ffi::Buffer<ffi::S32> ids, ffi::ResultBuffer<ffi::F32> out) {
  auto td = table.dimensions();
  auto od = out->dimensions();
  const int64_t N = ids.element_count();
  if (td.size() != 2 || od.size() != 2 || od[0] != N || od[1] != td[1] || td[0] == 0) {
    return ffi::Error::InvalidArgument("bf16_gather: expected table [V, D], ids [N], out [N, D]");
  }
  const int64_t V = td[0], D = td[1];
  const uint16_t* ts = table.typed_data();
  const int32_t* is = ids.typed_data();
  float* os = out->typed_data();
  parallel_for(pool, N, [=](int64_t n) {
    const int64_t row = std::min<int64_t>(std::max<int64_t>(is[n], 0), V - 1);
    for (int64_t d = 0; d < D; ++d) os[n * D + d] = widen(ts[row * D + d]);
  });
  return ffi::Error::Success();
}

constexpr int64_t kColumns = 256;  // output columns per work item of bf16_matmul

//   x [M, K] float32, w bfloat16 (any shape), attrs offset, groups G, cols N -> y [M, G * N]
//   y[m, g * N + j] = sum_k x[m, k] * w.flat[offset + (g * K + k) * N + j]
static ffi::Error Bf16Matmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                             ffi::Buffer<ffi::BF16> w, ffi::ResultBuffer<ffi::F32> y,
                             int64_t offset, int64_t groups, int64_t cols) {
  auto xd = x.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 2 || yd.size() != 2 || yd[0] != xd[0] || yd[1] != groups * cols ||
      offset < 0 || offset + groups * xd[1] * cols > int64_t(w.element_count())) {
    return ffi::Error::InvalidArgument(
        "bf16_matmul: expected x [M, K], y [M, groups * cols] and groups blocks [K, cols] of "
        "the weight from offset");
  }
  const int64_t M = xd[0], K = xd[1], G = groups, N = cols;
  const float* xs = x.typed_data();
  const uint16_t* ws = w.typed_data() + offset;
  float* ys = y->typed_data();
  const int64_t blocks = (N + kColumns - 1) / kColumns;
  parallel_for(pool, G * blocks, [=](int64_t b) {
    thread_local std::unique_ptr<float[]> acc;
    thread_local int64_t capacity = 0;
    if (capacity < M * kColumns) {
      acc.reset(new float[M * kColumns]);
      capacity = M * kColumns;
    }
    const int64_t g = b / blocks, j0 = (b % blocks) * kColumns;
    const int64_t width = std::min(kColumns, N - j0);
    float* a = acc.get();
    std::fill(a, a + M * kColumns, 0.0f);
    float row[kColumns];
    for (int64_t k = 0; k < K; ++k) {
      const uint16_t* src = ws + (g * K + k) * N + j0;
      for (int64_t j = 0; j < width; ++j) row[j] = widen(src[j]);
      for (int64_t m = 0; m < M; ++m) {
        const float xv = xs[m * K + k];
        float* am = a + m * kColumns;
        for (int64_t j = 0; j < width; ++j) am[j] += xv * row[j];
      }
    }
    for (int64_t m = 0; m < M; ++m) {
      std::memcpy(ys + m * G * N + g * N + j0, a + m * kColumns, width * sizeof(float));
    }
  });
  return ffi::Error::Success();
}

extern "C" int64_t panel_width() { return kWidth; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(panel_matmul, PanelMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(greedy_argmax, GreedyArgmax,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(decode_attention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale")
                                  .Attr<float>("softcap")
                                  .Attr<float>("mask_value"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(bf16_take, Bf16Take,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("offset"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(bf16_matmul_t, Bf16MatmulT,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(bf16_gather, Bf16Gather,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(bf16_matmul, Bf16Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("offset")
                                  .Attr<int64_t>("groups")
                                  .Attr<int64_t>("cols"));

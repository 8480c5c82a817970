"""The C source of ``syre.kernels._native`` (compiled there on first use): the decay (lerp toward the anchor,
advanced removal toward it or toward the origin) and the AdamW and SGD-momentum steps with the decay first, for
fp32 and fp64, each over arrays of tensors in one call, split over OpenMP threads by ranges of the concatenated
elements. The decay writes its FMAs explicitly, so it is bitwise ATen's for-loop (``_native`` checks that before
first use); the steps let the compiler contract.
"""

SOURCE = r"""
#include <stdint.h>
#include <stddef.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef void (*piece_fn)(const void* ctx, int64_t k, int64_t lo, int64_t hi);

/* Apply fn to every element of the nt tensors (sizes N), split over nthreads threads by ranges of the
   concatenated elements. */
static void run(int64_t nt, const int64_t* N, int nthreads, int64_t parallel_min, piece_fn fn, const void* ctx) {
  int64_t total = 0;
  for (int64_t k = 0; k < nt; ++k) total += N[k];
#ifdef _OPENMP
  if (nthreads > 1 && total >= parallel_min) {
    #pragma omp parallel num_threads(nthreads)
    {
      int64_t t = omp_get_thread_num(), nth = omp_get_num_threads();
      int64_t per = ((total + nth - 1) / nth + 63) / 64 * 64;
      int64_t lo = t * per, hi = lo + per < total ? lo + per : total, off = 0;
      for (int64_t k = 0; k < nt && off < hi; ++k) {
        int64_t a = lo > off ? lo - off : 0, b = hi - off < N[k] ? hi - off : N[k];
        if (a < b) fn(ctx, k, a, b);
        off += N[k];
      }
    }
    return;
  }
#endif
  (void)nthreads; (void)parallel_min;
  for (int64_t k = 0; k < nt; ++k) if (N[k] > 0) fn(ctx, k, 0, N[k]);
}

#define DEFINE(T, S, FMA, SQRT)                                                                              \
/* ---- the decay: lerp toward the anchor (basic), advanced removal toward it or toward the origin */        \
static __attribute__((noinline)) void lerp_loop_##S(int64_t n, T* restrict p, const T* restrict a, T w) {    \
  if (w < (T)0.5 && w > (T)-0.5) { for (int64_t i = 0; i < n; ++i) p[i] = FMA(w, a[i] - p[i], p[i]); }      \
  else { const T c = w - (T)1; for (int64_t i = 0; i < n; ++i) p[i] = FMA(c, a[i] - p[i], a[i]); }          \
}                                                                                                            \
static __attribute__((noinline)) void ar_loop_##S(int64_t n, T* restrict p, const T* restrict a,             \
                                                  const T* restrict x, T nw) {                               \
  for (int64_t i = 0; i < n; ++i) { T d = p[i] - a[i]; d = FMA(d, x[i], d); p[i] = FMA(nw, d, p[i]); }       \
}                                                                                                            \
static __attribute__((noinline)) void ar0_loop_##S(int64_t n, T* restrict p, const T* restrict x, T nw) {    \
  for (int64_t i = 0; i < n; ++i) { T d = p[i]; d = FMA(d, x[i], d); p[i] = FMA(nw, d, p[i]); }              \
}                                                                                                            \
typedef struct { T** P; T** A; T** X; T w; } decay_ctx_##S;                                                  \
static void lerp_piece_##S(const void* c, int64_t k, int64_t lo, int64_t hi) {                               \
  const decay_ctx_##S* x = (const decay_ctx_##S*)c;                                                          \
  lerp_loop_##S(hi - lo, x->P[k] + lo, x->A[k] + lo, x->w);                                                  \
}                                                                                                            \
static void ar_piece_##S(const void* c, int64_t k, int64_t lo, int64_t hi) {                                 \
  const decay_ctx_##S* x = (const decay_ctx_##S*)c;                                                          \
  if (x->A) ar_loop_##S(hi - lo, x->P[k] + lo, x->A[k] + lo, x->X[k] + lo, -x->w);                          \
  else ar0_loop_##S(hi - lo, x->P[k] + lo, x->X[k] + lo, -x->w);                                             \
}                                                                                                            \
void syre_lerp_##S(int64_t nt, T** P, T** A, const int64_t* N, double w, int nthreads, int64_t pmin) {       \
  decay_ctx_##S c = {P, A, NULL, (T)w}; run(nt, N, nthreads, pmin, lerp_piece_##S, &c);                      \
}                                                                                                            \
void syre_ar_##S(int64_t nt, T** P, T** A, T** X, const int64_t* N, double w, int nthreads, int64_t pmin) {  \
  decay_ctx_##S c = {P, A, X, (T)w}; run(nt, N, nthreads, pmin, ar_piece_##S, &c);                           \
}                                                                                                            \
/* ---- AdamW with the decay first: s = w, 1 - lr wd, 1 - beta1, beta2, 1 - beta2, lr / bc1, sqrt bc2, eps */ \
static __attribute__((noinline)) void adamw_loop_##S(int64_t n, T* restrict p, const T* restrict g,          \
    T* restrict m, T* restrict v, const T* restrict a, const T* restrict x, const T* s) {                   \
  const T w = s[0], keep = s[1], b1 = s[2], beta2 = s[3], b2 = s[4], ss = s[5], bc2 = s[6], eps = s[7];      \
  if (x) {                                                                                                   \
    for (int64_t i = 0; i < n; ++i) {                                                                        \
      T d = p[i] - a[i]; T q = (p[i] - w * (d + d * x[i])) * keep;                                          \
      T m2 = m[i] + (g[i] - m[i]) * b1; T v2 = v[i] * beta2 + (g[i] * g[i]) * b2;                            \
      p[i] = q - ss * (m2 / (SQRT(v2) / bc2 + eps)); m[i] = m2; v[i] = v2;                                   \
    }                                                                                                        \
  } else {                                                                                                   \
    for (int64_t i = 0; i < n; ++i) {                                                                        \
      T q = (p[i] + w * (a[i] - p[i])) * keep;                                                               \
      T m2 = m[i] + (g[i] - m[i]) * b1; T v2 = v[i] * beta2 + (g[i] * g[i]) * b2;                            \
      p[i] = q - ss * (m2 / (SQRT(v2) / bc2 + eps)); m[i] = m2; v[i] = v2;                                   \
    }                                                                                                        \
  }                                                                                                          \
}                                                                                                            \
typedef struct { T** P; T** G; T** M; T** V; T** A; T** X; T s[8]; } step_ctx_##S;                           \
static void adamw_piece_##S(const void* c, int64_t k, int64_t lo, int64_t hi) {                              \
  const step_ctx_##S* x = (const step_ctx_##S*)c;                                                            \
  adamw_loop_##S(hi - lo, x->P[k] + lo, x->G[k] + lo, x->M[k] + lo, x->V[k] + lo, x->A[k] + lo,              \
                 x->X ? x->X[k] + lo : NULL, x->s);                                                          \
}                                                                                                            \
void syre_adamw_##S(int64_t nt, T** P, T** G, T** M, T** V, T** A, T** X, const int64_t* N, const double* s,  \
                    int nthreads, int64_t pmin) {                                                            \
  step_ctx_##S c = {P, G, M, V, A, X, {0}};                                                                  \
  for (int i = 0; i < 8; ++i) c.s[i] = (T)s[i];                                                              \
  run(nt, N, nthreads, pmin, adamw_piece_##S, &c);                                                           \
}                                                                                                            \
/* ---- SGD with momentum, the decay first: s = w, momentum, 1 - dampening, lr */                            \
static __attribute__((noinline)) void sgd_loop_##S(int64_t n, T* restrict p, const T* restrict g,            \
    T* restrict b, const T* restrict a, const T* restrict x, const T* s) {                                  \
  const T w = s[0], mom = s[1], damp = s[2], lr = s[3];                                                      \
  if (x) {                                                                                                   \
    for (int64_t i = 0; i < n; ++i) {                                                                        \
      T d = p[i] - a[i]; T q = p[i] - w * (d + d * x[i]); T b2 = b[i] * mom + g[i] * damp;                  \
      p[i] = q - lr * b2; b[i] = b2;                                                                         \
    }                                                                                                        \
  } else {                                                                                                   \
    for (int64_t i = 0; i < n; ++i) {                                                                        \
      T q = p[i] + w * (a[i] - p[i]); T b2 = b[i] * mom + g[i] * damp; p[i] = q - lr * b2; b[i] = b2;        \
    }                                                                                                        \
  }                                                                                                          \
}                                                                                                            \
static void sgd_piece_##S(const void* c, int64_t k, int64_t lo, int64_t hi) {                                \
  const step_ctx_##S* x = (const step_ctx_##S*)c;                                                            \
  sgd_loop_##S(hi - lo, x->P[k] + lo, x->G[k] + lo, x->M[k] + lo, x->A[k] + lo, x->X ? x->X[k] + lo : NULL,  \
               x->s);                                                                                        \
}                                                                                                            \
void syre_sgd_##S(int64_t nt, T** P, T** G, T** B, T** A, T** X, const int64_t* N, const double* s,          \
                  int nthreads, int64_t pmin) {                                                              \
  step_ctx_##S c = {P, G, B, NULL, A, X, {0}};                                                               \
  for (int i = 0; i < 4; ++i) c.s[i] = (T)s[i];                                                              \
  run(nt, N, nthreads, pmin, sgd_piece_##S, &c);                                                             \
}

DEFINE(float, f32, fmaf, sqrtf)
DEFINE(double, f64, fma, sqrt)

int syre_native_abi(void) { return 1; }
"""

// AVX2 forms (with FMA and F16C), compiled for that instruction set by the function attribute
// alone and called only after `kvk_isa_supported(KVK_AVX2)`.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))


TARGET static inline float half(const uint8_t *p) { return _cvtsh_ss(kvk_load16(p)); }

TARGET static inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/// The 32 elements of a Q8_0/Q4_0/Q4_1 block as four vectors of 8 unscaled values (Q4_0 less 8),
/// elements 0-7, 8-15, 16-23, 24-31. Each widening reads 8 bytes straight into 32-bit lanes, so
/// a Q4 byte's high nibble is one shift away (no mask, no byte shuffle).
TARGET static inline void block_values(kvk_format f, const uint8_t *qs, __m256 v[4]) {
  if (f == KVK_Q8_0) {
    for (int j = 0; j < 4; j++) {
      const __m128i q = _mm_loadl_epi64((const __m128i *)(qs + 8 * j));
      v[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    }
    return;
  }
  const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8)));
  const __m256i mask = _mm256_set1_epi32(0x0F);
  __m256i n[4] = {_mm256_and_si256(a, mask), _mm256_and_si256(b, mask), _mm256_srli_epi32(a, 4),
                  _mm256_srli_epi32(b, 4)};
  if (f == KVK_Q4_0)
    for (int j = 0; j < 4; j++) n[j] = _mm256_sub_epi32(n[j], _mm256_set1_epi32(8));
  for (int j = 0; j < 4; j++) v[j] = _mm256_cvtepi32_ps(n[j]);
}

TARGET static inline __m256 bf16x8(const uint8_t *p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

TARGET static inline __m256 f16x8(const uint8_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static size_t block_header(kvk_format f) { return f == KVK_Q4_1 ? 4 : 2; }

TARGET void kvk_dequantize_rows_avx2(kvk_format f, const void *src, size_t rows, size_t cols,
                                     float *dst, size_t ldd) {
  const size_t rb = kvk_row_bytes(f, cols), nb = cols / 32;
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *s = (const uint8_t *)src + r * rb;
    float *y = dst + r * ldd;
    size_t i = 0;
    switch (f) {
      case KVK_F16:
      case KVK_BF16:
        for (; i + 8 <= cols; i += 8)
          _mm256_storeu_ps(y + i, f == KVK_F16 ? f16x8(s + 2 * i) : bf16x8(s + 2 * i));
        if (i < cols) kvk_dequantize_row_portable(f, s + 2 * i, cols - i, y + i);
        break;
      case KVK_Q8_0:
      case KVK_Q4_0:
      case KVK_Q4_1: {
        const size_t bytes = (size_t)kvk_block_bytes(f);
        for (size_t b = 0; b < nb; b++, s += bytes, y += 32) {
          const __m256 d = _mm256_set1_ps(half(s));
          __m256 v[4];
          block_values(f, s + block_header(f), v);
          if (f == KVK_Q4_1) {
            const __m256 m = _mm256_set1_ps(half(s + 2));
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(y + 8 * j, _mm256_add_ps(_mm256_mul_ps(v[j], d), m));
          } else {
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(y + 8 * j, _mm256_mul_ps(v[j], d));
          }
        }
        break;
      }
      default:
        kvk_dequantize_row_portable(f, s, cols, y);
        break;
    }
  }
}

TARGET static inline float dot_f32(const float *a, const float *x, size_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), acc0);
  float dot = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; i++) dot += a[i] * x[i];
  return dot;
}

/// A block's scale d (and Q4_1's minimum m) in every lane, converted by F16C: the 256 KiB table
/// of every f16's float, evicted by the weights streaming through the caches during a decoded
/// token, cost more in lookups than the conversions (the AVX-512 kernel measured it).
TARGET static inline void block_scales(kvk_format f, const uint8_t *blk, __m256 *d, __m256 *m) {
  *d = _mm256_set1_ps(half(blk));
  if (f == KVK_Q4_1) *m = _mm256_set1_ps(half(blk + 2));
}

/// Rows ahead whose bytes the kernel asks the caches for while it reads a block of a row: every
/// cache line of that row is asked for once (a block is under 64 bytes); without it the loads of
/// the weights trail the hardware prefetcher (measured on the AVX-512 kernels).
enum { PREFETCH_ROWS = 8 };

/// The dots of `nr` (1-4) consecutive Q8_0/Q4_0/Q4_1 rows with x, interleaved block by block
/// (x loaded once for all of them). Q4_1's m term goes into the same lanes: `xs8` holds each
/// block's Σx/8 in 8 lanes, so that Σ (q·d + m)·x = d·Σ q·x + m·Σ x is one more FMA. Each row's
/// sum is the same whatever `nr`, so a thread's share of the rows does not change it.
TARGET __attribute__((always_inline)) static inline void dot_block_rows(
    kvk_format f, const uint8_t *s, size_t rb, int nr, size_t nb, const float *x,
    const float *xs8, float *out) {
  __m256 acc[4];
  for (int i = 0; i < nr; i++) acc[i] = _mm256_setzero_ps();
  const size_t bytes = (size_t)kvk_block_bytes(f), header = block_header(f);
  for (size_t b = 0; b < nb; b++) {
    const float *xb = x + 32 * b;
    const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8),
                 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
    for (int i = 0; i < nr; i++) {
      const uint8_t *blk = s + i * rb + b * bytes;
      _mm_prefetch((const char *)(blk + PREFETCH_ROWS * rb), _MM_HINT_T0);
      __m256 v[4], d, m;
      block_values(f, blk + header, v);
      block_scales(f, blk, &d, &m);
      __m256 t = _mm256_mul_ps(v[0], x0);
      t = _mm256_fmadd_ps(v[1], x1, t);
      t = _mm256_fmadd_ps(v[2], x2, t);
      t = _mm256_fmadd_ps(v[3], x3, t);
      acc[i] = _mm256_fmadd_ps(d, t, acc[i]);
      if (f == KVK_Q4_1) acc[i] = _mm256_fmadd_ps(m, _mm256_loadu_ps(xs8 + 8 * b), acc[i]);
    }
  }
  for (int i = 0; i < nr; i++) out[i] = hsum(acc[i]);
}

/// y = rows·x + beta·y, four rows at a time (`dots` gives 4 or 1 rows' sums).
#define FOUR_ROWS(rows, y, beta, dots4)                                        \
  do {                                                                         \
    float d_[4];                                                               \
    size_t r_ = 0;                                                             \
    for (; r_ + 4 <= (rows); r_ += 4) {                                        \
      dots4(r_, 4, d_);                                                        \
      for (int i_ = 0; i_ < 4; i_++)                                           \
        (y)[r_ + i_] = (beta) == 0 ? d_[i_] : d_[i_] + (beta) * (y)[r_ + i_];  \
    }                                                                          \
    for (; r_ < (rows); r_++) {                                                \
      dots4(r_, 1, d_);                                                        \
      (y)[r_] = (beta) == 0 ? d_[0] : d_[0] + (beta) * (y)[r_];                \
    }                                                                          \
  } while (0)

TARGET __attribute__((always_inline)) static inline void dot_block_matrix(
    kvk_format f, const uint8_t *w, size_t rows, size_t rb, size_t nb, const float *x,
    const float *xs8, float beta, float *y) {
#define BLOCK_DOTS(r, nr, out) dot_block_rows(f, w + (r) * rb, rb, nr, nb, x, xs8, out)
  FOUR_ROWS(rows, y, beta, BLOCK_DOTS);
#undef BLOCK_DOTS
}

/// The dots of `nr` (1-4) consecutive F16/BF16 rows with x (cols a multiple of 8), x loaded once
/// for all of them; each row's sum in the same order whatever `nr`.
TARGET __attribute__((always_inline)) static inline void dot_half_rows(
    kvk_format f, const uint8_t *s, size_t rb, int nr, size_t cols, const float *x, float *out) {
  __m256 acc[4][2];
  for (int i = 0; i < nr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  size_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
    for (int i = 0; i < nr; i++) {
      const uint8_t *p = s + i * rb + 2 * c;
      acc[i][0] = _mm256_fmadd_ps(f == KVK_F16 ? f16x8(p) : bf16x8(p), x0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(f == KVK_F16 ? f16x8(p + 16) : bf16x8(p + 16), x1, acc[i][1]);
    }
  }
  if (c < cols) {
    const __m256 x0 = _mm256_loadu_ps(x + c);
    for (int i = 0; i < nr; i++) {
      const uint8_t *p = s + i * rb + 2 * c;
      acc[i][0] = _mm256_fmadd_ps(f == KVK_F16 ? f16x8(p) : bf16x8(p), x0, acc[i][0]);
    }
  }
  for (int i = 0; i < nr; i++) out[i] = hsum(_mm256_add_ps(acc[i][0], acc[i][1]));
}

TARGET __attribute__((always_inline)) static inline void dot_half_matrix(
    kvk_format f, const uint8_t *w, size_t rows, size_t rb, size_t cols, const float *x,
    float beta, float *y) {
#define HALF_DOTS(r, nr, out) dot_half_rows(f, w + (r) * rb, rb, nr, cols, x, out)
  FOUR_ROWS(rows, y, beta, HALF_DOTS);
#undef HALF_DOTS
}

TARGET void kvk_matvec_avx2(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                            float beta, float *y, float *scratch) {
  const size_t rb = kvk_row_bytes(f, cols), nb = cols / 32;
  if (f == KVK_Q8_0 || f == KVK_Q4_0 || f == KVK_Q4_1) {
    float *xs8 = scratch;
    if (f == KVK_Q4_1)
      for (size_t b = 0; b < nb; b++) {
        const float *xb = x + 32 * b;
        const float sum = hsum(_mm256_add_ps(
            _mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
            _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24))));
        _mm256_storeu_ps(xs8 + 8 * b, _mm256_set1_ps(sum * 0.125f));
      }
    if (f == KVK_Q8_0) dot_block_matrix(KVK_Q8_0, w, rows, rb, nb, x, xs8, beta, y);
    else if (f == KVK_Q4_0) dot_block_matrix(KVK_Q4_0, w, rows, rb, nb, x, xs8, beta, y);
    else dot_block_matrix(KVK_Q4_1, w, rows, rb, nb, x, xs8, beta, y);
    return;
  }
  if ((f == KVK_F16 || f == KVK_BF16) && cols % 8 == 0) {
    if (f == KVK_F16) dot_half_matrix(KVK_F16, w, rows, rb, cols, x, beta, y);
    else dot_half_matrix(KVK_BF16, w, rows, rb, cols, x, beta, y);
    return;
  }
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *s = (const uint8_t *)w + r * rb;
    float dot;
    switch (f) {
      case KVK_F32:
        dot = dot_f32((const float *)s, x, cols);
        break;
      case KVK_F16:
      case KVK_BF16: {
        __m256 acc = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 8 <= cols; i += 8)
          acc = _mm256_fmadd_ps(f == KVK_F16 ? f16x8(s + 2 * i) : bf16x8(s + 2 * i),
                                _mm256_loadu_ps(x + i), acc);
        dot = hsum(acc);
        if (i < cols) {
          kvk_dequantize_row_portable(f, s + 2 * i, cols - i, scratch);
          for (size_t j = 0; j < cols - i; j++) dot += scratch[j] * x[i + j];
        }
        break;
      }
      default:
        kvk_dequantize_row_portable(f, s, cols, scratch);
        dot = dot_f32(scratch, x, cols);
        break;
    }
    y[r] = beta == 0 ? dot : dot + beta * y[r];
  }
}

// MARK: - Integer matrix-vector (x quantized to int8 blocks; see kvk_matvec_int8)

/// x quantized as the portable reference does it (`kvk_quantize_block_avx2`: the same bytes).
TARGET static kvk_xq quantize_x(const float *x, size_t cols, float *scratch) {
  const kvk_xq q = kvk_xq_layout(scratch, cols);
  for (size_t b = 0; b < q.nb; b++) {
    float dx;
    const int32_t s = kvk_quantize_block_avx2(x + 32 * b, q.xq + 32 * b, &dx);
    kvk_xq_store_block(q, b, dx, s);
  }
  kvk_xq_pad(q);
  return q;
}

/// Eight int32 lanes summing to Σ q·xq over one block (Q4_0: Σ (q-8)·xq). VPMADDUBSW's pairs
/// cannot saturate: nibbles give 2·15·127, and Q8_0 goes as |w| (≤ 128, w = -128 included)
/// times xq with w's sign, 2·128·127 = 32512 < 32767.
TARGET static inline __m256i block_dot_i32(kvk_format f, const uint8_t *blk, __m256i xq,
                                           __m256i ns) {
  const __m256i ones = _mm256_set1_epi16(1);
  if (f == KVK_Q8_0) {
    const __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w));
    return _mm256_madd_epi16(p, ones);
  }
  const __m128i q = _mm_loadu_si128((const __m128i *)(blk + (f == KVK_Q4_1 ? 4 : 2)));
  const __m256i n = _mm256_and_si256(
      _mm256_insertf128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1),
      _mm256_set1_epi8(0x0F));
  const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(n, xq), ones);
  return f == KVK_Q4_0 ? _mm256_add_epi32(s, ns) : s;
}

/// `nr` (1-4) rows side by side, sharing each block's xq and patterns.
TARGET __attribute__((always_inline)) static inline void int8_rows(
    kvk_format f, const uint8_t *s, size_t rb, int nr, kvk_xq q, float *out) {
  __m256 acc[4];
  for (int i = 0; i < nr; i++) acc[i] = _mm256_setzero_ps();
  const size_t bytes = f == KVK_Q8_0 ? 34 : f == KVK_Q4_0 ? 18 : 20;
  for (size_t b = 0; b < q.nb; b++) {
    const __m256i xq = _mm256_loadu_si256((const __m256i *)(q.xq + 32 * b));
    const __m256i ns = _mm256_loadu_si256((const __m256i *)(q.ns + 8 * b));
    const __m256 dx = _mm256_loadu_ps(q.dx + 8 * b);
    for (int i = 0; i < nr; i++) {
      const uint8_t *blk = s + i * rb + b * bytes;
      const __m256 dot = _mm256_cvtepi32_ps(block_dot_i32(f, blk, xq, ns));
      acc[i] = _mm256_fmadd_ps(dot, _mm256_mul_ps(_mm256_set1_ps(half(blk)), dx), acc[i]);
      if (f == KVK_Q4_1)
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(half(blk + 2)), _mm256_loadu_ps(q.ms + 8 * b),
                                 acc[i]);
    }
  }
  for (int i = 0; i < nr; i++) out[i] = hsum(acc[i]);
}

TARGET __attribute__((always_inline)) static inline void int8_matrix(
    kvk_format f, const uint8_t *w, size_t rows, size_t rb, kvk_xq q, float beta, float *y) {
  float dots[4];
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    int8_rows(f, w + r * rb, rb, 4, q, dots);
    for (int i = 0; i < 4; i++) y[r + i] = beta == 0 ? dots[i] : dots[i] + beta * y[r + i];
  }
  for (; r < rows; r++) {
    int8_rows(f, w + r * rb, rb, 1, q, dots);
    y[r] = beta == 0 ? dots[0] : dots[0] + beta * y[r];
  }
}

TARGET void kvk_matvec_int8_avx2(kvk_format f, const void *w, size_t rows, size_t cols,
                                 const float *x, float beta, float *y, float *scratch) {
  const kvk_xq q = quantize_x(x, cols, scratch);
  const size_t rb = kvk_row_bytes(f, cols);
  if (f == KVK_Q8_0) int8_matrix(KVK_Q8_0, w, rows, rb, q, beta, y);
  else if (f == KVK_Q4_0) int8_matrix(KVK_Q4_0, w, rows, rb, q, beta, y);
  else int8_matrix(KVK_Q4_1, w, rows, rb, q, beta, y);
}
#endif

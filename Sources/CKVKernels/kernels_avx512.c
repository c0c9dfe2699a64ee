// AVX-512 forms (F, BW, VL, DQ with FMA and F16C), compiled for that instruction set by the
// function attribute alone and called only after `kvk_isa_supported(KVK_AVX512)`.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

static inline uint16_t load16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

TARGET static inline float half(const uint8_t *p) { return _cvtsh_ss(load16(p)); }

/// The 32 nibbles of a Q4 block as floats: elements 0-15 (low nibbles), 16-31 (high nibbles).
TARGET static inline void nibbles(const uint8_t *qs, __m512 *lo, __m512 *hi) {
  const __m128i q = _mm_loadu_si128((const __m128i *)qs);
  const __m128i mask = _mm_set1_epi8(0x0F);
  *lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, mask)));
  *hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), mask)));
}

TARGET static inline void int8s(const uint8_t *qs, __m512 *lo, __m512 *hi) {
  *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qs)));
  *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qs + 16))));
}

TARGET static inline __m512 bf16x16(const uint8_t *p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

TARGET static inline __m512 f16x16(const uint8_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

TARGET void kvk_dequantize_rows_avx512(kvk_format f, const void *src, size_t rows, size_t cols,
                                       float *dst, size_t ldd) {
  const size_t rb = kvk_row_bytes(f, cols), nb = cols / 32;
  const __m512 eight = _mm512_set1_ps(8);
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *s = (const uint8_t *)src + r * rb;
    float *y = dst + r * ldd;
    size_t i = 0;
    switch (f) {
      case KVK_F16:
        for (; i + 16 <= cols; i += 16) _mm512_storeu_ps(y + i, f16x16(s + 2 * i));
        for (; i < cols; i++) y[i] = kvk_half_to_float(load16(s + 2 * i));
        break;
      case KVK_BF16:
        for (; i + 16 <= cols; i += 16) _mm512_storeu_ps(y + i, bf16x16(s + 2 * i));
        if (i < cols) kvk_dequantize_row_portable(f, s + 2 * i, cols - i, y + i);
        break;
      case KVK_Q8_0:
        for (size_t b = 0; b < nb; b++, s += 34, y += 32) {
          const __m512 d = _mm512_set1_ps(half(s));
          __m512 lo, hi;
          int8s(s + 2, &lo, &hi);
          _mm512_storeu_ps(y, _mm512_mul_ps(lo, d));
          _mm512_storeu_ps(y + 16, _mm512_mul_ps(hi, d));
        }
        break;
      case KVK_Q4_0:
        for (size_t b = 0; b < nb; b++, s += 18, y += 32) {
          const __m512 d = _mm512_set1_ps(half(s));
          __m512 lo, hi;
          nibbles(s + 2, &lo, &hi);
          _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_sub_ps(lo, eight), d));
          _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_sub_ps(hi, eight), d));
        }
        break;
      case KVK_Q4_1:
        for (size_t b = 0; b < nb; b++, s += 20, y += 32) {
          const __m512 d = _mm512_set1_ps(half(s)), m = _mm512_set1_ps(half(s + 2));
          __m512 lo, hi;
          nibbles(s + 4, &lo, &hi);
          _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(lo, d), m));
          _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_mul_ps(hi, d), m));
        }
        break;
      default:
        kvk_dequantize_row_portable(f, s, cols, y);
        break;
    }
  }
}

/// Σ a·x over n floats: 16-lane partial sums, a masked tail.
TARGET static inline float dot_f32(const float *a, const float *x, size_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(x + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, x + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/// The dots of `nr` (1-4) consecutive Q8_0/Q4_0/Q4_1 rows with x, interleaved block by block
/// so that the rows' accumulations run side by side and x is loaded once for all of them.
/// `xsum` (Q4_1 only) holds each block's Σx: Σ (q·d + m)·x = d·Σ q·x + m·Σ x.
TARGET __attribute__((always_inline)) static inline void dot_block_rows(
    kvk_format f, const uint8_t *s, size_t rb, int nr, size_t nb, const float *x,
    const float *xsum, float *out) {
  __m512 acc[4];
  float mins[4];
  for (int i = 0; i < nr; i++) { acc[i] = _mm512_setzero_ps(); mins[i] = 0; }
  const size_t bytes = f == KVK_Q8_0 ? 34 : f == KVK_Q4_0 ? 18 : 20;
  const __m512 eight = _mm512_set1_ps(8);
  for (size_t b = 0; b < nb; b++) {
    const __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
    for (int i = 0; i < nr; i++) {
      const uint8_t *blk = s + i * rb + b * bytes;
      __m512 lo, hi;
      if (f == KVK_Q8_0) {
        int8s(blk + 2, &lo, &hi);
      } else if (f == KVK_Q4_0) {
        nibbles(blk + 2, &lo, &hi);
        lo = _mm512_sub_ps(lo, eight);
        hi = _mm512_sub_ps(hi, eight);
      } else {
        nibbles(blk + 4, &lo, &hi);
        mins[i] += half(blk + 2) * xsum[b];
      }
      const __m512 t = _mm512_fmadd_ps(lo, x0, _mm512_mul_ps(hi, x1));
      acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(half(blk)), t, acc[i]);
    }
  }
  for (int i = 0; i < nr; i++) out[i] = _mm512_reduce_add_ps(acc[i]) + mins[i];
}

/// Every row of a Q8_0/Q4_0/Q4_1 matrix, four at a time.
TARGET __attribute__((always_inline)) static inline void dot_block_matrix(
    kvk_format f, const uint8_t *w, size_t rows, size_t rb, size_t nb, const float *x,
    const float *xsum, float *dots) {
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) dot_block_rows(f, w + r * rb, rb, 4, nb, x, xsum, dots + r);
  for (; r < rows; r++) dot_block_rows(f, w + r * rb, rb, 1, nb, x, xsum, dots + r);
}

TARGET void kvk_matvec_avx512(kvk_format f, const void *w, size_t rows, size_t cols,
                              const float *x, float beta, float *y, float *scratch) {
  const size_t rb = kvk_row_bytes(f, cols), nb = cols / 32;
  if (f == KVK_Q8_0 || f == KVK_Q4_0 || f == KVK_Q4_1) {
    float *xsum = scratch + cols;
    if (f == KVK_Q4_1)
      for (size_t b = 0; b < nb; b++)
        xsum[b] = _mm512_reduce_add_ps(
            _mm512_add_ps(_mm512_loadu_ps(x + 32 * b), _mm512_loadu_ps(x + 32 * b + 16)));
    // The dots go to `scratch` first (y may be added to), then into y.
    for (size_t done = 0; done < rows; done += cols) {
      const size_t n = rows - done < cols ? rows - done : cols;
      const uint8_t *base = (const uint8_t *)w + done * rb;
      if (f == KVK_Q8_0) dot_block_matrix(KVK_Q8_0, base, n, rb, nb, x, xsum, scratch);
      else if (f == KVK_Q4_0) dot_block_matrix(KVK_Q4_0, base, n, rb, nb, x, xsum, scratch);
      else dot_block_matrix(KVK_Q4_1, base, n, rb, nb, x, xsum, scratch);
      for (size_t r = 0; r < n; r++)
        y[done + r] = beta == 0 ? scratch[r] : scratch[r] + beta * y[done + r];
    }
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
        __m512 acc = _mm512_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= cols; i += 16)
          acc = _mm512_fmadd_ps(f == KVK_F16 ? f16x16(s + 2 * i) : bf16x16(s + 2 * i),
                                _mm512_loadu_ps(x + i), acc);
        dot = _mm512_reduce_add_ps(acc);
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
#endif

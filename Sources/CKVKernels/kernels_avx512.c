// AVX-512 forms (F, BW, VL, DQ with FMA and F16C), compiled for that instruction set by the
// function attribute alone and called only after `kvk_isa_supported(KVK_AVX512)`.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

/// Rows ahead whose bytes the decode kernels ask the caches for while they read a row's: each
/// step reads under 64 bytes of a row, so every cache line of the row that far ahead is asked
/// for once. Without it the loads of the weights were where the samples of a decoded token
/// fell (perf), the hardware prefetcher trailing the rows read side by side.
enum { PREFETCH_ROWS = 8 };


TARGET static inline float half(const uint8_t *p) { return _cvtsh_ss(kvk_load16(p)); }

/// The 32 nibbles of a Q4 block as floats: elements 0-15 (low nibbles), 16-31 (high nibbles).
/// Each byte widened to a 32-bit lane picks its float from a table of 0-15 (VPERMPS reads an
/// index's low 4 bits only: the low nibble as it is, the high one after a shift), cheaper
/// than masking and converting integers to floats; the values are the same.
TARGET static inline void nibbles(const uint8_t *qs, __m512 *lo, __m512 *hi) {
  const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qs));
  *lo = _mm512_permutexvar_ps(q, table);
  *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);
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
        for (; i < cols; i++) y[i] = kvk_half_to_float(kvk_load16(s + 2 * i));
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
/// so that the rows' accumulations run side by side and x is loaded once for all of them; each
/// block also prefetched `PREFETCH_ROWS` rows ahead.
/// `xsum` (Q4_1 only) holds each block's Σx: Σ (q·d + m)·x = d·Σ q·x + m·Σ x. The scales are
/// converted by F16C, not looked up in the 256 KiB table of every f16's float: the weights
/// streaming through the caches evict that table during a decoded token, and its lookups then
/// cost more than the conversions (decode 83.7 -> 88.3 tok/s, same binary otherwise).
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
      _mm_prefetch((const char *)(blk + PREFETCH_ROWS * rb), _MM_HINT_T0);
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

// MARK: - Integer matrix-vector with VPDPBUSD (x quantized to int8 blocks; see kvk_matvec_int8)

#define TARGET_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

/// x quantized as the portable reference does it: the same amax (exact), the same dx = amax/127
/// and the same correctly rounded x/dx, rounded to nearest even by CVTPS2DQ.
TARGET_VNNI static kvk_xq quantize_x(const float *x, size_t cols, float *scratch) {
  const kvk_xq q = kvk_xq_layout(scratch, cols);
  for (size_t b = 0; b < q.nb; b++) {
    const __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
    const float dx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 127.0f;
    __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512();
    if (dx != 0) {
      const __m512 d = _mm512_set1_ps(dx);
      i0 = _mm512_cvtps_epi32(_mm512_div_ps(v0, d));
      i1 = _mm512_cvtps_epi32(_mm512_div_ps(v1, d));
    }
    _mm_storeu_si128((__m128i *)(q.xq + 32 * b), _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128((__m128i *)(q.xq + 32 * b + 16), _mm512_cvtepi32_epi8(i1));
    kvk_xq_store_block(q, b, dx, _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)));
  }
  kvk_xq_pad(q);
  return q;
}

/// Blocks b and b+1 of a row (`two` = 0: block b only, the other half zero) as 64 bytes in x's
/// order: Q4 as [low nibbles b | high nibbles b | low b+1 | high b+1] (unsigned), Q8_0 as its
/// int8s. `xq` is made Q8_0's signed xq·sign(w) when w goes as |w|.
TARGET_VNNI static inline __m512i pair_weights(kvk_format f, const uint8_t *b0, const uint8_t *b1,
                                               int two, __m512i *xq) {
  if (f == KVK_Q8_0) {
    __m512i w = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2)));
    if (two) w = _mm512_inserti64x4(w, _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
    const __mmask64 neg = _mm512_movepi8_mask(w);
    *xq = _mm512_mask_sub_epi8(*xq, neg, _mm512_setzero_si512(), *xq);
    return _mm512_abs_epi8(w);  // -128 becomes 0x80, 128 as unsigned
  }
  const size_t h = f == KVK_Q4_1 ? 4 : 2;
  __m256i q = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + h)));
  if (two) q = _mm256_inserti128_si256(q, _mm_loadu_si128((const __m128i *)(b1 + h)), 1);
  // [q0 | q0 | q1 | q1], the odd 128-bit lanes shifted right by 4: their high nibbles.
  const __m512i qq = _mm512_shuffle_i64x2(_mm512_castsi256_si512(q), _mm512_castsi256_si512(q),
                                          _MM_SHUFFLE(1, 1, 0, 0));
  const __m512i n = _mm512_mask_srli_epi16(qq, 0xFF00FF00u, qq, 4);
  return _mm512_and_si512(n, _mm512_set1_epi8(0x0F));
}

/// The two blocks' f16 scales d (and Q4_1's m) as 16 lanes: [d_b ×8 | d_b+1 ×8].
TARGET_VNNI static inline void pair_scales(kvk_format f, const uint8_t *b0, const uint8_t *b1,
                                           int two, __m512 *d, __m512 *m) {
  if (f == KVK_Q4_1) {
    uint32_t h0, h1 = 0;
    memcpy(&h0, b0, 4);
    if (two) memcpy(&h1, b1, 4);
    const __m512 v = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_setr_epi32((int)h0, (int)h1, 0, 0)));
    *d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2), v);
    *m = _mm512_permutexvar_ps(_mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3), v);
    return;
  }
  const uint32_t h = (uint32_t)kvk_load16(b0) | (two ? (uint32_t)kvk_load16(b1) << 16 : 0);
  const __m512 v = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h)));
  *d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), v);
}

/// `nr` (1-4) rows side by side, two blocks per step, sharing xq and the patterns; a step also
/// prefetches the same bytes `PREFETCH_ROWS` rows ahead (see there).
TARGET_VNNI __attribute__((always_inline)) static inline void vnni_rows(
    kvk_format f, const uint8_t *s, size_t rb, int nr, kvk_xq q, float *out) {
  __m512 acc[4];
  for (int i = 0; i < nr; i++) acc[i] = _mm512_setzero_ps();
  const size_t bytes = f == KVK_Q8_0 ? 34 : f == KVK_Q4_0 ? 18 : 20;
  for (size_t b = 0; b < q.nb; b += 2) {
    const int two = b + 1 < q.nb;
    const __m512i xq = _mm512_loadu_si512(q.xq + 32 * b);
    const __m512i init = f == KVK_Q4_0 ? _mm512_loadu_si512(q.ns + 8 * b) : _mm512_setzero_si512();
    const __m512 dx = _mm512_loadu_ps(q.dx + 8 * b);
    for (int i = 0; i < nr; i++) {
      const uint8_t *b0 = s + i * rb + b * bytes, *b1 = b0 + bytes;
      _mm_prefetch((const char *)(b0 + PREFETCH_ROWS * rb), _MM_HINT_T0);
      __m512i x = xq;
      const __m512i w = pair_weights(f, b0, b1, two, &x);
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, w, x));
      __m512 d, m;
      pair_scales(f, b0, b1, two, &d, &m);
      acc[i] = _mm512_fmadd_ps(dot, _mm512_mul_ps(d, dx), acc[i]);
      if (f == KVK_Q4_1) acc[i] = _mm512_fmadd_ps(m, _mm512_loadu_ps(q.ms + 8 * b), acc[i]);
    }
  }
  for (int i = 0; i < nr; i++) out[i] = _mm512_reduce_add_ps(acc[i]);
}

TARGET_VNNI __attribute__((always_inline)) static inline void vnni_matrix(
    kvk_format f, const uint8_t *w, size_t rows, size_t rb, kvk_xq q, float beta, float *y) {
  float dots[4];
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    vnni_rows(f, w + r * rb, rb, 4, q, dots);
    for (int i = 0; i < 4; i++) y[r + i] = beta == 0 ? dots[i] : dots[i] + beta * y[r + i];
  }
  for (; r < rows; r++) {
    vnni_rows(f, w + r * rb, rb, 1, q, dots);
    y[r] = beta == 0 ? dots[0] : dots[0] + beta * y[r];
  }
}

TARGET_VNNI void kvk_matvec_int8_vnni(kvk_format f, const void *w, size_t rows, size_t cols,
                                      const float *x, float beta, float *y, float *scratch) {
  const kvk_xq q = quantize_x(x, cols, scratch);
  const size_t rb = kvk_row_bytes(f, cols);
  if (f == KVK_Q8_0) vnni_matrix(KVK_Q8_0, w, rows, rb, q, beta, y);
  else if (f == KVK_Q4_0) vnni_matrix(KVK_Q4_0, w, rows, rb, q, beta, y);
  else vnni_matrix(KVK_Q4_1, w, rows, rb, q, beta, y);
}
#endif

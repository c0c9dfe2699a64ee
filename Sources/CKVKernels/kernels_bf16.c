// The bfloat16 matrix product of the prefill (AVX512-BF16: vdpbf16ps multiplies pairs of
// bfloat16 and accumulates in float32, twice the multiply-adds of a float32 FMA per
// instruction). Weights are packed, tile by tile, into panels of 32 output features whose
// k-pairs are interleaved lane by lane; activations are rounded to bfloat16 once per product.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))

// NR features per panel, MR rows per register block, KC k-pairs per pass: a pass's panel slice
// (24 KiB) stays in L1 across all rows, and the rows' slice of A (m·1.5 KiB) in L2 across panels.
enum { NR = 32, MR = 8, KC = 192 };

size_t kvk_bf16_packed_count(size_t n, size_t k) {
  return (n + NR - 1) / NR * NR * ((k + 1) / 2 * 2);
}

size_t kvk_bf16_activation_count(size_t m, size_t k) { return m * ((k + 1) / 2 * 2); }

/// float32 → bfloat16, rounding to nearest even (NaN kept a NaN), as vcvtneps2bf16 does.
static inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

TARGET void kvk_bf16_pack_weights(kvk_format f, const void *w, size_t n, size_t k,
                                  uint16_t *packed, float *row) {
  const size_t pairs = (k + 1) / 2, rb = kvk_row_bytes(f, k);
  const size_t panels = (n + NR - 1) / NR;
  memset(packed, 0, panels * NR * pairs * 2 * sizeof(uint16_t));
  for (size_t r = 0; r < n; r++) {
    kvk_dequantize_rows(KVK_AVX512, f, (const uint8_t *)w + r * rb, 1, k, row, k);
    uint16_t *dst = packed + (r / NR) * NR * pairs * 2 + (r % NR) * 2;
    for (size_t c = 0; c < k; c++) dst[(c / 2) * NR * 2 + (c & 1)] = to_bf16(row[c]);
  }
}

TARGET void kvk_bf16_pack_strided(const float *w, size_t n, size_t k, size_t row_stride,
                                  size_t col_stride, uint16_t *packed) {
  const size_t pairs = (k + 1) / 2;
  const size_t panels = (n + NR - 1) / NR;
  memset(packed, 0, panels * NR * pairs * 2 * sizeof(uint16_t));
  size_t r0 = 0, c0 = 0;  // what the vector loops leave to the scalar one: rows >= r0 or cols >= c0
  if (col_stride == 1) {
    // Rows contiguous (K): 16 pairs of a row converted at once, each stored at its panel slot.
    c0 = k / 32 * 32;
    for (size_t r = 0; r < n; r++) {
      const float *src = w + r * row_stride;
      uint32_t *dst = (uint32_t *)(packed + (r / NR) * NR * pairs * 2) + r % NR;
      for (size_t c = 0; c < c0; c += 32) {
        uint32_t t[16];
        _mm512_storeu_si512((void *)t, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + c + 16),
                                                                    _mm512_loadu_ps(src + c)));
        for (int q = 0; q < 16; q++) dst[(c / 2 + q) * NR] = t[q];
      }
    }
    r0 = n;
  } else if (row_stride == 1) {
    // Columns contiguous (Vᵀ: V's rows are W's columns): two columns' 16 rows interleaved into
    // 16 pairs, which is the panel's layout.
    r0 = n / 16 * 16;
    for (size_t c = 0; c + 1 < k; c += 2) {
      const float *a = w + c * col_stride, *b = a + col_stride;
      for (size_t r = 0; r < r0; r += 16) {
        const __m256i x = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(a + r));
        const __m256i y = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(b + r));
        const __m256i lo = _mm256_unpacklo_epi16(x, y), hi = _mm256_unpackhi_epi16(x, y);
        uint16_t *dst = packed + (r / NR) * NR * pairs * 2 + (c / 2) * NR * 2 + (r % NR) * 2;
        _mm256_storeu_si256((__m256i *)dst, _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(dst + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
      }
    }
    c0 = k / 2 * 2;
  }
  for (size_t r = 0; r < n; r++) {
    const float *src = w + r * row_stride;
    uint16_t *dst = packed + (r / NR) * NR * pairs * 2 + (r % NR) * 2;
    for (size_t c = r < r0 ? c0 : 0; c < k; c++)
      dst[(c / 2) * NR * 2 + (c & 1)] = to_bf16(src[c * col_stride]);
  }
}

TARGET void kvk_bf16_pack_activations(const float *a, size_t m, size_t k, size_t lda,
                                      uint16_t *out) {
  const size_t kp = (k + 1) / 2 * 2;
  for (size_t i = 0; i < m; i++) {
    const float *src = a + i * lda;
    uint16_t *dst = out + i * kp;
    size_t c = 0;
    for (; c + 32 <= k; c += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + c + 16), _mm512_loadu_ps(src + c));
      _mm512_storeu_si512((void *)(dst + c), (__m512i)v);
    }
    for (; c < k; c++) dst[c] = to_bf16(src[c]);
    if (k & 1) dst[k] = 0;
  }
}

/// C[i][0..nr) = beta·C + Σ_p A[i][p]·B[p][lane] for `mr` rows (≤ MR) of one panel, over
/// `count` k-pairs (A's rows `pairs` apart).
TARGET __attribute__((always_inline)) static inline void micro(
    int mr, const uint32_t *a, size_t pairs, size_t count, const uint16_t *panel, float *c,
    size_t ldc, size_t nr, float beta) {
  __m512 acc[MR][2];
  for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (size_t p = 0; p < count; p++) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(panel + p * NR * 2));
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(panel + p * NR * 2 + 32));
    for (int i = 0; i < mr; i++) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[i * pairs + p]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
    }
  }
  const __mmask16 k0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
  const __mmask16 k1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
  for (int i = 0; i < mr; i++) {
    float *row = c + i * ldc;
    __m512 v0 = acc[i][0], v1 = acc[i][1];
    if (beta != 0) {
      v0 = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(k0, row), v0);
      v1 = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(k1, row + 16), v1);
    }
    _mm512_mask_storeu_ps(row, k0, v0);
    _mm512_mask_storeu_ps(row + 16, k1, v1);
  }
}

TARGET void kvk_bf16_gemm(const uint16_t *a, size_t m, size_t k, const uint16_t *packed,
                          size_t n, size_t panel_first, size_t panel_count, float beta, float *c,
                          size_t ldc) {
  const size_t pairs = (k + 1) / 2;
  for (size_t p0 = 0; p0 < pairs; p0 += KC) {
    const size_t count = pairs - p0 < KC ? pairs - p0 : KC;
    const float b = p0 == 0 ? beta : 1;  // later passes add to what the first wrote
    const uint32_t *a32 = (const uint32_t *)a + p0;
    for (size_t pi = panel_first; pi < panel_first + panel_count; pi++) {
      const uint16_t *panel = packed + pi * NR * pairs * 2 + p0 * NR * 2;
      const size_t col = pi * NR, nr = n - col < NR ? n - col : NR;
      size_t i = 0;
      for (; i + MR <= m; i += MR)
        micro(MR, a32 + i * pairs, pairs, count, panel, c + i * ldc + col, ldc, nr, b);
#define REST(R) micro(R, a32 + i * pairs, pairs, count, panel, c + i * ldc + col, ldc, nr, b)
      switch (m - i) {
        case 7: REST(7); break;
        case 6: REST(6); break;
        case 5: REST(5); break;
        case 4: REST(4); break;
        case 3: REST(3); break;
        case 2: REST(2); break;
        case 1: REST(1); break;
        default: break;
      }
#undef REST
    }
  }
}
#endif

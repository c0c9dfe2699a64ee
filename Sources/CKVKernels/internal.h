// Shared between the kernel files; not part of the module's interface.
#ifndef KVKERNELS_INTERNAL_H
#define KVKERNELS_INTERNAL_H
#include <string.h>

#include "kvkernels.h"

size_t kvk_row_bytes(kvk_format f, size_t cols);
void kvk_dequantize_row_portable(kvk_format f, const void *src, size_t cols, float *y);
/// Every f16's float (`kvk_half_to_float` of each of the 65536), filled on the first call: a
/// block's scale read through it is an integer load and a broadcast, no conversion.
const float *kvk_half_table(void);

void kvk_dequantize_rows_avx2(kvk_format f, const void *src, size_t rows, size_t cols,
                              float *dst, size_t ldd);
void kvk_matvec_avx2(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                     float beta, float *y, float *scratch);
void kvk_dequantize_rows_avx512(kvk_format f, const void *src, size_t rows, size_t cols,
                                float *dst, size_t ldd);
void kvk_matvec_avx512(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                       float beta, float *y, float *scratch);

/// x quantized for the integer kernels, in `scratch`: `nbp` blocks (the blocks of x rounded up
/// to an even count, the extra one zero), each with 32 int8 `xq` and 8 lanes of each of `dx`
/// (the block's scale), `ms` (dx·Σxq/8, so 8 lanes sum to dx·Σxq: Q4_1's m term) and `ns`
/// (-Σxq, so 8 lanes sum to -8·Σxq: Q4_0's offset). Lane patterns of 8 per block serve the
/// AVX2 kernel (one block per vector) and AVX-512 (two blocks per vector) alike.
typedef struct {
  float *dx, *ms;
  int32_t *ns;
  int8_t *xq;
  size_t nb, nbp;
} kvk_xq;

static inline kvk_xq kvk_xq_layout(float *scratch, size_t cols) {
  kvk_xq q;
  q.nb = cols / 32;
  q.nbp = (q.nb + 1) & ~(size_t)1;
  q.dx = scratch;
  q.ms = scratch + 8 * q.nbp;
  q.ns = (int32_t *)(scratch + 16 * q.nbp);
  q.xq = (int8_t *)(scratch + 24 * q.nbp);
  return q;
}

/// Floats of scratch `kvk_xq_layout` takes.
static inline size_t kvk_xq_floats(size_t cols) { return 32 * ((cols / 32 + 1) & ~(size_t)1); }

/// Stores block b's patterns (amax its largest |x|, S its Σxq; xq already stored).
static inline void kvk_xq_store_block(kvk_xq q, size_t b, float dx, int32_t s) {
  const float ms = dx * (float)s * 0.125f;
  for (int l = 0; l < 8; l++) {
    q.dx[8 * b + l] = dx;
    q.ms[8 * b + l] = ms;
    q.ns[8 * b + l] = -s;
  }
}

/// A little-endian 16-bit field at any alignment (a block's f16 scale).
static inline uint16_t kvk_load16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

/// x/dx rounded to the nearest integer, ties to even (|v| < 2^22: adding and removing 1.5·2^23
/// rounds in the default mode, as CVTPS2DQ does), so every path quantizes x identically.
static inline int32_t kvk_round_even(float v) { return (int32_t)((v + 0x1.8p23f) - 0x1.8p23f); }

/// One block of 32 values of x as every integer kernel quantizes it (decode's and prefill's):
/// dx = max|x|/127, xq = x/dx rounded to nearest even (0 where dx is 0). Stores the 32 xq and
/// dx; returns Σxq. The portable form.
static inline int32_t kvk_quantize_block(const float *x, int8_t *xq, float *dx) {
  float amax = 0;
  for (int j = 0; j < 32; j++) {
    const float a = x[j] < 0 ? -x[j] : x[j];
    if (a > amax) amax = a;
  }
  const float d = amax / 127.0f;
  int32_t s = 0;
  for (int j = 0; j < 32; j++) {
    const int32_t v = d != 0 ? kvk_round_even(x[j] / d) : 0;
    xq[j] = (int8_t)v;
    s += v;
  }
  *dx = d;
  return s;
}

/// Σ q·xq of one Q8_0, Q4_0 or Q4_1 block (`blk`, ggml's layout) against 32 quantized values
/// of x whose sum is `sxq` (Q4_0: Σ (q − 8)·xq = Σ q·xq − 8·sxq): exact in int32. The portable
/// form every integer kernel's sums are checked against.
static inline int32_t kvk_block_isum(kvk_format f, const uint8_t *blk, const int8_t *xq,
                                     int32_t sxq) {
  int32_t isum = 0;
  if (f == KVK_Q8_0) {
    const int8_t *qs = (const int8_t *)(blk + 2);
    for (int j = 0; j < 32; j++) isum += (int32_t)qs[j] * xq[j];
    return isum;
  }
  const uint8_t *qs = blk + (f == KVK_Q4_1 ? 4 : 2);
  for (int j = 0; j < 16; j++)
    isum += (int32_t)(qs[j] & 0x0F) * xq[j] + (int32_t)(qs[j] >> 4) * xq[j + 16];
  return f == KVK_Q4_0 ? isum - 8 * sxq : isum;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static inline int32_t kvk_hsum_i32_avx2(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

/// `kvk_quantize_block` on AVX2: the same amax (exact), the same dx and the same correctly
/// rounded x/dx, rounded to nearest even by CVTPS2DQ: the same bytes.
__attribute__((target("avx2"))) static inline int32_t kvk_quantize_block_avx2(
    const float *x, int8_t *xq, float *dx) {
  const __m256 signbit = _mm256_set1_ps(-0.0f);
  __m256 v[4], m = _mm256_setzero_ps();
  for (int k = 0; k < 4; k++) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    m = _mm256_max_ps(m, _mm256_andnot_ps(signbit, v[k]));
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  const float d = _mm_cvtss_f32(h) / 127.0f;
  __m256i i[4];
  for (int k = 0; k < 4; k++)
    i[k] = d != 0 ? _mm256_cvtps_epi32(_mm256_div_ps(v[k], _mm256_set1_ps(d)))
                  : _mm256_setzero_si256();
  const int32_t s = kvk_hsum_i32_avx2(
      _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3])));
  // Packing interleaves 128-bit lanes; the permutation restores the order.
  const __m256i p16 =
      _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  _mm256_storeu_si256((__m256i *)xq,
                      _mm256_permutevar8x32_epi32(p16, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  *dx = d;
  return s;
}
#endif

static inline void kvk_xq_pad(kvk_xq q) {
  for (size_t b = q.nb; b < q.nbp; b++) {
    for (int j = 0; j < 32; j++) q.xq[32 * b + j] = 0;
    kvk_xq_store_block(q, b, 0, 0);
  }
}

void kvk_matvec_int8_avx2(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                          float beta, float *y, float *scratch);
void kvk_matvec_int8_vnni(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                          float beta, float *y, float *scratch);
#endif

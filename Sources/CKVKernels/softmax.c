// The softmax's two passes over a row of scores (the maximum; e^(x - shift) in place with its
// sum), in a portable form of 8 lanes and AVX2 (8 lanes) and AVX-512 (16 lanes) forms.
//
// e^x is the same computation on every path and for every element, tail included: Cody-Waite
// range reduction and Cephes' degree-6 polynomial, each product and sum rounded on its own (no
// fused multiply-add): KVTensor's `FastMath.exp` formula (which agrees within an ulp: Swift
// rounds some of its decimal constants through an extended type). The portable and AVX2 paths
// add their lanes alike (8 lanes, then halves, quarters, pairs), so they give the same results
// bit for bit; AVX-512 accumulates 16 lanes and folds them to 8 first.
#include "vexp.h"

static float max_portable(const float *x, size_t n) {
  float m[8];
  for (int l = 0; l < 8; l++) m[l] = -__builtin_inff();
  for (size_t i = 0; i < n; i++) {
    if (x[i] > m[i % 8]) m[i % 8] = x[i];
  }
  return fold8_max(m);
}

static float exp_shift_sum_portable(float *x, size_t n, float shift) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i < n; i++) {
    const float e = exp_lane(x[i] - shift);
    x[i] = e;
    acc[i % 8] += e;
  }
  return fold8_sum(acc);
}

#if defined(__x86_64__)
AVX2 static inline __m256i tail_mask8(size_t n) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lanes);
}

AVX2 static float max_avx2(const float *x, size_t n) {
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    m = _mm256_blendv_ps(m, v, _mm256_cmp_ps(v, m, _CMP_GT_OQ));
  }
  if (i < n) {
    const __m256i k = tail_mask8(n - i);
    const __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-__builtin_inff()),
                                      _mm256_maskload_ps(x + i, k), _mm256_castsi256_ps(k));
    m = _mm256_blendv_ps(m, v, _mm256_cmp_ps(v, m, _CMP_GT_OQ));
  }
  float a[8];
  _mm256_storeu_ps(a, m);
  return fold8_max(a);
}

AVX2 static float exp_shift_sum_avx2(float *x, size_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (i < n) {
    const __m256i k = tail_mask8(n - i);
    const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, k), s)),
                                   _mm256_castsi256_ps(k));
    _mm256_maskstore_ps(x + i, k, e);
    acc = _mm256_add_ps(acc, e);
  }
  float a[8];
  _mm256_storeu_ps(a, acc);
  return fold8_sum(a);
}

AVX512 static float max_avx512(const float *x, size_t n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    m = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ), v);
  }
  if (i < n) {
    const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-__builtin_inff()), k, x + i);
    m = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ), v);
  }
  float a[16], b[8];
  _mm512_storeu_ps(a, m);
  for (int l = 0; l < 8; l++) b[l] = a[l + 8] > a[l] ? a[l + 8] : a[l];
  return fold8_max(b);
}

AVX512 static float exp_shift_sum_avx512(float *x, size_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), s)));
    _mm512_mask_storeu_ps(x + i, k, e);
    acc = _mm512_add_ps(acc, e);
  }
  float a[16], b[8];
  _mm512_storeu_ps(a, acc);
  for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
  return fold8_sum(b);
}
#endif

float kvk_max(kvk_isa isa, const float *x, size_t n) {
#if defined(__x86_64__)
  if (isa >= KVK_AVX512 && kvk_isa_supported(KVK_AVX512)) return max_avx512(x, n);
  if (isa >= KVK_AVX2 && kvk_isa_supported(KVK_AVX2)) return max_avx2(x, n);
#endif
  (void)isa;
  return max_portable(x, n);
}

float kvk_exp_shift_sum(kvk_isa isa, float *x, size_t n, float shift) {
#if defined(__x86_64__)
  if (isa >= KVK_AVX512 && kvk_isa_supported(KVK_AVX512)) return exp_shift_sum_avx512(x, n, shift);
  if (isa >= KVK_AVX2 && kvk_isa_supported(KVK_AVX2)) return exp_shift_sum_avx2(x, n, shift);
#endif
  (void)isa;
  return exp_shift_sum_portable(x, n, shift);
}

// The softmax's two passes over a row of scores (the maximum; e^(x - shift) in place with its
// sum), in a portable form of 8 lanes and AVX2 (8 lanes) and AVX-512 (16 lanes) forms.
//
// e^x is the same computation on every path and for every element, tail included: Cody-Waite
// range reduction and Cephes' degree-6 polynomial, each product and sum rounded on its own (no
// fused multiply-add): KVTensor's `FastMath.exp` formula (which agrees within an ulp: Swift
// rounds some of its decimal constants through an extended type). The portable and AVX2 paths
// add their lanes alike (8 lanes, then halves, quarters, pairs), so they give the same results
// bit for bit; AVX-512 accumulates 16 lanes and folds them to 8 first.
#include "internal.h"

#define EXP_LOW -87.336544f
#define EXP_HIGH 88.37626f
#define MAGIC 12582912.0f

static inline float exp_lane(float x) {
  float xc = x < EXP_LOW ? EXP_LOW : x;
  xc = x > EXP_HIGH ? EXP_HIGH : xc;
  const float t = xc * 1.44269504f + MAGIC;
  const float n = t - MAGIC;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.1219444e-4f;
  float p = 1.98756915e-4f;
  p = p * r + 1.39819995e-3f;
  p = p * r + 8.3334519e-3f;
  p = p * r + 4.16657959e-2f;
  p = p * r + 1.66666555e-1f;
  p = p * r + 5.00000012e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t ti;
  __builtin_memcpy(&ti, &t, 4);
  const int32_t bits = (int32_t)((uint32_t)(ti - 0x4B400000 + 127) << 23);
  float scale;
  __builtin_memcpy(&scale, &bits, 4);
  float y = p * scale;
  if (x < EXP_LOW) y = 0;
  if (x > EXP_HIGH) y = __builtin_inff();
  return y;
}

static inline float fold8_sum(const float a[8]) {
  const float h0 = a[0] + a[4], h1 = a[1] + a[5], h2 = a[2] + a[6], h3 = a[3] + a[7];
  const float q0 = h0 + h2, q1 = h1 + h3;
  return q0 + q1;
}

static inline float fold8_max(const float a[8]) {
  float h[4], q[2];
  for (int l = 0; l < 4; l++) h[l] = a[l + 4] > a[l] ? a[l + 4] : a[l];
  for (int l = 0; l < 2; l++) q[l] = h[l + 2] > h[l] ? h[l + 2] : h[l];
  return q[1] > q[0] ? q[1] : q[0];
}

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
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

AVX2 static inline __m256 exp8(__m256 x) {
  const __m256 low = _mm256_set1_ps(EXP_LOW), high = _mm256_set1_ps(EXP_HIGH);
  const __m256 magic = _mm256_set1_ps(MAGIC);
  const __m256 below = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
  const __m256 above = _mm256_cmp_ps(x, high, _CMP_GT_OQ);
  __m256 xc = _mm256_blendv_ps(x, low, below);
  xc = _mm256_blendv_ps(xc, high, above);
  const __m256 t = _mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504f)), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_sub_ps(xc, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.1219444e-4f)));
  __m256 p = _mm256_set1_ps(1.98756915e-4f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.39819995e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.16657959e-2f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.66666555e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.00000012e-1f));
  p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1));
  const __m256i ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000));
  const __m256 scale =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(p, scale);
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), below);
  return _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), above);
}

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

AVX512 static inline __m512 exp16(__m512 x) {
  const __m512 low = _mm512_set1_ps(EXP_LOW), high = _mm512_set1_ps(EXP_HIGH);
  const __m512 magic = _mm512_set1_ps(MAGIC);
  const __mmask16 below = _mm512_cmp_ps_mask(x, low, _CMP_LT_OQ);
  const __mmask16 above = _mm512_cmp_ps_mask(x, high, _CMP_GT_OQ);
  __m512 xc = _mm512_mask_mov_ps(x, below, low);
  xc = _mm512_mask_mov_ps(xc, above, high);
  const __m512 t = _mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504f)), magic);
  const __m512 n = _mm512_sub_ps(t, magic);
  __m512 r = _mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.1219444e-4f)));
  __m512 p = _mm512_set1_ps(1.98756915e-4f);
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.39819995e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.16657959e-2f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.66666555e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.00000012e-1f));
  p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1));
  const __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000));
  const __m512 scale =
      _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23));
  __m512 y = _mm512_mul_ps(p, scale);
  y = _mm512_mask_mov_ps(y, below, _mm512_setzero_ps());
  return _mm512_mask_mov_ps(y, above, _mm512_set1_ps(__builtin_inff()));
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

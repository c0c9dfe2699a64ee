// e^x and lane folds shared by the softmax (softmax.c) and attention (attention.c) kernels:
// one formula for every path and element (see softmax.c), so both compute the same e^x.
#ifndef KVKERNELS_VEXP_H
#define KVKERNELS_VEXP_H
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

#endif
#endif

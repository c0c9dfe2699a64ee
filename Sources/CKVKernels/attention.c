// Attention for a few query rows (decode): scores, the online softmax and the weighted sum of
// values in one pass over the keys, with no packing. OpenBLAS's sgemm packs K and V for every
// call, which at one query row costs as much as the product itself. Portable, AVX2 and
// AVX-512 forms of the two products (q·k and Σ p·v); the softmax's passes are `kvk_max` and
// `kvk_exp_shift_sum`, so e^x is the same as everywhere else on the path.
#include "vexp.h"

/// Keys per block: a row's scores for one block live in `scores`.
#define BLOCK 64

// s[r·BLOCK + j] = scale·(q_r·k_j) for j < nk (nk <= BLOCK); 8 lanes, folded as fold8_sum.
static void dots_portable(const float *q, size_t rows, size_t d, const float *k, size_t ld,
                          size_t nk, float scale, float *s) {
  for (size_t r = 0; r < rows; r++) {
    for (size_t j = 0; j < nk; j++) {
      float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (size_t x = 0; x < d; x++) a[x % 8] += q[r * d + x] * k[j * ld + x];
      s[r * BLOCK + j] = scale * fold8_sum(a);
    }
  }
}

// acc = acc·c + Σ_j p[j]·v_j over j < nk, in key order.
static void axpys_portable(const float *p, size_t nk, const float *v, size_t ld, size_t d,
                           float c, float *acc) {
  for (size_t x = 0; x < d; x++) {
    float a = acc[x] * c;
    for (size_t j = 0; j < nk; j++) a += p[j] * v[j * ld + x];
    acc[x] = a;
  }
}

#if defined(__x86_64__)
// The eight sums of a[0..<8] as one vector, lane t = Σ a[t].
AVX2 static inline __m256 sum8x8(const __m256 a[8]) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 lo = _mm256_hadd_ps(h01, h23), hi = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
}

// d a multiple of 8: eight keys at a time, one accumulator each.
AVX2 static void dots_avx2(const float *q, size_t rows, size_t d, const float *k, size_t ld,
                           size_t nk, float scale, float *s) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (size_t r = 0; r < rows; r++) {
    const float *qr = q + r * d;
    for (size_t j0 = 0; j0 < nk; j0 += 8) {
      const size_t n = nk - j0 < 8 ? nk - j0 : 8;
      __m256 a[8];
      for (int t = 0; t < 8; t++) a[t] = _mm256_setzero_ps();
      for (size_t x = 0; x < d; x += 8) {
        const __m256 qv = _mm256_loadu_ps(qr + x);
        for (size_t t = 0; t < n; t++)
          a[t] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (j0 + t) * ld + x), a[t]);
      }
      _mm256_storeu_ps(s + r * BLOCK + j0, _mm256_mul_ps(sc, sum8x8(a)));
    }
  }
}

AVX2 static void axpys_avx2(const float *p, size_t nk, const float *v, size_t ld, size_t d,
                            float c, float *acc) {
  const __m256 cv = _mm256_set1_ps(c);
  size_t x = 0;
  for (; x + 32 <= d; x += 32) {
    __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(acc + x), cv);
    __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(acc + x + 8), cv);
    __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(acc + x + 16), cv);
    __m256 a3 = _mm256_mul_ps(_mm256_loadu_ps(acc + x + 24), cv);
    for (size_t j = 0; j < nk; j++) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      const float *vj = v + j * ld + x;
      a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a0);
      a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a1);
      a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), a2);
      a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), a3);
    }
    _mm256_storeu_ps(acc + x, a0);
    _mm256_storeu_ps(acc + x + 8, a1);
    _mm256_storeu_ps(acc + x + 16, a2);
    _mm256_storeu_ps(acc + x + 24, a3);
  }
  for (; x < d; x += 8) {
    __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + x), cv);
    for (size_t j = 0; j < nk; j++)
      a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + j * ld + x), a);
    _mm256_storeu_ps(acc + x, a);
  }
}

// d a multiple of 16: as dots_avx2 with 16-lane products, each folded to 8 lanes first.
AVX512 static void dots_avx512(const float *q, size_t rows, size_t d, const float *k,
                               size_t ld, size_t nk, float scale, float *s) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (size_t r = 0; r < rows; r++) {
    const float *qr = q + r * d;
    for (size_t j0 = 0; j0 < nk; j0 += 8) {
      const size_t n = nk - j0 < 8 ? nk - j0 : 8;
      __m512 a[8];
      for (int t = 0; t < 8; t++) a[t] = _mm512_setzero_ps();
      for (size_t x = 0; x < d; x += 16) {
        const __m512 qv = _mm512_loadu_ps(qr + x);
        for (size_t t = 0; t < n; t++)
          a[t] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k + (j0 + t) * ld + x), a[t]);
      }
      __m256 h[8];
      for (int t = 0; t < 8; t++)
        h[t] = _mm256_add_ps(_mm512_castps512_ps256(a[t]), _mm512_extractf32x8_ps(a[t], 1));
      _mm256_storeu_ps(s + r * BLOCK + j0, _mm256_mul_ps(sc, sum8x8(h)));
    }
  }
}

AVX512 static void axpys_avx512(const float *p, size_t nk, const float *v, size_t ld, size_t d,
                                float c, float *acc) {
  const __m512 cv = _mm512_set1_ps(c);
  size_t x = 0;
  for (; x + 64 <= d; x += 64) {
    __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(acc + x), cv);
    __m512 a1 = _mm512_mul_ps(_mm512_loadu_ps(acc + x + 16), cv);
    __m512 a2 = _mm512_mul_ps(_mm512_loadu_ps(acc + x + 32), cv);
    __m512 a3 = _mm512_mul_ps(_mm512_loadu_ps(acc + x + 48), cv);
    for (size_t j = 0; j < nk; j++) {
      const __m512 pj = _mm512_set1_ps(p[j]);
      const float *vj = v + j * ld + x;
      a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj), a0);
      a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16), a1);
      a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 32), a2);
      a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 48), a3);
    }
    _mm512_storeu_ps(acc + x, a0);
    _mm512_storeu_ps(acc + x + 16, a1);
    _mm512_storeu_ps(acc + x + 32, a2);
    _mm512_storeu_ps(acc + x + 48, a3);
  }
  for (; x < d; x += 16) {
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(acc + x), cv);
    for (size_t j = 0; j < nk; j++)
      a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_loadu_ps(v + j * ld + x), a);
    _mm512_storeu_ps(acc + x, a);
  }
}
#endif

typedef void (*dots_fn)(const float *, size_t, size_t, const float *, size_t, size_t, float,
                        float *);
typedef void (*axpys_fn)(const float *, size_t, const float *, size_t, size_t, float, float *);

void kvk_attend(kvk_isa isa, const float *q, size_t rows, size_t d, const float *k,
                const float *v, size_t nk, size_t ld, float scale, const size_t *visible,
                float *m, float *l, float *acc, float *scores) {
  dots_fn dots = dots_portable;
  axpys_fn axpys = axpys_portable;
  kvk_isa softmax = KVK_SCALAR;
#if defined(__x86_64__)
  if (isa >= KVK_AVX512 && d % 16 == 0 && kvk_isa_supported(KVK_AVX512)) {
    dots = dots_avx512;
    axpys = axpys_avx512;
    softmax = KVK_AVX512;
  } else if (isa >= KVK_AVX2 && d % 8 == 0 && kvk_isa_supported(KVK_AVX2)) {
    dots = dots_avx2;
    axpys = axpys_avx2;
    softmax = KVK_AVX2;
  }
#endif
  (void)isa;
  for (size_t j0 = 0; j0 < nk; j0 += BLOCK) {
    const size_t n = nk - j0 < BLOCK ? nk - j0 : BLOCK;
    dots(q, rows, d, k + j0 * ld, ld, n, scale, scores);
    for (size_t r = 0; r < rows; r++) {
      size_t seen = n;
      if (visible) seen = visible[r] <= j0 ? 0 : (visible[r] - j0 < n ? visible[r] - j0 : n);
      if (seen == 0) continue;
      float *s = scores + r * BLOCK;
      const float block_max = kvk_max(softmax, s, seen);
      const float mx = block_max > m[r] ? block_max : m[r];
      // e^(old max − new max) rescales what was summed before (0 when nothing was).
      const float c = m[r] == mx ? 1.0f : exp_lane(m[r] - mx);
      l[r] = l[r] * c + kvk_exp_shift_sum(softmax, s, seen, mx);
      m[r] = mx;
      axpys(s, seen, v + j0 * ld, ld, d, c, acc + r * d);
    }
  }
}

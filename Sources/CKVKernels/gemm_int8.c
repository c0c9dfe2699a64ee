// The integer product of the prefill (see kvk_gemm_int8): x quantized once into int8 blocks as
// kvk_matvec_int8 quantizes it, W's Q8_0/Q4_0/Q4_1 rows repacked 16 at a time into bytes, four
// bytes of 8 rows side by side, so that one VPMADDUBSW of a broadcast of 4 bytes of x against
// them gives 8 rows' partial sums in 8 lanes: no horizontal sums, and each block's int32 sum
// meets its float scale d·dx once per 8 outputs.
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define BLOCK_OUT 320  // a packed panel's bytes per block: 8 groups × 8 rows × 4 bytes, d[8], m[8]
#define BLOCK_OUT_VNNI 640  // the same with 16 rows (one 512-bit vector per group)


/// Where the quantized activations live in the caller's buffer: xq (m × k bytes), then per row
/// and block dx, dx·Σxq (Q4_1's m term) and -8·Σxq (Q4_0's offset).
typedef struct {
  int8_t *xq;
  float *dx, *dxs;
  int32_t *n8;
  size_t nb;
} acts;

static inline size_t round64(size_t v) { return (v + 63) & ~(size_t)63; }

static acts acts_layout(const void *p, size_t m, size_t k) {
  acts a;
  uint8_t *b = (uint8_t *)p;
  a.nb = k / 32;
  a.xq = (int8_t *)b;
  b += round64(m * k);
  a.dx = (float *)b;
  b += round64(m * a.nb * 4);
  a.dxs = (float *)b;
  b += round64(m * a.nb * 4);
  a.n8 = (int32_t *)b;
  return a;
}

size_t kvk_int8_activation_bytes(size_t m, size_t k) {
  return round64(m * k) + 3 * round64(m * (k / 32) * 4);
}

size_t kvk_gemm_int8_scratch(size_t k) { return 2 * (k / 32) * BLOCK_OUT_VNNI + 64; }

// MARK: - Reference

static void store_block(acts a, size_t i, size_t b, float dx, int32_t s) {
  a.dx[i * a.nb + b] = dx;
  a.dxs[i * a.nb + b] = dx * (float)s;
  a.n8[i * a.nb + b] = -8 * s;
}

static void quantize_scalar(const float *x, size_t m, size_t k, size_t ldx, acts a) {
  for (size_t i = 0; i < m; i++) {
    for (size_t b = 0; b < a.nb; b++) {
      float dx;
      const int32_t s = kvk_quantize_block(x + i * ldx + 32 * b, a.xq + i * k + 32 * b, &dx);
      store_block(a, i, b, dx, s);
    }
  }
}

static void gemm_scalar(kvk_format f, const uint8_t *w, size_t k, size_t r0, size_t r1, acts a,
                        size_t m, float beta, float *out, size_t ldc) {
  const size_t rb = kvk_row_bytes(f, k), bytes = (size_t)kvk_block_bytes(f);
  for (size_t i = 0; i < m; i++) {
    for (size_t r = r0; r < r1; r++) {
      const uint8_t *blk = w + r * rb;
      float dot = 0;
      for (size_t b = 0; b < a.nb; b++, blk += bytes) {
        const int8_t *xq = a.xq + i * k + 32 * b;
        const float d = kvk_half_to_float(kvk_load16(blk)), dx = a.dx[i * a.nb + b];
        // n8 is −8·Σxq.
        const int32_t isum = kvk_block_isum(f, blk, xq, -a.n8[i * a.nb + b] / 8);
        dot += (float)isum * (d * dx);
        if (f == KVK_Q4_1) dot += kvk_half_to_float(kvk_load16(blk + 2)) * a.dxs[i * a.nb + b];
      }
      float *o = out + i * ldc + r;
      *o = beta == 0 ? dot : dot + beta * *o;
    }
  }
}

// MARK: - AVX2

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE __attribute__((always_inline)) static inline

/// Each row as the decode kernels quantize x (`kvk_quantize_block_avx2`: the same bytes).
TARGET static void quantize_avx2(const float *x, size_t m, size_t k, size_t ldx, acts a) {
  for (size_t i = 0; i < m; i++) {
    for (size_t b = 0; b < a.nb; b++) {
      float dx;
      const int32_t s = kvk_quantize_block_avx2(x + i * ldx + 32 * b, a.xq + i * k + 32 * b, &dx);
      store_block(a, i, b, dx, s);
    }
  }
}

/// Rows r0 ..< r0 + nr (nr <= 8; the others zero) packed into one panel: per block, vector g
/// holds elements 4g ..< 4g + 4 of the 8 rows (row l in bytes 4l ..< 4l + 4), then d and m.
/// AVX2: blocks `BLOCK_OUT` apart, vectors 32 bytes apart, d at 256, m at 288. VNNI writes two
/// such halves into one 16-row panel (`BLOCK_OUT_VNNI`, 64, 512, 576; the second half 32 bytes
/// on) and, for Q8_0, stores w + 128 as an unsigned byte (VPDPBUSD's unsigned operand).
TARGET static void pack_rows(kvk_format f, const uint8_t *w, size_t rb, size_t nr, size_t nb,
                             uint8_t *panel, size_t block_out, size_t vec, size_t d_at,
                             size_t m_at, int flip) {
  const size_t bytes = f == KVK_Q8_0 ? 34 : f == KVK_Q4_0 ? 18 : 20;
  const __m256i lo4 = _mm256_set1_epi8(0x0F);
  for (size_t b = 0; b < nb; b++) {
    __m256 v[8];
    float d[8], mm[8];
    for (size_t l = 0; l < 8; l++) {
      if (l >= nr) {
        v[l] = _mm256_setzero_ps();
        d[l] = mm[l] = 0;
        continue;
      }
      const uint8_t *blk = w + l * rb + b * bytes;
      d[l] = _cvtsh_ss(kvk_load16(blk));
      mm[l] = f == KVK_Q4_1 ? _cvtsh_ss(kvk_load16(blk + 2)) : 0;
      __m256i e;
      if (f == KVK_Q8_0) {
        e = _mm256_loadu_si256((const __m256i *)(blk + 2));
        if (flip) e = _mm256_xor_si256(e, _mm256_set1_epi8((char)0x80));
      } else {
        const __m128i q = _mm_loadu_si128((const __m128i *)(blk + (f == KVK_Q4_1 ? 4 : 2)));
        e = _mm256_and_si256(
            _mm256_insertf128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), lo4);
      }
      v[l] = _mm256_castsi256_ps(e);
    }
    // 8×8 transpose of 32-bit groups.
    __m256 t[8], u[8];
    for (int j = 0; j < 4; j++) {
      t[2 * j] = _mm256_unpacklo_ps(v[2 * j], v[2 * j + 1]);
      t[2 * j + 1] = _mm256_unpackhi_ps(v[2 * j], v[2 * j + 1]);
    }
    for (int j = 0; j < 2; j++) {
      u[4 * j + 0] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
      u[4 * j + 1] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
      u[4 * j + 2] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
      u[4 * j + 3] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
    }
    uint8_t *o = panel + b * block_out;
    for (int j = 0; j < 4; j++) {
      _mm256_store_ps((float *)(o + vec * j), _mm256_permute2f128_ps(u[j], u[4 + j], 0x20));
      _mm256_store_ps((float *)(o + vec * (4 + j)), _mm256_permute2f128_ps(u[j], u[4 + j], 0x31));
    }
    _mm256_store_ps((float *)(o + d_at), _mm256_loadu_ps(d));
    _mm256_store_ps((float *)(o + m_at), _mm256_loadu_ps(mm));
  }
}

TARGET static void pack_panel(kvk_format f, const uint8_t *w, size_t rb, size_t nr, size_t nb,
                              uint8_t *panel) {
  pack_rows(f, w, rb, nr, nb, panel, BLOCK_OUT, 32, 256, 288, 0);
}

#ifndef KVK_INT8_RX
#define KVK_INT8_RX 3  // rows of x per register tile (with 2 panels: 6 float + 6 int sums)
#endif
#define MAX_RX (2 * KVK_INT8_RX)

/// RW panels (8·RW rows of W) × RX rows of x from row i0: each output's lane runs over the
/// blocks in order, int sum then acc += (float)isum·(d·dx) (+ m·(dx·Σxq)), one FMA each.
TARGET INLINE void tile_avx2(kvk_format f, const int RW, const int RX, const uint8_t *pw,
                             size_t pstride, acts a, size_t k, size_t i0, float beta,
                             float *out, size_t ldc, size_t ncols) {
  const size_t nb = a.nb;
  const __m256i ones = _mm256_set1_epi16(1);
  // Fixed sizes (RW, RX are constants once inlined): arrays that stay in registers.
  __m256 acc[MAX_RX][2];
#pragma GCC unroll 8
  for (int i = 0; i < RX; i++)
#pragma GCC unroll 2
    for (int r = 0; r < RW; r++) acc[i][r] = _mm256_setzero_ps();
  const int8_t *x0 = a.xq + i0 * k;
  for (size_t b = 0; b < nb; b++) {
    const uint8_t *pb = pw + b * BLOCK_OUT;
    __m256i s[MAX_RX][2];
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) {
      __m256i wv[2], aw[2];
#pragma GCC unroll 2
      for (int r = 0; r < RW; r++) {
        wv[r] = _mm256_load_si256((const __m256i *)(pb + r * pstride + 32 * g));
        if (f == KVK_Q8_0) aw[r] = _mm256_abs_epi8(wv[r]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < RX; i++) {
        int32_t x4;
        memcpy(&x4, x0 + i * k + 32 * b + 4 * g, 4);
        const __m256i xb = _mm256_set1_epi32(x4);
#pragma GCC unroll 2
        for (int r = 0; r < RW; r++) {
          __m256i p;
          if (f == KVK_Q8_0)  // |w|·(xq with w's sign): pairs <= 2·128·127, int32 at once
            p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(xb, wv[r])),
                                  ones);
          else  // nibbles: 8 groups of pairs sum to <= 8·2·15·127 = 30480, int16 holds them
            p = _mm256_maddubs_epi16(wv[r], xb);
          if (g == 0) s[i][r] = p;
          else s[i][r] = f == KVK_Q8_0 ? _mm256_add_epi32(s[i][r], p) : _mm256_add_epi16(s[i][r], p);
          // Keeps each sum a chain in one register: left alone, GCC reassociates the adds into
          // trees over all 8 groups' products and spills most of them.
          __asm__("" : "+x"(s[i][r]));
        }
      }
    }
#pragma GCC unroll 2
    for (int r = 0; r < RW; r++) {
      const __m256 dw = _mm256_load_ps((const float *)(pb + r * pstride + 256));
#pragma GCC unroll 8
      for (int i = 0; i < RX; i++) {
        __m256i is = s[i][r];
        if (f != KVK_Q8_0) is = _mm256_madd_epi16(is, ones);
        if (f == KVK_Q4_0) is = _mm256_add_epi32(is, _mm256_set1_epi32(a.n8[(i0 + i) * nb + b]));
        const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(a.dx[(i0 + i) * nb + b]));
        acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), scale, acc[i][r]);
        if (f == KVK_Q4_1)
          acc[i][r] = _mm256_fmadd_ps(_mm256_load_ps((const float *)(pb + r * pstride + 288)),
                                      _mm256_set1_ps(a.dxs[(i0 + i) * nb + b]), acc[i][r]);
      }
    }
  }
  const __m256 vb = _mm256_set1_ps(beta);
  for (int i = 0; i < RX; i++) {
    float *o = out + (i0 + i) * ldc;
    for (int r = 0; r < RW; r++) {
      if ((size_t)(8 * r + 8) <= ncols) {
        __m256 v = acc[i][r];
        if (beta != 0) v = _mm256_fmadd_ps(vb, _mm256_loadu_ps(o + 8 * r), v);
        _mm256_storeu_ps(o + 8 * r, v);
      } else {
        float lanes[8];
        _mm256_storeu_ps(lanes, acc[i][r]);
        for (size_t l = 0; 8 * r + l < ncols; l++)
          o[8 * r + l] = beta == 0 ? lanes[l] : lanes[l] + beta * o[8 * r + l];
      }
    }
  }
}


TARGET INLINE void gemm_avx2_format(kvk_format f, const uint8_t *w, size_t k, size_t r0,
                                    size_t r1, acts a, size_t m, float beta, float *out,
                                    size_t ldc, uint8_t *scratch) {
  const size_t rb = kvk_row_bytes(f, k), pstride = a.nb * BLOCK_OUT;
  for (size_t r = r0; r < r1; r += 16) {
    const size_t nr = r1 - r < 16 ? r1 - r : 16;
    pack_panel(f, w + r * rb, rb, nr < 8 ? nr : 8, a.nb, scratch);
    if (nr > 8) pack_panel(f, w + (r + 8) * rb, rb, nr - 8, a.nb, scratch + pstride);
    float *o = out + r;
    size_t i = 0;
    if (nr > 8) {
      for (; i + KVK_INT8_RX <= m; i += KVK_INT8_RX)
        tile_avx2(f, 2, KVK_INT8_RX, scratch, pstride, a, k, i, beta, o, ldc, nr);
      for (; i < m; i++) tile_avx2(f, 2, 1, scratch, pstride, a, k, i, beta, o, ldc, nr);
    } else {
      for (; i + 2 * KVK_INT8_RX <= m; i += 2 * KVK_INT8_RX)
        tile_avx2(f, 1, 2 * KVK_INT8_RX, scratch, pstride, a, k, i, beta, o, ldc, nr);
      for (; i < m; i++) tile_avx2(f, 1, 1, scratch, pstride, a, k, i, beta, o, ldc, nr);
    }
  }
}

TARGET static void gemm_avx2(kvk_format f, const uint8_t *w, size_t k, size_t r0, size_t r1,
                             acts a, size_t m, float beta, float *out, size_t ldc,
                             uint8_t *scratch) {
  if (f == KVK_Q8_0) gemm_avx2_format(KVK_Q8_0, w, k, r0, r1, a, m, beta, out, ldc, scratch);
  else if (f == KVK_Q4_0) gemm_avx2_format(KVK_Q4_0, w, k, r0, r1, a, m, beta, out, ldc, scratch);
  else gemm_avx2_format(KVK_Q4_1, w, k, r0, r1, a, m, beta, out, ldc, scratch);
}

// MARK: - AVX-512 VNNI

#define TARGET_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define MAX_RX_VNNI 12  // 2 panels × 6 rows of x: 12 int32 + 12 float sums of 32 registers

/// As tile_avx2 with 16 rows per vector and VPDPBUSD's int32 sums (Q8_0's w + 128 less
/// 128·Σxq, Q4_0's q less 8·Σxq): the same int32 sums and the same float operations in the same
/// order, so each output equals the AVX2 path's bit for bit.
TARGET_VNNI INLINE void tile_vnni(kvk_format f, const int RW, const int RX, const uint8_t *pw,
                                  size_t pstride, acts a, size_t k, size_t i0, float beta,
                                  float *out, size_t ldc, size_t ncols) {
  const size_t nb = a.nb;
  __m512 acc[MAX_RX_VNNI][2];
#pragma GCC unroll 12
  for (int i = 0; i < RX; i++)
#pragma GCC unroll 2
    for (int r = 0; r < RW; r++) acc[i][r] = _mm512_setzero_ps();
  const int8_t *x0 = a.xq + i0 * k;
  for (size_t b = 0; b < nb; b++) {
    const uint8_t *pb = pw + b * BLOCK_OUT_VNNI;
    __m512i s[MAX_RX_VNNI][2];
#pragma GCC unroll 12
    for (int i = 0; i < RX; i++)
#pragma GCC unroll 2
      for (int r = 0; r < RW; r++) s[i][r] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) {
      __m512i wv[2];
#pragma GCC unroll 2
      for (int r = 0; r < RW; r++) wv[r] = _mm512_load_si512(pb + r * pstride + 64 * g);
#pragma GCC unroll 12
      for (int i = 0; i < RX; i++) {
        int32_t x4;
        memcpy(&x4, x0 + i * k + 32 * b + 4 * g, 4);
        const __m512i xb = _mm512_set1_epi32(x4);
#pragma GCC unroll 2
        for (int r = 0; r < RW; r++) {
          s[i][r] = _mm512_dpbusd_epi32(s[i][r], wv[r], xb);
          __asm__("" : "+v"(s[i][r]));
        }
      }
    }
#pragma GCC unroll 2
    for (int r = 0; r < RW; r++) {
      const __m512 dw = _mm512_load_ps(pb + r * pstride + 512);
#pragma GCC unroll 12
      for (int i = 0; i < RX; i++) {
        __m512i is = s[i][r];
        const int32_t n8 = a.n8[(i0 + i) * nb + b];
        if (f == KVK_Q4_0) is = _mm512_add_epi32(is, _mm512_set1_epi32(n8));
        if (f == KVK_Q8_0) is = _mm512_add_epi32(is, _mm512_set1_epi32(16 * n8));
        const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.dx[(i0 + i) * nb + b]));
        acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), scale, acc[i][r]);
        if (f == KVK_Q4_1)
          acc[i][r] = _mm512_fmadd_ps(_mm512_load_ps(pb + r * pstride + 576),
                                      _mm512_set1_ps(a.dxs[(i0 + i) * nb + b]), acc[i][r]);
      }
    }
  }
  const __m512 vb = _mm512_set1_ps(beta);
  for (int i = 0; i < RX; i++) {
    float *o = out + (i0 + i) * ldc;
    for (int r = 0; r < RW; r++) {
      const size_t left = ncols > (size_t)(16 * r) ? ncols - 16 * r : 0;
      const __mmask16 mask = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
      __m512 v = acc[i][r];
      if (beta != 0) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, o + 16 * r), v);
      _mm512_mask_storeu_ps(o + 16 * r, mask, v);
    }
  }
}

TARGET_VNNI INLINE void gemm_vnni_format(kvk_format f, const uint8_t *w, size_t k, size_t r0,
                                         size_t r1, acts a, size_t m, float beta, float *out,
                                         size_t ldc, uint8_t *scratch) {
  const size_t rb = kvk_row_bytes(f, k), pstride = a.nb * BLOCK_OUT_VNNI;
  for (size_t r = r0; r < r1; r += 32) {
    const size_t nr = r1 - r < 32 ? r1 - r : 32;
    for (size_t h = 0; h < 4; h++) {  // quarters of 8 rows: two to a panel
      const size_t first = 8 * h, rows = nr > first ? (nr - first < 8 ? nr - first : 8) : 0;
      if (h >= 2 && nr <= 16) break;
      pack_rows(f, w + (r + first) * rb, rb, rows, a.nb,
                scratch + (h / 2) * pstride + (h % 2) * 32, BLOCK_OUT_VNNI, 64, 512, 576, 1);
    }
    float *o = out + r;
    size_t i = 0;
    if (nr > 16) {
      for (; i + 6 <= m; i += 6) tile_vnni(f, 2, 6, scratch, pstride, a, k, i, beta, o, ldc, nr);
      for (; i < m; i++) tile_vnni(f, 2, 1, scratch, pstride, a, k, i, beta, o, ldc, nr);
    } else {
      for (; i + 12 <= m; i += 12) tile_vnni(f, 1, 12, scratch, pstride, a, k, i, beta, o, ldc, nr);
      for (; i < m; i++) tile_vnni(f, 1, 1, scratch, pstride, a, k, i, beta, o, ldc, nr);
    }
  }
}

TARGET_VNNI static void gemm_vnni(kvk_format f, const uint8_t *w, size_t k, size_t r0, size_t r1,
                                  acts a, size_t m, float beta, float *out, size_t ldc,
                                  uint8_t *scratch) {
  if (f == KVK_Q8_0) gemm_vnni_format(KVK_Q8_0, w, k, r0, r1, a, m, beta, out, ldc, scratch);
  else if (f == KVK_Q4_0) gemm_vnni_format(KVK_Q4_0, w, k, r0, r1, a, m, beta, out, ldc, scratch);
  else gemm_vnni_format(KVK_Q4_1, w, k, r0, r1, a, m, beta, out, ldc, scratch);
}
#endif

// MARK: - Dispatch

void kvk_int8_quantize_activations(kvk_isa isa, const float *x, size_t m, size_t k, size_t ldx,
                                   void *xq) {
  const acts a = acts_layout(xq, m, k);
#if defined(__x86_64__)
  if (isa >= KVK_AVX2 && kvk_isa_supported(KVK_AVX2)) {
    quantize_avx2(x, m, k, ldx, a);
    return;
  }
#endif
  (void)isa;
  quantize_scalar(x, m, k, ldx, a);
}

void kvk_gemm_int8(kvk_isa isa, kvk_format f, const void *w, size_t n, size_t k,
                   size_t row_first, size_t row_count, const void *xq, size_t m, float beta,
                   float *out, size_t ldc, void *scratch) {
  (void)n;
  const acts a = acts_layout(xq, m, k);
  const size_t r1 = row_first + row_count;
#if defined(__x86_64__)
  uint8_t *s = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
  if (isa == KVK_AVX512_VNNI && kvk_isa_supported(KVK_AVX512_VNNI)) {
    gemm_vnni(f, (const uint8_t *)w, k, row_first, r1, a, m, beta, out, ldc, s);
    return;
  }
  if (isa >= KVK_AVX2 && kvk_isa_supported(KVK_AVX2)) {
    gemm_avx2(f, (const uint8_t *)w, k, row_first, r1, a, m, beta, out, ldc, s);
    return;
  }
#endif
  (void)isa;
  (void)scratch;
  gemm_scalar(f, (const uint8_t *)w, k, row_first, r1, a, m, beta, out, ldc);
}

// Portable forms of the weight kernels, the CPU feature probe and the run-time dispatch.
// The AVX2 and AVX-512 forms are in kernels_avx2.c and kernels_avx512.c, compiled for their
// instruction sets by function attributes only, so nothing here needs them to run.
#include "kvkernels.h"
#include "internal.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

// MARK: - CPU features

static unsigned detect_features(void) {
  unsigned features = 0;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
  if (!osxsave) return 0;
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const int ymm = (xcr0_lo & 0x6) == 0x6;             // SSE and AVX state
  const int zmm = ymm && (xcr0_lo & 0xE0) == 0xE0;    // opmask, ZMM hi256, hi16 ZMM
  const int tiles = (xcr0_lo & 0x60000) == 0x60000;   // XTILECFG, XTILEDATA
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  const int avx2 = (b >> 5) & 1;
  const int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
            avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
  const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1;
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
  const int bf16 = (a1 >> 5) & 1;
  if (ymm && avx2 && fma && f16c) features |= KVK_FEATURE_AVX2;
  if (zmm && avx512f && avx512dq && avx512bw && avx512vl && fma && f16c) {
    features |= KVK_FEATURE_AVX512;
    if (vnni) features |= KVK_FEATURE_AVX512_VNNI;
    if (bf16) features |= KVK_FEATURE_AVX512_BF16;
  }
  if (tiles && amx_tile && amx_bf16 && amx_int8) features |= KVK_FEATURE_AMX;
#endif
  return features;
}

unsigned kvk_cpu_features(void) {
  static int known = 0;
  static unsigned features = 0;
  if (!__atomic_load_n(&known, __ATOMIC_ACQUIRE)) {
    features = detect_features();
    __atomic_store_n(&known, 1, __ATOMIC_RELEASE);
  }
  return features;
}

int kvk_isa_supported(kvk_isa isa) {
  switch (isa) {
    case KVK_SCALAR: return 1;
    case KVK_AVX2: return (kvk_cpu_features() & KVK_FEATURE_AVX2) != 0;
    case KVK_AVX512: return (kvk_cpu_features() & KVK_FEATURE_AVX512) != 0;
    case KVK_AVX512_VNNI:
      return (kvk_cpu_features() & (KVK_FEATURE_AVX512 | KVK_FEATURE_AVX512_VNNI)) ==
             (KVK_FEATURE_AVX512 | KVK_FEATURE_AVX512_VNNI);
  }
  return 0;
}

// MARK: - Formats

int kvk_block_elements(kvk_format f) {
  switch (f) {
    case KVK_F32: case KVK_F16: case KVK_BF16: return 1;
    case KVK_Q8_0: case KVK_Q4_0: case KVK_Q4_1: return 32;
    case KVK_Q4_K: case KVK_Q6_K: return 256;
    default: return 0;
  }
}

int kvk_block_bytes(kvk_format f) {
  switch (f) {
    case KVK_F32: return 4;
    case KVK_F16: case KVK_BF16: return 2;
    case KVK_Q8_0: return 34;
    case KVK_Q4_0: return 18;
    case KVK_Q4_1: return 20;
    case KVK_Q4_K: return 144;
    case KVK_Q6_K: return 210;
    default: return 0;
  }
}

size_t kvk_row_bytes(kvk_format f, size_t cols) {
  return cols / (size_t)kvk_block_elements(f) * (size_t)kvk_block_bytes(f);
}

// MARK: - Scalar dequantization (ggml's dequantize_row_* operation by operation)

float kvk_half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else {
    const float magnitude = (float)mantissa * 0x1p-24f;  // ±0 and subnormals, exact
    return sign ? -magnitude : magnitude;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static float half_table[65536];
static pthread_once_t half_table_once = PTHREAD_ONCE_INIT;

static void fill_half_table(void) {
  for (uint32_t h = 0; h < 65536; h++) half_table[h] = kvk_half_to_float((uint16_t)h);
}

const float *kvk_half_table(void) {
  pthread_once(&half_table_once, fill_half_table);
  return half_table;
}


static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/// One row of `cols` elements, scalar.
static void dequantize_row_scalar(kvk_format f, const uint8_t *src, size_t cols, float *y) {
  const size_t nb = cols / (size_t)kvk_block_elements(f);
  switch (f) {
    case KVK_F32:
      memcpy(y, src, 4 * cols);
      break;
    case KVK_F16:
      for (size_t i = 0; i < cols; i++) y[i] = kvk_half_to_float(kvk_load16(src + 2 * i));
      break;
    case KVK_BF16:
      for (size_t i = 0; i < cols; i++) {
        const uint32_t bits = (uint32_t)kvk_load16(src + 2 * i) << 16;
        memcpy(y + i, &bits, 4);
      }
      break;
    case KVK_Q8_0:
      for (size_t b = 0; b < nb; b++, src += 34, y += 32) {
        const float d = kvk_half_to_float(kvk_load16(src));
        const int8_t *qs = (const int8_t *)(src + 2);
        for (int j = 0; j < 32; j++) y[j] = (float)qs[j] * d;
      }
      break;
    case KVK_Q4_0:
      for (size_t b = 0; b < nb; b++, src += 18, y += 32) {
        const float d = kvk_half_to_float(kvk_load16(src));
        const uint8_t *qs = src + 2;
        for (int j = 0; j < 16; j++) {
          y[j] = (float)((int)(qs[j] & 0x0F) - 8) * d;
          y[j + 16] = (float)((int)(qs[j] >> 4) - 8) * d;
        }
      }
      break;
    case KVK_Q4_1:
      for (size_t b = 0; b < nb; b++, src += 20, y += 32) {
        const float d = kvk_half_to_float(kvk_load16(src));
        const float m = kvk_half_to_float(kvk_load16(src + 2));
        const uint8_t *qs = src + 4;
        for (int j = 0; j < 16; j++) {
          y[j] = (float)(qs[j] & 0x0F) * d + m;
          y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
      }
      break;
    case KVK_Q4_K:
      for (size_t b = 0; b < nb; b++, src += 144) {
        const float d = kvk_half_to_float(kvk_load16(src));
        const float dmin = kvk_half_to_float(kvk_load16(src + 2));
        const uint8_t *scales = src + 4, *qs = src + 16;
        for (int pair = 0; pair < 4; pair++, qs += 32, y += 64) {
          uint8_t sc1, m1, sc2, m2;
          scale_min_k4(2 * pair, scales, &sc1, &m1);
          scale_min_k4(2 * pair + 1, scales, &sc2, &m2);
          const float d1 = d * (float)sc1, min1 = dmin * (float)m1;
          const float d2 = d * (float)sc2, min2 = dmin * (float)m2;
          for (int l = 0; l < 32; l++) {
            y[l] = d1 * (float)(qs[l] & 0x0F) - min1;
            y[l + 32] = d2 * (float)(qs[l] >> 4) - min2;
          }
        }
      }
      break;
    case KVK_Q6_K:
      for (size_t b = 0; b < nb; b++, src += 210) {
        const float d = kvk_half_to_float(kvk_load16(src + 208));
        const uint8_t *ql = src, *qh = src + 128;
        const int8_t *sc = (const int8_t *)(src + 192);
        for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8) {
          for (int l = 0; l < 32; l++) {
            const int i = l / 16;
            const uint8_t h = qh[l];
            const int q1 = (int)((ql[l] & 0x0F) | ((h & 3) << 4)) - 32;
            const int q2 = (int)((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) - 32;
            const int q3 = (int)((ql[l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
            const int q4 = (int)((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[i] * (float)q1;
            y[l + 32] = d * (float)sc[i + 2] * (float)q2;
            y[l + 64] = d * (float)sc[i + 4] * (float)q3;
            y[l + 96] = d * (float)sc[i + 6] * (float)q4;
          }
        }
      }
      break;
    default:
      break;
  }
}

static void dequantize_rows_scalar(kvk_format f, const void *src, size_t rows, size_t cols,
                                   float *dst, size_t ldd) {
  const size_t rb = kvk_row_bytes(f, cols);
  for (size_t r = 0; r < rows; r++)
    dequantize_row_scalar(f, (const uint8_t *)src + r * rb, cols, dst + r * ldd);
}

/// Σ a[i]·b[i] with eight partial sums (lane i mod 8), added pairwise at the end.
static float dot_scalar(const float *a, const float *b, size_t n) {
  float s[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) s[l] += a[i + l] * b[i + l];
  for (; i < n; i++) s[i & 7] += a[i] * b[i];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

static void matvec_scalar(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                          float beta, float *y, float *scratch) {
  const size_t rb = kvk_row_bytes(f, cols);
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *row = (const uint8_t *)w + r * rb;
    float dot;
    if (f == KVK_F32) {
      dot = dot_scalar((const float *)row, x, cols);
    } else {
      dequantize_row_scalar(f, row, cols, scratch);
      dot = dot_scalar(scratch, x, cols);
    }
    y[r] = beta == 0 ? dot : dot + beta * y[r];
  }
}

// MARK: - Integer matrix-vector reference (x quantized to int8 blocks)

static kvk_xq quantize_x_scalar(const float *x, size_t cols, float *scratch) {
  const kvk_xq q = kvk_xq_layout(scratch, cols);
  for (size_t b = 0; b < q.nb; b++) {
    float dx;
    const int32_t s = kvk_quantize_block(x + 32 * b, q.xq + 32 * b, &dx);
    kvk_xq_store_block(q, b, dx, s);
  }
  kvk_xq_pad(q);
  return q;
}

static void matvec_int8_scalar(kvk_format f, const void *w, size_t rows, size_t cols,
                               const float *x, float beta, float *y, float *scratch) {
  const kvk_xq q = quantize_x_scalar(x, cols, scratch);
  const size_t rb = kvk_row_bytes(f, cols), bytes = (size_t)kvk_block_bytes(f);
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *blk = (const uint8_t *)w + r * rb;
    float dot = 0;
    for (size_t b = 0; b < q.nb; b++, blk += bytes) {
      const int8_t *xq = q.xq + 32 * b;
      const float d = kvk_half_to_float(kvk_load16(blk)), dx = q.dx[8 * b];
      const int32_t sx = -q.ns[8 * b];
      const int32_t isum = kvk_block_isum(f, blk, xq, sx);
      dot += (float)isum * (d * dx);
      if (f == KVK_Q4_1) dot += kvk_half_to_float(kvk_load16(blk + 2)) * (dx * (float)sx);
    }
    y[r] = beta == 0 ? dot : dot + beta * y[r];
  }
}

void kvk_dequantize_row_portable(kvk_format f, const void *src, size_t cols, float *y) {
  dequantize_row_scalar(f, (const uint8_t *)src, cols, y);
}

// MARK: - Dispatch

void kvk_dequantize_rows(kvk_isa isa, kvk_format f, const void *src, size_t rows, size_t cols,
                         float *dst, size_t ldd) {
#if defined(__x86_64__)
  if (isa >= KVK_AVX512 && kvk_isa_supported(KVK_AVX512)) {
    kvk_dequantize_rows_avx512(f, src, rows, cols, dst, ldd);
    return;
  }
  if (isa >= KVK_AVX2 && kvk_isa_supported(KVK_AVX2)) {
    kvk_dequantize_rows_avx2(f, src, rows, cols, dst, ldd);
    return;
  }
#endif
  (void)isa;
  dequantize_rows_scalar(f, src, rows, cols, dst, ldd);
}

size_t kvk_matvec_scratch(kvk_format f, size_t cols) {
  (void)f;
  return cols + cols / 32 + 16 + kvk_xq_floats(cols);
}

void kvk_matvec(kvk_isa isa, kvk_format f, const void *w, size_t rows, size_t cols,
                const float *x, float beta, float *y, float *scratch) {
#if defined(__x86_64__)
  if (isa >= KVK_AVX512 && kvk_isa_supported(KVK_AVX512)) {
    kvk_matvec_avx512(f, w, rows, cols, x, beta, y, scratch);
    return;
  }
  if (isa >= KVK_AVX2 && kvk_isa_supported(KVK_AVX2)) {
    kvk_matvec_avx2(f, w, rows, cols, x, beta, y, scratch);
    return;
  }
#endif
  (void)isa;
  matvec_scalar(f, w, rows, cols, x, beta, y, scratch);
}

void kvk_matvec_int8(kvk_isa isa, kvk_format f, const void *w, size_t rows, size_t cols,
                     const float *x, float beta, float *y, float *scratch) {
  if (f != KVK_Q8_0 && f != KVK_Q4_0 && f != KVK_Q4_1) {
    kvk_matvec(isa, f, w, rows, cols, x, beta, y, scratch);
    return;
  }
  // After the float kernels' part of the scratch, so both fit in kvk_matvec_scratch.
  float *xs = scratch + cols + cols / 32 + 16;
#if defined(__x86_64__)
  if (isa == KVK_AVX512_VNNI && kvk_isa_supported(KVK_AVX512_VNNI)) {
    kvk_matvec_int8_vnni(f, w, rows, cols, x, beta, y, xs);
    return;
  }
  if (isa >= KVK_AVX2 && kvk_isa_supported(KVK_AVX2)) {
    kvk_matvec_int8_avx2(f, w, rows, cols, x, beta, y, xs);
    return;
  }
#endif
  (void)isa;
  matvec_int8_scalar(f, w, rows, cols, x, beta, y, xs);
}

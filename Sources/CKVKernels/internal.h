// Shared between the kernel files; not part of the module's interface.
#ifndef KVKERNELS_INTERNAL_H
#define KVKERNELS_INTERNAL_H
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

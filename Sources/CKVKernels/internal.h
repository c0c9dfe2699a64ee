// Shared between the kernel files; not part of the module's interface.
#ifndef KVKERNELS_INTERNAL_H
#define KVKERNELS_INTERNAL_H
#include "kvkernels.h"

size_t kvk_row_bytes(kvk_format f, size_t cols);
float kvk_half_to_float(uint16_t h);
void kvk_dequantize_row_portable(kvk_format f, const void *src, size_t cols, float *y);

void kvk_dequantize_rows_avx2(kvk_format f, const void *src, size_t rows, size_t cols,
                              float *dst, size_t ldd);
void kvk_matvec_avx2(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                     float beta, float *y, float *scratch);
void kvk_dequantize_rows_avx512(kvk_format f, const void *src, size_t rows, size_t cols,
                                float *dst, size_t ldd);
void kvk_matvec_avx512(kvk_format f, const void *w, size_t rows, size_t cols, const float *x,
                       float beta, float *y, float *scratch);
#endif

// Whether the integer prefill product (kvk_gemm_int8, AVX2 path) beats today's AVX2 prefill
// (Q4_1 rows dequantized into float32 pieces of ~768 KiB, then single-threaded OpenBLAS sgemm,
// as WeightMatrix.apply does) on SmolLM2-135M's shapes, m = 512 prompt tokens, one thread.
// Prints GFLOP/s (2·m·n·k / s, min of REPEATS) of each, their ratio, and the int8 product's
// max |error| against a double-precision sum of the same quantized formula and against the
// float32 product (x not quantized); for context the AVX-512 VNNI path too. Run once with OPENBLAS_CORETYPE=Haswell (what an AVX2 CPU
// gets) and once without.
//
//   gcc -O3 -pthread -ISources/CKVKernels/include -ISources/CKVKernels
//     -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/int8_gemm_probe.c
//     Sources/CKVKernels/gemm_int8.c Sources/CKVKernels/kernels.c
//     Sources/CKVKernels/kernels_avx2.c Sources/CKVKernels/kernels_avx512.c
//     -lopenblas -lm -o /tmp/int8_gemm_probe   (one line)
//   OPENBLAS_CORETYPE=Haswell /tmp/int8_gemm_probe
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvkernels.h"

#define M 512
#define REPEATS 7
#define PIECE_FLOATS (3 << 16)  // WeightMatrix.pieceFloats

extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double uniform(void) {  // [0, 1)
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (rng >> 11) * 0x1p-53;
}
static double normal(void) {
  const double u = uniform() + 1e-12, v = uniform();
  return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

__attribute__((target("f16c"))) static uint16_t to_half(float f) {
  return (uint16_t)_cvtss_sh(f, 0);
}

/// Random Q4_1 rows with weights spread like a trained model's (~N(0, 0.05)).
static uint8_t *random_q4_1(size_t n, size_t k) {
  const size_t nb = k / 32;
  uint8_t *w = malloc(n * nb * 20);
  for (size_t r = 0; r < n; r++) {
    for (size_t b = 0; b < nb; b++) {
      float v[32], lo = 1e30f, hi = -1e30f;
      for (int j = 0; j < 32; j++) {
        v[j] = (float)(0.05 * normal());
        lo = v[j] < lo ? v[j] : lo;
        hi = v[j] > hi ? v[j] : hi;
      }
      uint8_t *blk = w + (r * nb + b) * 20;
      const float d = (hi - lo) / 15;
      const uint16_t dh = to_half(d), mh = to_half(lo);
      memcpy(blk, &dh, 2);
      memcpy(blk + 2, &mh, 2);
      const float dd = kvk_half_to_float(dh), mm = kvk_half_to_float(mh);
      for (int j = 0; j < 16; j++) {
        int a = (int)lrintf((v[j] - mm) / dd), c = (int)lrintf((v[j + 16] - mm) / dd);
        a = a < 0 ? 0 : a > 15 ? 15 : a;
        c = c < 0 ? 0 : c > 15 ? 15 : c;
        blk[4 + j] = (uint8_t)(a | c << 4);
      }
    }
  }
  return w;
}

/// Today's path, one thread: pieces of rows dequantized (AVX2 kernel) then sgemm.
static void baseline(const uint8_t *w, size_t n, size_t k, const float *x, float *out,
                     float *tile) {
  size_t piece = PIECE_FLOATS / k;
  piece = piece > 16 ? piece / 16 * 16 : piece;
  const size_t rb = k / 32 * 20;
  for (size_t first = 0; first < n; first += piece) {
    const size_t rows = n - first < piece ? n - first : piece;
    kvk_dequantize_rows(KVK_AVX2, KVK_Q4_1, w + first * rb, rows, k, tile, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, (int)rows, (int)k, 1.0f, x, (int)k,
                tile, (int)k, 0.0f, out + first, (int)n);
  }
}

static void int8_product(kvk_isa isa, const uint8_t *w, size_t n, size_t k, const float *x,
                         void *xq, float *out, void *scratch) {
  kvk_int8_quantize_activations(isa, x, M, k, k, xq);
  kvk_gemm_int8(isa, KVK_Q4_1, w, n, k, 0, n, xq, M, 0.0f, out, n, scratch);
}

/// Σ over blocks of Σ q·xq·d·dx + m·dx·Σxq in double, x quantized as the kernels do it.
static void reference(const uint8_t *w, size_t n, size_t k, const float *x, double *out) {
  const size_t nb = k / 32;
  int8_t *xq = malloc(M * k);
  float *dx = malloc(M * nb * sizeof(float));
  int *sx = malloc(M * nb * sizeof(int));
  for (size_t i = 0; i < M; i++) {
    for (size_t b = 0; b < nb; b++) {
      const float *xb = x + i * k + 32 * b;
      float amax = 0;
      for (int j = 0; j < 32; j++) amax = fabsf(xb[j]) > amax ? fabsf(xb[j]) : amax;
      const float d = amax / 127.0f;
      int s = 0;
      for (int j = 0; j < 32; j++) {
        const int v = d != 0 ? (int)nearbyintf(xb[j] / d) : 0;  // ties to even
        xq[i * k + 32 * b + j] = (int8_t)v;
        s += v;
      }
      dx[i * nb + b] = d;
      sx[i * nb + b] = s;
    }
  }
  for (size_t i = 0; i < M; i++) {
    for (size_t r = 0; r < n; r++) {
      double dot = 0;
      for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + (r * nb + b) * 20;
        uint16_t dh, mh;
        memcpy(&dh, blk, 2);
        memcpy(&mh, blk + 2, 2);
        const int8_t *q = xq + i * k + 32 * b;
        int isum = 0;
        for (int j = 0; j < 16; j++) isum += (blk[4 + j] & 15) * q[j] + (blk[4 + j] >> 4) * q[j + 16];
        dot += (double)isum * kvk_half_to_float(dh) * dx[i * nb + b] +
               (double)kvk_half_to_float(mh) * dx[i * nb + b] * sx[i * nb + b];
      }
      out[i * n + r] = dot;
    }
  }
  free(xq);
  free(dx);
  free(sx);
}

/// Q8_0 and Q4_0 (random blocks) and Q4_1, odd sizes and beta != 0: the AVX2 and VNNI paths
/// against the scalar one (float rounding apart), and against each other (bit for bit).
static void check_formats(void) {
  const size_t m = 37, n = 45, k = 96, ldc = 50;
  const kvk_format fs[3] = {KVK_Q8_0, KVK_Q4_0, KVK_Q4_1};
  float *x = malloc(m * k * sizeof(float));
  for (size_t i = 0; i < m * k; i++) x[i] = (float)normal();
  void *xq = malloc(kvk_int8_activation_bytes(m, k));
  void *scratch = malloc(kvk_gemm_int8_scratch(k));
  kvk_int8_quantize_activations(KVK_AVX2, x, m, k, k, xq);
  for (int f = 0; f < 3; f++) {
    const size_t bytes = (size_t)kvk_block_bytes(fs[f]), nbytes = n * k / 32 * bytes;
    uint8_t *w = malloc(nbytes);
    for (size_t i = 0; i < nbytes; i++) w[i] = (uint8_t)(uniform() * 256);
    for (size_t b = 0; b < n * k / 32; b++) {
      const uint16_t d = to_half((float)(0.01 * normal())), mm = to_half((float)(0.05 * normal()));
      memcpy(w + b * bytes, &d, 2);
      if (fs[f] == KVK_Q4_1) memcpy(w + b * bytes + 2, &mm, 2);
    }
    float *y[3];
    const kvk_isa isas[3] = {KVK_SCALAR, KVK_AVX2, KVK_AVX512_VNNI};
    for (int p = 0; p < 3; p++) {
      y[p] = malloc(m * ldc * sizeof(float));
      for (size_t i = 0; i < m * ldc; i++) y[p][i] = (float)(i % 7);
      kvk_gemm_int8(isas[p], fs[f], w, n, k, 0, 13, xq, m, 0.5f, y[p], ldc, scratch);
      kvk_gemm_int8(isas[p], fs[f], w, n, k, 13, n - 13, xq, m, 0.5f, y[p], ldc, scratch);
    }
    double e = 0, ev = 0, scale = 0;
    for (size_t i = 0; i < m * ldc; i++) {
      e = fmax(e, fabs(y[1][i] - y[0][i]));
      ev = fmax(ev, fabs(y[2][i] - y[0][i]));
      scale = fmax(scale, fabs(y[0][i]));
    }
    printf("format %d: max|diff| vs scalar: avx2 %.2e, vnni %.2e (max|out| %.2e); vnni==avx2 "
           "bitwise %s\n", (int)fs[f], e, ev, scale,
           !kvk_isa_supported(KVK_AVX512_VNNI) ? "n/a"
           : memcmp(y[1], y[2], m * ldc * sizeof(float)) == 0 ? "yes" : "NO");
    for (int p = 0; p < 3; p++) free(y[p]);
    free(w);
  }
  free(x), free(xq), free(scratch);
}

int main(void) {
  openblas_set_num_threads(1);
  check_formats();
  const size_t shapes[4][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}};
  const char *names[4] = {"q/o", "k/v", "gate/up", "down"};
  const char *core = getenv("OPENBLAS_CORETYPE");
  printf("OPENBLAS_CORETYPE=%s (kernel %s), m=%d, 1 thread, min of %d\n", core ? core : "(unset)",
         openblas_get_corename(), M, REPEATS);
  printf("%-8s %5s %5s | %9s %9s %6s | %9s %9s %9s %9s | %9s %6s\n", "shape", "n", "k",
         "sgemm", "int8avx2", "ratio", "quant%", "err_ref", "err_f32", "max|out|", "int8vnni",
         "ratio");
  for (int s = 0; s < 4; s++) {
    const size_t n = shapes[s][0], k = shapes[s][1];
    uint8_t *w = random_q4_1(n, k);
    float *x = malloc(M * k * sizeof(float));
    for (size_t i = 0; i < M * k; i++) x[i] = (float)normal();
    float *tile = aligned_alloc(64, (PIECE_FLOATS + 64 * k) * sizeof(float));
    float *ya = malloc(M * n * sizeof(float)), *yb = malloc(M * n * sizeof(float));
    float *yc = malloc(M * n * sizeof(float));
    void *xq = aligned_alloc(64, kvk_int8_activation_bytes(M, k));
    void *scratch = aligned_alloc(64, kvk_gemm_int8_scratch(k));
    const int vnni = kvk_isa_supported(KVK_AVX512_VNNI);
    double ta = 1e9, tb = 1e9, tq = 1e9, tv = 1e9;
    for (int rep = 0; rep < REPEATS; rep++) {
      double t0 = now();
      baseline(w, n, k, x, ya, tile);
      double t1 = now();
      int8_product(KVK_AVX2, w, n, k, x, xq, yb, scratch);
      double t2 = now();
      kvk_int8_quantize_activations(KVK_AVX2, x, M, k, k, xq);
      double t3 = now();
      if (vnni) int8_product(KVK_AVX512_VNNI, w, n, k, x, xq, yc, scratch);
      double t4 = now();
      tv = t4 - t3 < tv ? t4 - t3 : tv;
      ta = t1 - t0 < ta ? t1 - t0 : ta;
      tb = t2 - t1 < tb ? t2 - t1 : tb;
      tq = t3 - t2 < tq ? t3 - t2 : tq;
    }
    double *ref = malloc(M * n * sizeof(double));
    reference(w, n, k, x, ref);
    double e_ref = 0, e_f32 = 0, amax = 0;
    for (size_t i = 0; i < M * n; i++) {
      e_ref = fmax(e_ref, fabs(yb[i] - ref[i]));
      e_f32 = fmax(e_f32, fabs((double)yb[i] - ya[i]));
      amax = fmax(amax, fabs(ref[i]));
    }
    const double flop = 2.0 * M * n * k;
    const int same_vnni = vnni && memcmp(yc, yb, M * n * sizeof(float)) == 0;
    printf("%-8s %5zu %5zu | %9.1f %9.1f %5.2fx | %8.1f%% %9.2e %9.2e %9.2e | %9.1f %5.2fx\n",
           names[s], n, k, flop / ta * 1e-9, flop / tb * 1e-9, ta / tb, 100 * tq / tb, e_ref,
           e_f32, amax, vnni ? flop / tv * 1e-9 : 0, vnni ? ta / tv : 0);
    // Checks: the scalar path against the same reference, a split of W's rows (bitwise the
    // same outputs), and row 0 against the decode kernel.
    void *xs = aligned_alloc(64, kvk_int8_activation_bytes(M, k));
    kvk_int8_quantize_activations(KVK_SCALAR, x, M, k, k, xs);
    const int same_q = memcmp(xs, xq, M * k) == 0;
    kvk_gemm_int8(KVK_SCALAR, KVK_Q4_1, w, n, k, 0, n, xs, M, 0.0f, yc, n, scratch);
    double e_scalar = 0;
    for (size_t i = 0; i < M * n; i++) e_scalar = fmax(e_scalar, fabs(yc[i] - ref[i]));
    const size_t cut = 40;  // not a multiple of 16 or 8
    kvk_gemm_int8(KVK_AVX2, KVK_Q4_1, w, n, k, 0, cut, xq, M, 0.0f, yc, n, scratch);
    kvk_gemm_int8(KVK_AVX2, KVK_Q4_1, w, n, k, cut, n - cut, xq, M, 0.0f, yc, n, scratch);
    const int same_split = memcmp(yc, yb, M * n * sizeof(float)) == 0;
    float *y1 = malloc(n * sizeof(float)), *ms = malloc(kvk_matvec_scratch(KVK_Q4_1, k) * 4);
    kvk_matvec_int8(KVK_AVX2, KVK_Q4_1, w, n, k, x, 0.0f, y1, ms);
    double e_dec = 0;
    for (size_t r = 0; r < n; r++) e_dec = fmax(e_dec, fabs(y1[r] - ref[r]));
    printf("         checks: xq scalar==avx2 %s, split bitwise %s, vnni==avx2 bitwise %s, "
           "scalar err_ref %.2e, decode row0 err_ref %.2e\n",
           same_q ? "yes" : "NO", same_split ? "yes" : "NO", same_vnni ? "yes" : "NO", e_scalar,
           e_dec);
    free(w), free(x), free(tile), free(ya), free(yb), free(yc), free(xq), free(scratch);
    free(ref), free(xs), free(y1), free(ms);
  }
  return 0;
}

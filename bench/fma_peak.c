// The float32 ceiling of a CPU's vector units: fused multiply-adds on independent registers,
// nothing loaded, on 1 and then T threads, for AVX2 (8 lanes) and, where the CPU has it,
// AVX-512 (16 lanes). A product can reach this share of it at best; docs/engine.md compares
// prefill's GFLOP/s with it.
//
//   gcc -O3 -pthread bench/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak [T]
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define STEPS 20000000L  // per chain
#define CHAINS 12        // independent accumulators: more than FMA latency × ports

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx2,fma"))) static void *avx2(void *out) {
  __m256 a[CHAINS];
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps((float)i);
  for (long n = 0; n < STEPS; n++) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  float s = 0, lanes[8];
  for (int i = 0; i < CHAINS; i++) {
    _mm256_storeu_ps(lanes, a[i]);
    s += lanes[0];
  }
  *(float *)out = s;  // keeps the chains alive
  return NULL;
}

__attribute__((target("avx512f"))) static void *avx512(void *out) {
  __m512 a[CHAINS];
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
  for (long n = 0; n < STEPS; n++) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  float s = 0, lanes[16];
  for (int i = 0; i < CHAINS; i++) {
    _mm512_storeu_ps(lanes, a[i]);
    s += lanes[0];
  }
  *(float *)out = s;
  return NULL;
}

static void run(const char *name, void *(*body)(void *), int lanes, int threads) {
  pthread_t t[64];
  float sink[64];
  const double start = now();
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, body, &sink[i]);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  const double flops = 2.0 * lanes * CHAINS * (double)STEPS * threads;
  printf("%s, %d thread%s: %.1f GFLOP/s\n", name, threads, threads > 1 ? "s" : "",
         flops / (now() - start) / 1e9);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (threads < 1 || threads > 64) threads = 2;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    run("AVX2 FMA", avx2, 8, 1);
    run("AVX2 FMA", avx2, 8, threads);
  }
  if (__builtin_cpu_supports("avx512f")) {
    run("AVX-512 FMA", avx512, 16, 1);
    run("AVX-512 FMA", avx512, 16, threads);
  }
  return 0;
}

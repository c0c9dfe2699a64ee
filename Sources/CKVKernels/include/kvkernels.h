// Weight kernels at the weights' stored precision: dequantizing rows into float32 (for the
// prefill's sgemm) and fused matrix-vector products (for decode), each in a portable form and,
// where the CPU has them, AVX2 and AVX-512 forms chosen at run time. They know nothing of
// models: a weight is `rows` rows of `cols` elements in one of the formats below, rows stored
// one after another, blocks laid out as ggml lays them out.
#ifndef KVKERNELS_H
#define KVKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Storage formats (block layouts as in ggml-common.h).
typedef enum {
  KVK_F32 = 0,
  KVK_F16 = 1,
  KVK_BF16 = 2,
  KVK_Q8_0 = 3,
  KVK_Q4_0 = 4,
  KVK_Q4_1 = 5,
  KVK_Q4_K = 6,
  KVK_Q6_K = 7,
  KVK_FORMAT_COUNT = 8
} kvk_format;

/// Instruction-set paths. KVK_AVX512_VNNI is KVK_AVX512 plus VPDPBUSD: the float kernels treat
/// it as KVK_AVX512; `kvk_matvec_int8` uses VPDPBUSD on it.
typedef enum { KVK_SCALAR = 0, KVK_AVX2 = 1, KVK_AVX512 = 2, KVK_AVX512_VNNI = 3 } kvk_isa;

/// CPU features, as bits of `kvk_cpu_features()`: what CPUID reports and the OS has enabled
/// (XGETBV), so a bit is set only when the instructions can run.
#define KVK_FEATURE_AVX2 1         // with FMA and F16C
#define KVK_FEATURE_AVX512 2       // F, BW, VL, DQ
#define KVK_FEATURE_AVX512_VNNI 4
#define KVK_FEATURE_AVX512_BF16 8
#define KVK_FEATURE_AMX 16         // AMX-TILE with AMX-BF16 and AMX-INT8

unsigned kvk_cpu_features(void);
/// Whether `isa` can run on this CPU.
int kvk_isa_supported(kvk_isa isa);

/// Elements per block and bytes per block of `format`.
int kvk_block_elements(kvk_format format);
int kvk_block_bytes(kvk_format format);

/// IEEE binary16 → binary32, exact for every input (subnormals, ±0, ±inf; a NaN keeps its
/// payload in place, as numpy does).
float kvk_half_to_float(uint16_t h);

/// Dequantizes `rows` rows of `cols` elements (a multiple of the block size) from `src` into
/// `dst` (row stride `ldd` floats). Every path computes ggml's reference values bit for bit
/// (same products, same order, no fused multiply-add).
void kvk_dequantize_rows(kvk_isa isa, kvk_format format, const void *src, size_t rows,
                         size_t cols, float *dst, size_t ldd);

/// y[r] = Σ_c w[r][c]·x[c] + beta·y[r] for `rows` rows (the float32 dot of each dequantized row
/// with x, accumulated in float32; the order of the sum depends on the path, not on threads).
/// `scratch` holds at least `kvk_matvec_scratch(format, cols)` floats.
void kvk_matvec(kvk_isa isa, kvk_format format, const void *w, size_t rows, size_t cols,
                const float *x, float beta, float *y, float *scratch);
/// Floats of scratch `kvk_matvec` and `kvk_matvec_int8` need: the float kernels' (a dequantized
/// row, or dots and block sums) plus the integer kernels' quantized x (`cols` rounded up to 64).
size_t kvk_matvec_scratch(kvk_format format, size_t cols);

/// The bfloat16 product of the prefill (needs KVK_FEATURE_AVX512_BF16): out = A·Wᵀ (+ beta·out)
/// with W packed by `kvk_bf16_pack_weights` (n rows of k, any format; `row` holds k floats) into
/// `kvk_bf16_packed_count(n, k)` bfloat16 and A (m rows of k floats, stride lda) rounded by
/// `kvk_bf16_pack_activations` into `kvk_bf16_activation_count(m, k)`. The product runs over the
/// panels (32 output features each) `panel_first ..< panel_first + panel_count`, so threads
/// can split them; each output is one float32 sum in k order, whatever the split.
size_t kvk_bf16_packed_count(size_t n, size_t k);
size_t kvk_bf16_activation_count(size_t m, size_t k);
void kvk_bf16_pack_weights(kvk_format format, const void *w, size_t n, size_t k,
                           uint16_t *packed, float *row);
/// `kvk_bf16_pack_weights` for float32 rows anywhere: W's element (r, c), r < n, c < k, is
/// w[r·row_stride + c·col_stride] (K as stored: col_stride 1; Vᵀ: row_stride 1).
void kvk_bf16_pack_strided(const float *w, size_t n, size_t k, size_t row_stride,
                           size_t col_stride, uint16_t *packed);
void kvk_bf16_pack_activations(const float *a, size_t m, size_t k, size_t lda, uint16_t *out);
void kvk_bf16_gemm(const uint16_t *a, size_t m, size_t k, const uint16_t *packed, size_t n,
                   size_t panel_first, size_t panel_count, float beta, float *c, size_t ldc);

/// The same product with integer arithmetic for Q8_0, Q4_0 and Q4_1 weights (as llama.cpp's
/// vec_dot_q*_q8_0): x is quantized once per call into blocks of 32 (dx = max|x|/127,
/// xq = x/dx rounded to nearest even, and Σxq per block), then each weight block contributes
/// (float)(Σ q·xq)·(d·dx), with Σ q·xq an exact int32 (Q4_0: Σ (q-8)·xq = Σ q·xq - 8·Σxq) and,
/// for Q4_1, m·(dx·Σxq). Every path computes the same int32 sums; the float scaling and
/// accumulation order differ. The error against the float product comes from quantizing x:
/// |x - dx·xq| <= dx/2 per element. Other formats take `kvk_matvec`'s float kernels.
/// KVK_SCALAR is the reference, KVK_AVX2 (and KVK_AVX512) use VPMADDUBSW, KVK_AVX512_VNNI
/// VPDPBUSD on two blocks per 512-bit vector.
void kvk_matvec_int8(kvk_isa isa, kvk_format format, const void *w, size_t rows, size_t cols,
                     const float *x, float beta, float *y, float *scratch);

/// The integer product of the prefill for Q8_0, Q4_0 and Q4_1 weights: out = x·Wᵀ (+ beta·out),
/// x m rows of k floats, W n rows of k. x is quantized once per product by
/// `kvk_int8_quantize_activations` into `kvk_int8_activation_bytes(m, k)` bytes, each row
/// exactly as `kvk_matvec_int8` quantizes its x (blocks of 32, dx = max|x|/127, xq = x/dx
/// rounded to nearest even, Σxq), so the int32 block sums Σ q·xq are the decode kernel's; each
/// output is Σ over blocks, in k order, of (float)(Σ q·xq)·(d·dx) plus, for Q4_1, m·(dx·Σxq)
/// (Q4_0: the sum is Σ (q-8)·xq, exact in int32). `kvk_gemm_int8` computes the outputs of W's
/// rows `row_first ..< row_first + row_count` for all m rows of x, so threads split W's rows;
/// every output is the same whatever the split. `scratch` (per thread) holds
/// `kvk_gemm_int8_scratch(k)` bytes, 32-byte aligned: W's rows repacked 16 at a time into
/// unsigned bytes (Q8_0: signed), four bytes of 8 rows side by side. KVK_SCALAR is the
/// reference; KVK_AVX2 and KVK_AVX512 run VPMADDUBSW on a broadcast of 4 bytes of x against
/// those 8 rows (16 rows × 3 rows of x per register tile, Q4 sums kept in int16 for one block);
/// KVK_AVX512_VNNI runs VPDPBUSD on 16 rows per vector (32 rows × 6 rows of x) and gives the
/// AVX2 path's outputs bit for bit.
size_t kvk_int8_activation_bytes(size_t m, size_t k);
void kvk_int8_quantize_activations(kvk_isa isa, const float *x, size_t m, size_t k, size_t ldx,
                                   void *xq);
size_t kvk_gemm_int8_scratch(size_t k);
void kvk_gemm_int8(kvk_isa isa, kvk_format format, const void *w, size_t n, size_t k,
                   size_t row_first, size_t row_count, const void *xq, size_t m, float beta,
                   float *out, size_t ldc, void *scratch);

/// The softmax's passes over a row: the largest of x[0..<n] (n >= 1, NaN-free), and
/// x[i] = e^(x[i] - shift) in place, returning their sum. Every path computes each e^x
/// identically (KVTensor's `FastMath.exp` formula); the portable and AVX2 paths also sum alike
/// (8 lanes), AVX-512 in 16 lanes folded to 8.
float kvk_max(kvk_isa isa, const float *x, size_t n);
float kvk_exp_shift_sum(kvk_isa isa, float *x, size_t n, float shift);

/// Attention of a few query rows (the query heads of one KV group at decode) over one run of
/// keys, in one pass with no packing. s_j = scale·(q_r·k_j); row r sees key j iff
/// j < visible[r] (visible NULL: every key). The online softmax's state of each row is carried
/// in and out: m[r] the running maximum, l[r] the sum of e^(s − m[r]), acc[r·d ..< r·d + d]
/// = Σ e^(s_j − m[r])·v_j; start from m = −inf, l = 0, acc = 0, and split the keys into runs
/// whose states are merged afterwards. q is rows × d, contiguous; k and v are nk rows of d at
/// stride ld; `scores` is 64·rows floats of scratch. The order of every sum depends on the
/// path and d only (AVX-512 where d is a multiple of 16, AVX2 where of 8, else portable).
void kvk_attend(kvk_isa isa, const float *q, size_t rows, size_t d, const float *k,
                const float *v, size_t nk, size_t ld, float scale, const size_t *visible,
                float *m, float *l, float *acc, float *scores);

/// Runs task(context, w) for w in 0..<workers, worker 0 on the calling thread and the others on
/// helper threads that spin briefly between regions before they sleep. Returns when all are
/// done. A region opened inside a region (or while another thread holds one) runs its workers
/// one after another on the calling thread.
typedef void (*kvk_task)(void *context, long worker);
void kvk_parallel(long workers, kvk_task task, void *context);

#ifdef __cplusplus
}
#endif
#endif

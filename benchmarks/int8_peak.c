/* The int8 multiply-add peak of one core for the instruction mixes an
 * AVX2 int8 GEMM can use, measured (12 independent accumulators, operands
 * in registers, no loads): what the qgemm kernels are held against.
 *
 *   gcc -O2 -o /tmp/int8_peak benchmarks/int8_peak.c && /tmp/int8_peak
 *
 * Times are this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so a busy
 * machine that preempts the thread does not lower the figures. x86-64 with
 * AVX2 only (inline assembly). */
#include <stdio.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ymm0..11 accumulators, ymm12 16-bit ones, ymm13 the activations, ymm14
 * the weights, ymm15 the temporary */
#define R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
/* u8 x s8 pairs to int16 (may saturate), widened to int32 by vpmaddwd */
#define UBS_WD(i) "vpmaddubsw %%ymm14, %%ymm13, %%ymm15\n vpmaddwd %%ymm12, %%ymm15, %%ymm15\n" \
                  "vpaddd %%ymm15, %%ymm" #i ", %%ymm" #i "\n"
/* the same with the weights taking the activations' sign first (maas's
 * saturation-free scheme for rows with negative values) */
#define SIGN(i) "vpsignb %%ymm13, %%ymm14, %%ymm15\n vpmaddubsw %%ymm15, %%ymm13, %%ymm15\n" \
                "vpmaddwd %%ymm12, %%ymm15, %%ymm15\n vpaddd %%ymm15, %%ymm" #i ", %%ymm" #i "\n"
/* int16 x int16 pairs to int32 (16 multiply-adds an instruction) */
#define WD(i) "vpmaddwd %%ymm14, %%ymm13, %%ymm15\n vpaddd %%ymm15, %%ymm" #i ", %%ymm" #i "\n"
/* u8 x s8 pairs accumulated in int16 (saturates: not usable, for scale) */
#define UBS_W(i) "vpmaddubsw %%ymm14, %%ymm13, %%ymm15\n vpaddw %%ymm15, %%ymm" #i ", %%ymm" #i "\n"
#define LOOP(BODY)                                                                              \
    do {                                                                                        \
        long n_ = n;                                                                            \
        __asm__ volatile("vpxor %%xmm13, %%xmm13, %%xmm13\n vpxor %%xmm14, %%xmm14, %%xmm14\n"  \
                         "1:\n" R12(BODY) "dec %0\n jnz 1b\n"                                   \
                         : "+r"(n_)::"memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",  \
                           "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",  \
                           "xmm14", "xmm15");                                                   \
    } while (0)

int main(void)
{
    const long n = 20000000;
    double t;
    t = cpu_now();
    LOOP(UBS_WD);
    t = cpu_now() - t;
    printf("vpmaddubsw+vpmaddwd+vpaddd          %6.1f GOP/s a core (+128 scheme, can saturate)\n",
           2.0 * n * 12 * 32 / t / 1e9);
    t = cpu_now();
    LOOP(SIGN);
    t = cpu_now() - t;
    printf("vpsignb+vpmaddubsw+vpmaddwd+vpaddd  %6.1f GOP/s a core (|a| x sign(w, a): exact)\n",
           2.0 * n * 12 * 32 / t / 1e9);
    t = cpu_now();
    LOOP(WD);
    t = cpu_now() - t;
    printf("vpmaddwd+vpaddd (int16 operands)    %6.1f GOP/s a core (exact)\n",
           2.0 * n * 12 * 16 / t / 1e9);
    t = cpu_now();
    LOOP(UBS_W);
    t = cpu_now() - t;
    printf("vpmaddubsw+vpaddw (int16 sums)      %6.1f GOP/s a core (saturates: not usable)\n",
           2.0 * n * 12 * 32 / t / 1e9);
    return 0;
}

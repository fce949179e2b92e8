/* fxe_kernels.h -- the C side of the cython backend: the maths, the row kernels of every
 * instruction-set tier (fxe_variants.h, generated), the parallel runner, and the choice of
 * tier at import. _kernels.pyx fills an fxe_params from a KernelCall and calls fxe_call. */
#ifndef FXE_KERNELS_H
#define FXE_KERNELS_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "fxe_params.h"
#include "fxe_math.h"
#include "fxe_variants.h"
#include "fxe_runner.h"

static fxe_kernel (*fxe_active)[FXE_N_KERNELS] = NULL;
static int fxe_active_tier = 0;

/* want: the highest tier allowed (FASTXENT_SIMD); returns the tier chosen */
static int fxe_select(int want)
{
    int k = want < FXE_N_TIERS - 1 ? want : FXE_N_TIERS - 1;
    while (k > 0 && (!fxe_tier_supported(k) || fxe_tier_table(k) == NULL)) k--;
    fxe_active = fxe_tier_table(k);
    fxe_active_tier = k;
    return k;
}

#define FXE_K_SMALL (FXE_N_KERNELS - 1)

/* the kernel, task size and per-thread scratch of a call */
static fxe_kernel fxe_plan(const fxe_params *p, int is64, fxe_ssize *task, size_t *scratch)
{
    const size_t es = is64 ? sizeof(double) : sizeof(float);
    int k = p->family;
    if (k == FXE_SOFTMAX && p->C <= FXE_SMALL_C && !p->lse_in) k = FXE_K_SMALL;
    *task = fxe_task_rows(p, k == FXE_K_SMALL);
    *scratch = 0;
    if (k == FXE_K_SMALL) *scratch = 3 * (size_t)FXE_SMALL_C * FXE_SB * es;
    else if (k == FXE_HESSP) *scratch = (size_t)p->C * es;
    else if (k == FXE_SOFTMAX && p->grad && p->softcap != 0) *scratch = 2 * (size_t)p->C * es;
    return fxe_active[is64][k];
}
#endif

/* fxe_params.h -- the C side of the kernel ABI: one record per call (fastxent/_backends/abi.py
 * documents every field), the per-task counters, and the kernel signature. */
#ifndef FXE_PARAMS_H
#define FXE_PARAMS_H
#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fxe_ssize;

/* kernel families (abi.py FAMILY_*) */
enum { FXE_SOFTMAX = 0, FXE_HESSP, FXE_LABEL_GRAD, FXE_SIGMOID, FXE_SIGMOID_LABEL_GRAD,
       FXE_LOGSUMEXP, FXE_LOG_SOFTMAX, FXE_SOFTMAX_PROB, FXE_N_FAMILIES };

/* diagnostics bits (abi.py CHECK_*) and counters */
enum { FXE_CHK_PROB = 1, FXE_CHK_NONFINITE = 2, FXE_CHK_LABELS = 4 };
enum { FXE_D_PROB_ROWS = 0,      /* logits rows that look like softmax outputs */
       FXE_D_NONFINITE_ROWS,     /* rows with NaN or +inf logits, or -inf on a target */
       FXE_D_NAN_LABEL_ROWS,     /* dense label rows holding NaN */
       FXE_D_NEG_LABEL_ROWS,     /* dense label rows with a negative entry */
       FXE_D_SUM_LABEL_ROWS,     /* dense label rows not summing to 1 */
       FXE_D_BIG_LABEL_ROWS,     /* dense label rows with an entry > 1 (logits as labels) */
       FXE_D_UNIT_ELEMS,         /* sigmoid: elements of logits inside [0, 1] */
       FXE_D_OUT01_ELEMS,        /* probabilities: elements outside [0, 1] */
       FXE_N_DIAG };

typedef struct {
    fxe_ssize nbad;              /* integer labels outside [0, C) that are not ignored */
    int failed;                  /* a scratch allocation failed (nothing was computed) */
    fxe_ssize diag[FXE_N_DIAG];  /* counts */
    fxe_ssize first[FXE_N_DIAG]; /* first row (or element) of each count, -1 if none */
} fxe_counts;

typedef struct {
    /* arrays (NULL when absent); dtype T is the logits' dtype */
    const void *x;           /* (n, C) logits */
    const void *y;           /* dense labels: (n, C), or one row broadcast (y_rows == 1) */
    const fxe_ssize *t;      /* integer labels (n,) */
    const void *cw;          /* (C,) class weights; sigmoid: pos_weight */
    const void *rs;          /* row weights (n,); sigmoid: (n,) or (n, C) (rs_elem) */
    const void *lse_in;      /* (n,) saved logsumexp: backward in one pass */
    const void *coef_in;     /* (n,) softmax coefficient for a class shard (with lse_in) */
    const void *v;           /* (n, C) vector of a Hessian-vector product */
    void *loss;              /* (n,) per-row losses; sigmoid (n, C) when loss_2d */
    void *grad;              /* (n, C) gradient (may be x: in place); hessp / utilities out */
    void *lse_out;           /* (n,) logsumexp of each row */
    fxe_ssize n, C;
    fxe_ssize y_rows;        /* n, or 1 for broadcast dense labels */
    int family, has_ignore, shard, rs_elem, loss_2d, want_total, check, mode;
    fxe_ssize ignore_index;
    double eps, epsc;        /* label smoothing; eps / (total classes) */
    double z, softcap, gscale, sum_cw; /* z-loss; cap (0: none); gradient factor; sum of cw */
    double prob_tol, label_tol;        /* diagnostics: |row sum - 1| tolerances */
} fxe_params;

/* rows [r0, r1): returns the task's loss total (sum_i rs_i * loss_i) */
typedef double (*fxe_kernel)(const fxe_params *, fxe_ssize, fxe_ssize, void *, fxe_counts *);

/* count one occurrence of diagnostic k at row (or element) i */
#define FXE_COUNT(cn, k, i) do { if ((cn)->diag[k]++ == 0 || (i) < (cn)->first[k]) \
                                     (cn)->first[k] = (i); } while (0)
#endif

/* fxe_runner.h -- the parallel runner shared by every variant: rows split into fixed tasks
 * (their boundaries depend on the shape only, so totals are summed in the same order for
 * any thread count: the same bits), tasks handed out dynamically (a thread slowed by
 * another process takes fewer), per-task loss totals summed in task order. */
#ifndef FXE_RUNNER_H
#define FXE_RUNNER_H
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#define FXE_OPENMP 1
/* The OpenMP runtime's current limit: OMP_NUM_THREADS, omp_set_num_threads, and so
 * threadpoolctl's threadpool_limits (which calls it), as for scikit-learn's loops. */
static inline int fxe_omp_max_threads(void) { return omp_get_max_threads(); }
#else
#define FXE_OPENMP 0
static inline int fxe_omp_max_threads(void) { return 1; }
#endif
#ifndef FXE_BUILD_FLAGS
#define FXE_BUILD_FLAGS "unknown"
#endif
#ifndef FXE_BUILD_DIRECTIVES
#define FXE_BUILD_DIRECTIVES "unknown"
#endif

/* elements per task: ~64 KB of float32 logits, enough that handing out a task costs
 * nothing next to it, small enough that two threads finish together */
#define FXE_TASK_ELEMS 16384

static fxe_ssize fxe_task_rows(const fxe_params *p, int small)
{
    fxe_ssize per = FXE_TASK_ELEMS / (p->C > 0 ? p->C : 1);
    if (per < 1) per = 1;
    if (small) per = ((per + FXE_SB - 1) / FXE_SB) * FXE_SB;
    return per;
}

static void fxe_counts_init(fxe_counts *c)
{
    c->nbad = 0;
    c->failed = 0;
    for (int k = 0; k < FXE_N_DIAG; k++) { c->diag[k] = 0; c->first[k] = -1; }
}

static void fxe_counts_merge(fxe_counts *into, const fxe_counts *c)
{
    into->nbad += c->nbad;
    into->failed |= c->failed;
    for (int k = 0; k < FXE_N_DIAG; k++) {
        if (c->diag[k] && (into->first[k] < 0 || c->first[k] < into->first[k]))
            into->first[k] = c->first[k];
        into->diag[k] += c->diag[k];
    }
}

/* Contention. When another process keeps one of our cores busy, a team thread can be
 * descheduled for a scheduler time slice (milliseconds), and the end of the parallel region
 * waits for it: a 0.2 ms call then takes several ms. Dynamic tasks keep the work flowing
 * (the master takes the absent thread's share) but not the join. So the master measures how
 * long the join made it wait after its own last task: on an idle machine at most about one
 * task (the others' last ones); a wait longer than FXE_LATE_S and than two of the master's
 * own tasks means a thread was away, and calls then run on one thread (which has a core to
 * itself) for FXE_SERIAL_S before trying the team again. */
#define FXE_LATE_S 300e-6
#define FXE_SERIAL_S 0.1
static double fxe_serial_until = 0.0;     /* omp_get_wtime() deadline of the serial spell */
static long fxe_serial_spells = 0;        /* how many spells began (reported by info) */

/* whether the join's wait after the master's last task says a team thread was away */
static int fxe_team_was_late(double wait, double master_work, fxe_ssize master_tasks)
{
    const double per_task = master_work / (master_tasks > 0 ? (double)master_tasks : 1.0);
    return wait > FXE_LATE_S && wait > 2 * per_task;
}

/* seconds left in the current serial spell (0 when none), and the count of spells */
static double fxe_serial_left(long *spells)
{
    *spells = fxe_serial_spells;
#ifdef _OPENMP
    const double left = fxe_serial_until - omp_get_wtime();
    return left > 0 ? left : 0.0;
#else
    return 0.0;
#endif
}

/* Run rows [r0, r1) of p with kernel fn (task size task) on up to nthreads threads; r0 is a
 * task boundary. Returns the loss total; adds to *cn (cn->failed: out of memory).
 * scratch_bytes per thread. */
static double fxe_run(fxe_kernel fn, const fxe_params *p, fxe_ssize r0, fxe_ssize r1,
                      fxe_ssize task, int nthreads, size_t scratch_bytes, fxe_counts *cn)
{
    const fxe_ssize ntasks = (r1 - r0 + task - 1) / task;
    double part_stack[256];
    double *part = ntasks <= 256 ? part_stack : (double *)malloc(sizeof(double) * ntasks);
    int failed = 0;
    if (!part) { cn->failed = 1; return 0.0; }
    if (nthreads > ntasks) nthreads = (int)ntasks;
#ifdef _OPENMP
    double t0 = 0.0, t_master = 0.0;
    fxe_ssize master_tasks = 0;
    if (nthreads > 1) {
        double until;
        t0 = omp_get_wtime();
#pragma omp atomic read
        until = fxe_serial_until;
        if (t0 < until) nthreads = 1;
    }
    if (nthreads > 1) {
#pragma omp parallel num_threads(nthreads)
        {
            fxe_counts local;
            fxe_counts_init(&local);
            void *scr = scratch_bytes ? aligned_alloc(64, (scratch_bytes + 63) / 64 * 64) : NULL;
            if (scratch_bytes && !scr) {
#pragma omp atomic write
                failed = 1;
            } else {
                fxe_ssize mine = 0;
#pragma omp for schedule(dynamic, 1) nowait
                for (fxe_ssize k = 0; k < ntasks; k++) {
                    const fxe_ssize lo = r0 + k * task, hi = lo + task < r1 ? lo + task : r1;
                    part[k] = fn(p, lo, hi, scr, &local);
                    mine++;
                }
                if (omp_get_thread_num() == 0) master_tasks = mine;
            }
            free(scr);
            if (omp_get_thread_num() == 0) t_master = omp_get_wtime();
#pragma omp critical(fxe_merge)
            fxe_counts_merge(cn, &local);
        }
        const double t1 = omp_get_wtime();
        if (fxe_team_was_late(t1 - t_master, t_master - t0, master_tasks)) {
#pragma omp atomic write
            fxe_serial_until = t1 + FXE_SERIAL_S;
#pragma omp atomic update
            fxe_serial_spells++;
        }
    } else
#endif
    {
        void *scr = scratch_bytes ? aligned_alloc(64, (scratch_bytes + 63) / 64 * 64) : NULL;
        if (scratch_bytes && !scr) failed = 1;
        else
            for (fxe_ssize k = 0; k < ntasks; k++) {
                const fxe_ssize lo = r0 + k * task, hi = lo + task < r1 ? lo + task : r1;
                part[k] = fn(p, lo, hi, scr, cn);
            }
        free(scr);
    }
    double total = 0.0;
    for (fxe_ssize k = 0; k < ntasks; k++) total += part[k];
    if (part != part_stack) free(part);
    if (failed) cn->failed = 1;
    return total;
}
#endif

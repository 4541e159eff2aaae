/* Memory ordering and waiting for delayer_core/shm_exchange.py (built at first use, loaded
 * with ctypes). The Python side owns the layout; this file only sees addresses.
 *
 * A writer fills a slot's payload with plain stores, then release-stores the slot's
 * sequence number; a reader acquire-loads the sequence and, once it is >= the pass it waits
 * for, reads the payload. Release/acquire makes the payload stores visible to the reader
 * (STLR/LDAR on Arm64; plain MOV plus a compiler barrier on x86-64, whose TSO already keeps
 * store-store and load-load order). The release store also orders the writer's earlier
 * *loads* (of other slots' payloads) before it, which double buffering relies on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define LIVENESS_NS 2000000LL /* owners' liveness checked every 2 ms once past spinning */
#define YIELD_NS 1000000LL    /* sched_yield for 1 ms after spinning, then short sleeps */
#define NAP_NS 50000L         /* 50 us: cheap enough to wake on time, frees the core */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Publish: called right after the payload's plain stores (numpy, same thread); a release
 * store orders every earlier load and store of the thread before it, whoever issued them. */
void dps_store_release(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

int64_t dps_load_acquire(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* Read /proc/<pid>/stat: returns the start time (clock ticks since boot, field 22), 0 if
 * the process is gone or a zombie (kill(pid, 0) still succeeds on an unreaped zombie, and a
 * SIGKILLed rank stays one until its launcher reaps it), -1 if it cannot be read. */
int64_t dps_starttime(int64_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ESRCH ? 0 : -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int err = errno;
    close(fd);
    if (n <= 0) return err == ESRCH ? 0 : -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (p == NULL || p[1] != ' ') return -1;
    p += 2; /* field 3: state */
    if (*p == 'Z' || *p == 'X' || *p == 'x') return 0;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) return -1;
        p++;
    }
    return (int64_t)strtoll(p, NULL, 10);
}

/* owner = {pid, start time}; 0 = unclaimed. Dead: no such pid, a zombie, or a pid that was
 * reused by another process (different start time). Unknown counts as alive. */
static int owner_dead(const int64_t *owner) {
    int64_t pid = __atomic_load_n(&owner[0], __ATOMIC_ACQUIRE);
    if (pid <= 0) return 0;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 1;
    int64_t start = __atomic_load_n(&owner[1], __ATOMIC_RELAXED);
    int64_t now = dps_starttime(pid);
    return now == 0 || (now > 0 && start > 0 && now != start);
}

/* Wait until *seqs[i] >= target for every i < n: spin (with a pause hint) for spin_ns, then
 * yield / nap until the deadline (timeout_ns < 0: none), checking the owners' liveness every
 * LIVENESS_NS. Returns -1 once all arrived; else the index i of a slot that had not, with
 * *why = 1 (deadline reached) or 2 (its owner is gone). */
int dps_wait(int64_t *const *seqs, int64_t *const *owners, int n, int64_t target,
             int64_t spin_ns, int64_t timeout_ns, int *why) {
    int i = 0; /* slots below i have arrived; sequences only grow, so they stay arrived */
    int64_t t0 = 0, spin_end = 0, deadline = 0, next_check = 0;
    for (uint64_t iter = 0;; iter++) {
        while (i < n && __atomic_load_n(seqs[i], __ATOMIC_ACQUIRE) >= target) i++;
        if (i == n) return -1;
        if (iter == 0) {
            t0 = now_ns();
            spin_end = t0 + spin_ns;
            deadline = timeout_ns < 0 ? INT64_MAX : t0 + timeout_ns;
            next_check = spin_end;
        }
        if ((iter & 63) != 0 && iter < (1u << 30)) { /* spinning: read the clock rarely */
            cpu_relax();
            continue;
        }
        int64_t t = now_ns();
        if (t < spin_end && t < deadline) {
            cpu_relax();
            continue;
        }
        iter = 1u << 30; /* past spinning: check the clock on every round from now on */
        if (t >= next_check) {
            for (int j = i; j < n; j++) {
                if (__atomic_load_n(seqs[j], __ATOMIC_ACQUIRE) < target && owner_dead(owners[j])) {
                    *why = 2;
                    return j;
                }
            }
            next_check = t + LIVENESS_NS;
        }
        if (t >= deadline) {
            *why = 1;
            return i;
        }
        if (t < spin_end + YIELD_NS) {
            sched_yield(); /* lets a descheduled peer on this core run, stays responsive */
        } else {
            struct timespec nap = {0, NAP_NS};
            nanosleep(&nap, NULL); /* a long wait must not burn a core others need */
        }
    }
}

/* One reader-of-every-row pass in one call: a ctypes call costs more than the gather itself,
 * so publishing, waiting and reducing the rows happen here. ctx is an int64 array, indexed
 * by the P_* words below (set up by shm_exchange.RowPass); the row to publish sits at P_ROW,
 * and the call writes the rows' column minima then maxima after it. The payload is written
 * with plain stores, then the sequence release-stored, exactly as publish() does. */
enum {
    P_SEQ, P_N, P_WIDTH, P_STEP, P_SPIN, P_TIMEOUT, P_MY_SEQ, P_MY_BUF, P_SEQS, P_OWNERS,
    P_FIRST_BUF, P_STRIDE, P_WHY, P_ROW
};

int dps_row_pass(int64_t *ctx) {
    int64_t seq = ++ctx[P_SEQ], width = ctx[P_WIDTH], *row = &ctx[P_ROW];
    int64_t *mine = (int64_t *)(intptr_t)ctx[P_MY_BUF] + (seq & 1) * width;
    memcpy(mine, row, (size_t)width * sizeof *row);
    __atomic_store_n((int64_t *)(intptr_t)ctx[P_MY_SEQ], seq, __ATOMIC_RELEASE);
    int why = 0, n = (int)ctx[P_N];
    int late = dps_wait((int64_t *const *)(intptr_t)ctx[P_SEQS],
                        (int64_t *const *)(intptr_t)ctx[P_OWNERS], n, seq, ctx[P_SPIN],
                        ctx[P_TIMEOUT], &why);
    if (late >= 0) {
        ctx[P_WHY] = why;
        return late;
    }
    /* the rows of slots 0, step, 2*step... (a TP group's first rank): column min and max */
    const char *base = (const char *)(intptr_t)ctx[P_FIRST_BUF] + (seq & 1) * width * 8;
    int64_t *lo = row + width, *hi = lo + width;
    memcpy(lo, base, (size_t)width * sizeof *lo);
    memcpy(hi, base, (size_t)width * sizeof *hi);
    for (int k = (int)ctx[P_STEP]; k < n; k += (int)ctx[P_STEP]) {
        const int64_t *r = (const int64_t *)(base + (int64_t)k * ctx[P_STRIDE]);
        for (int64_t f = 0; f < width; f++) {
            if (r[f] < lo[f]) lo[f] = r[f];
            if (r[f] > hi[f]) hi[f] = r[f];
        }
    }
    return -1;
}

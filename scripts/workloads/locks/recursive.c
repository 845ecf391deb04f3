/* A recursive mutex taken DEPTH times (nested), held HOLD_US at the innermost level, then
 * released DEPTH times; 2 threads, ITER times each. Each thread measures its outermost holds
 * (from the first lock's return to the last unlock's call) and prints their total.
 * usage: recursive ITER DEPTH HOLD_US */
#include "common.h"

pthread_mutex_t g_rec_lock;
static int iters, depth;
static uint64_t hold_ns;

static __thread uint64_t outer_hold;

static void nest(int level) {
    pthread_mutex_lock(&g_rec_lock);
    uint64_t t0 = now_ns();
    if (level + 1 < depth) {
        nest(level + 1);
    } else {
        busy_ns(hold_ns);
    }
    if (level == 0) outer_hold += now_ns() - t0;
    pthread_mutex_unlock(&g_rec_lock);
}

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < iters; i++) {
        nest(0);
        sleep_ns(500000);
    }
    printf("tid=%d acq=%d hold_ns=%llu\n", tid(), iters, (unsigned long long)outer_hold);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    iters = atoi(argv[1]);
    depth = atoi(argv[2]);
    hold_ns = strtoull(argv[3], NULL, 10) * 1000;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g_rec_lock, &a);
    ready_then_wait_for_go();
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return 0;
}

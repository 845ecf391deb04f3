/* N threads take one global mutex ITER times each and hold it HOLD_US (busy), sleeping GAP_US
 * between. Each thread measures its own wait (around pthread_mutex_lock) and hold, and prints
 * them: the oracle the test compares gilwatch's numbers to.
 * usage: mutex_hold THREADS ITER HOLD_US GAP_US */
#include "common.h"

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
int g_not_a_mutex = 42;

static int iters;
static uint64_t hold_ns, gap_ns;

static void *worker(void *arg) {
    (void)arg;
    uint64_t wait = 0, hold = 0;
    for (int i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();
        pthread_mutex_lock(&g_lock);
        uint64_t t1 = now_ns();
        busy_ns(hold_ns);
        uint64_t t2 = now_ns();
        pthread_mutex_unlock(&g_lock);
        wait += t1 - t0;
        hold += t2 - t1;
        sleep_ns(gap_ns);
    }
    printf("tid=%d acq=%d wait_ns=%llu hold_ns=%llu\n", tid(), iters, (unsigned long long)wait,
           (unsigned long long)hold);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s THREADS ITER HOLD_US GAP_US\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    iters = atoi(argv[2]);
    hold_ns = strtoull(argv[3], NULL, 10) * 1000;
    gap_ns = strtoull(argv[4], NULL, 10) * 1000;
    ready_then_wait_for_go();
    pthread_t t[64];
    for (int i = 0; i < n && i < 64; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < n && i < 64; i++) pthread_join(t[i], NULL);
    return 0;
}

/* A custom lock behind its own functions (for --lock-fns): a test-and-set spinlock with
 * my_spin_lock(struct spin *) / my_spin_unlock(struct spin *). 2 threads on lock A, ITER times,
 * holding 1 ms; 1 thread on lock B, ITER times, holding 500 µs. Each prints its own hold total.
 * usage: spinlock ITER */
#include "common.h"

struct spin {
    volatile int locked;
};

struct spin g_spin_a, g_spin_b;
static int iters;

__attribute__((noinline)) void my_spin_lock(struct spin *s) {
    while (__atomic_exchange_n(&s->locked, 1, __ATOMIC_ACQUIRE)) {
        while (s->locked) {
            sched_yield();
        }
    }
}

__attribute__((noinline)) void my_spin_unlock(struct spin *s) {
    __atomic_store_n(&s->locked, 0, __ATOMIC_RELEASE);
}

struct job {
    struct spin *lock;
    uint64_t hold_ns;
};

static void *worker(void *arg) {
    struct job *j = arg;
    uint64_t hold = 0;
    for (int i = 0; i < iters; i++) {
        my_spin_lock(j->lock);
        uint64_t t0 = now_ns();
        busy_ns(j->hold_ns);
        hold += now_ns() - t0;
        my_spin_unlock(j->lock);
        sleep_ns(200000);
    }
    printf("tid=%d lock=%s acq=%d hold_ns=%llu\n", tid(), j->lock == &g_spin_a ? "a" : "b", iters,
           (unsigned long long)hold);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    iters = atoi(argv[1]);
    ready_then_wait_for_go();
    struct job a = {&g_spin_a, 1000000}, b = {&g_spin_b, 500000};
    pthread_t t[3];
    pthread_create(&t[0], NULL, worker, &a);
    pthread_create(&t[1], NULL, worker, &a);
    pthread_create(&t[2], NULL, worker, &b);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    return 0;
}

/* A consumer waits on a condition variable under g_cv_lock (pthread_cond_wait, or
 * pthread_cond_timedwait with MODE=timedwait), then holds the mutex 1 ms; a producer sleeps 4 ms,
 * then signals under the mutex, holding it 200 µs. ITER rounds. The consumer measures its own
 * time inside the condition wait and its hold after it, and prints them.
 * usage: condvar ITER wait|timedwait */
#include "common.h"

pthread_mutex_t g_cv_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int ready, iters, timed;

static void *consumer(void *arg) {
    (void)arg;
    uint64_t in_wait = 0, hold = 0, waits = 0;
    for (int i = 0; i < iters; i++) {
        pthread_mutex_lock(&g_cv_lock);
        while (!ready) {
            uint64_t t0 = now_ns();
            if (timed) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += 5;
                pthread_cond_timedwait(&g_cv, &g_cv_lock, &ts);
            } else {
                pthread_cond_wait(&g_cv, &g_cv_lock);
            }
            in_wait += now_ns() - t0;
            waits++;
        }
        ready = 0;
        uint64_t t1 = now_ns();
        busy_ns(1000000);
        hold += now_ns() - t1;
        pthread_mutex_unlock(&g_cv_lock);
    }
    printf("consumer tid=%d rounds=%d cond_waits=%llu cond_wait_ns=%llu hold_after_ns=%llu\n",
           tid(), iters, (unsigned long long)waits, (unsigned long long)in_wait,
           (unsigned long long)hold);
    fflush(stdout);
    return NULL;
}

static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < iters; i++) {
        sleep_ns(4000000);
        pthread_mutex_lock(&g_cv_lock);
        ready = 1;
        pthread_cond_signal(&g_cv);
        busy_ns(200000);
        pthread_mutex_unlock(&g_cv_lock);
        /* Let the consumer take its turn before the next round. */
        while (1) {
            pthread_mutex_lock(&g_cv_lock);
            int r = ready;
            pthread_mutex_unlock(&g_cv_lock);
            if (!r) break;
            sleep_ns(100000);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    iters = atoi(argv[1]);
    timed = strcmp(argv[2], "timedwait") == 0;
    ready_then_wait_for_go();
    pthread_t c, p;
    pthread_create(&c, NULL, consumer, NULL);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(c, NULL);
    pthread_join(p, NULL);
    return 0;
}

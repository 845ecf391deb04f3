/* One mutex: a holder takes it for 5 ms and lets go for 1 ms, ROUNDS times; a "trier" polls it
 * with pthread_mutex_trylock every 200 µs, holding it 300 µs when it gets it; a "timer" calls
 * pthread_mutex_timedlock with a 1 ms timeout every 2 ms, holding it 300 µs when it gets it.
 * Each counts its own outcomes and prints them.
 * usage: trylock ROUNDS */
#include "common.h"

#include <errno.h>

pthread_mutex_t g_try_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int done;
static int rounds;

static void *holder(void *arg) {
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&g_try_lock);
        busy_ns(5000000);
        pthread_mutex_unlock(&g_try_lock);
        sleep_ns(1000000);
    }
    done = 1;
    return NULL;
}

static void *trier(void *arg) {
    (void)arg;
    unsigned ok = 0, busy = 0;
    while (!done) {
        int r = pthread_mutex_trylock(&g_try_lock);
        if (r == 0) {
            ok++;
            busy_ns(300000);
            pthread_mutex_unlock(&g_try_lock);
        } else if (r == EBUSY) {
            busy++;
        }
        sleep_ns(200000);
    }
    printf("trier tid=%d ok=%u busy=%u\n", tid(), ok, busy);
    fflush(stdout);
    return NULL;
}

static void *timer(void *arg) {
    (void)arg;
    unsigned ok = 0, timedout = 0;
    while (!done) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        int r = pthread_mutex_timedlock(&g_try_lock, &ts);
        if (r == 0) {
            ok++;
            busy_ns(300000);
            pthread_mutex_unlock(&g_try_lock);
        } else if (r == ETIMEDOUT) {
            timedout++;
        }
        sleep_ns(2000000);
    }
    printf("timer tid=%d ok=%u timedout=%u\n", tid(), ok, timedout);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    rounds = atoi(argv[1]);
    ready_then_wait_for_go();
    pthread_t t[3];
    pthread_create(&t[0], NULL, holder, NULL);
    pthread_create(&t[1], NULL, trier, NULL);
    pthread_create(&t[2], NULL, timer, NULL);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    return 0;
}

/* Two global mutexes with different contention, until killed:
 * g_hot_lock: 3 threads, hold 1 ms, no pause (always contended);
 * g_cool_lock: 2 threads, hold 50 µs, then sleep 2 ms (rarely contended).
 * Each lock call goes through its own function, so call sites are distinct.
 * usage: two_locks */
#include "common.h"

pthread_mutex_t g_hot_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t g_cool_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) static void hot_work(void) {
    pthread_mutex_lock(&g_hot_lock);
    busy_ns(1000000);
    pthread_mutex_unlock(&g_hot_lock);
}

__attribute__((noinline)) static void cool_work(void) {
    pthread_mutex_lock(&g_cool_lock);
    busy_ns(50000);
    pthread_mutex_unlock(&g_cool_lock);
}

static void *hot(void *arg) {
    (void)arg;
    for (;;) {
        hot_work();
        sleep_ns(10000);
    }
    return NULL;
}

static void *cool(void *arg) {
    (void)arg;
    for (;;) {
        cool_work();
        sleep_ns(2000000);
    }
    return NULL;
}

int main(void) {
    pthread_t t[5];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, hot, NULL);
    for (int i = 3; i < 5; i++) pthread_create(&t[i], NULL, cool, NULL);
    printf("ready\n");
    fflush(stdout);
    pthread_join(t[0], NULL);
    return 0;
}

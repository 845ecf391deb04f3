// Tight-lock microbenchmark: uncontended pthread_mutex_lock/unlock pairs on one global mutex,
// flat out, on one thread: what probes on the lock path cost per pair.
//
// Prints "ready", waits for a line on stdin, loops for SECONDS, then prints one JSON line:
// pairs and ns per pair. The line "armed" (instead of "go") first waits until an observer has
// put its breakpoints (int3, 0xCC) into both pthread_mutex_lock and pthread_mutex_unlock, as
// this process sees its own copy of libc's text, and reports how long that took (attach_ms).
// Build: cc -O2 -o lock_loop lock_loop.c -lpthread      Usage: lock_loop SECONDS
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// A global with a symbol, so `gilwatch --lock g_lock` can name it.
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
volatile unsigned long g_sink;

#define SCAN 128

static double now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

// A breakpoint where the function's original bytes had none.
static int armed(const unsigned char *f, const unsigned char *orig) {
	for (int i = 0; i < SCAN; i++)
		if (f[i] == 0xCC && orig[i] != 0xCC)
			return 1;
	return 0;
}

int main(int argc, char **argv) {
	double seconds = argc > 1 ? atof(argv[1]) : 4.0;
	const unsigned char *lf = (const unsigned char *)(void *)pthread_mutex_lock;
	const unsigned char *uf = (const unsigned char *)(void *)pthread_mutex_unlock;
	unsigned char lock0[SCAN], unlock0[SCAN];
	memcpy(lock0, lf, SCAN);
	memcpy(unlock0, uf, SCAN);
	printf("ready\n");
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		return 1;
	double attach_ms = -1;
	if (strncmp(line, "armed", 5) == 0) {
		double t0 = now_ns();
		while (!(armed(lf, lock0) && armed(uf, unlock0))) {
			if (now_ns() - t0 > 30e9) {
				fprintf(stderr, "no breakpoints in pthread_mutex_lock/unlock after 30 s\n");
				return 1;
			}
			usleep(1000);
		}
		attach_ms = (now_ns() - t0) / 1e6;
	}
	unsigned long n = 0;
	double start = now_ns(), deadline = start + seconds * 1e9, t;
	do {
		for (int i = 0; i < 10000; i++) {
			pthread_mutex_lock(&g_lock);
			g_sink++;
			pthread_mutex_unlock(&g_lock);
		}
		n += 10000;
	} while ((t = now_ns()) < deadline);
	printf("{\"pairs\": %lu, \"elapsed_ns\": %.0f, \"ns_per_pair\": %.3f", n, t - start, (t - start) / n);
	if (attach_ms >= 0)
		printf(", \"attach_ms\": %.3f", attach_ms);
	printf("}\n");
	fflush(stdout);
	return 0;
}

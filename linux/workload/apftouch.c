// SPDX-License-Identifier: GPL-2.0
/*
 * apftouch: a user-mode page-touching workload for the asyncpf Linux client.
 *
 * Usage: apftouch PROCS MIB PASSES [WORK]
 *
 * Forks PROCS processes. Each maps MIB MiB of anonymous memory and makes
 * PASSES passes over it; at every page it checks the word the previous pass
 * wrote, writes a new one, and spins WORK iterations (computation between
 * touches). At the end each process checks every word of its last pass.
 * Prints one line:
 *
 *   @linux-touch procs=P mib=M passes=K work=W errors=E seconds=S
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static uint64_t tag(unsigned long proc, unsigned long pass, unsigned long page)
{
	return (proc + 1) << 48 | (pass + 1) << 32 | page;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long child(unsigned long proc, unsigned long mib,
			   unsigned long passes, unsigned long work)
{
	unsigned long pages = mib * 1024 * 1024 / PAGE, errors = 0;
	volatile uint64_t *mem;
	volatile unsigned long sink = 0;

	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 1;
	for (unsigned long pass = 0; pass < passes; pass++) {
		for (unsigned long i = 0; i < pages; i++) {
			volatile uint64_t *word = mem + i * (PAGE / 8) + pass % (PAGE / 8);
			volatile uint64_t *last = mem + i * (PAGE / 8) + (pass + PAGE / 8 - 1) % (PAGE / 8);

			if (pass && *last != tag(proc, pass - 1, i))
				errors++;
			*word = tag(proc, pass, i);
			for (unsigned long w = 0; w < work; w++)
				sink += w;
		}
	}
	for (unsigned long i = 0; i < pages; i++)
		if (mem[i * (PAGE / 8) + (passes - 1) % (PAGE / 8)] != tag(proc, passes - 1, i))
			errors++;
	return errors;
}

int main(int argc, char **argv)
{
	unsigned long procs, mib, passes, work, errors = 0;
	int fds[2];
	double t0;

	if (argc < 4) {
		fprintf(stderr, "usage: apftouch PROCS MIB PASSES [WORK]\n");
		return 2;
	}
	procs = strtoul(argv[1], NULL, 0);
	mib = strtoul(argv[2], NULL, 0);
	passes = strtoul(argv[3], NULL, 0);
	work = argc > 4 ? strtoul(argv[4], NULL, 0) : 0;
	if (!procs || !mib || !passes || pipe(fds))
		return 2;
	t0 = now();
	for (unsigned long p = 0; p < procs; p++) {
		if (fork() == 0) {
			unsigned long e = child(p, mib, passes, work);

			if (write(fds[1], &e, sizeof(e)) != sizeof(e))
				_exit(1);
			_exit(0);
		}
	}
	for (unsigned long p = 0; p < procs; p++) {
		unsigned long e;
		int status;

		if (read(fds[0], &e, sizeof(e)) != sizeof(e))
			e = 1;
		errors += e;
		wait(&status);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			errors++;
	}
	printf("@linux-touch procs=%lu mib=%lu passes=%lu work=%lu errors=%lu seconds=%.2f\n",
	       procs, mib, passes, work, errors, now() - t0);
	return errors ? 1 : 0;
}

/*
 * floor: the least a supervisor can do, as a reference for the bench's
 * kill -9 → accepting times. Not a product: no logs, no state, no
 * readiness, no backoff, no ports of its own choosing.
 *
 *   floor <child> <first port> <n>
 *
 * It prints "ready" once it can be told to start, then waits for SIGUSR1
 * and starts n children, child i as `<child> <first port + i>` with its
 * output on /dev/null. A child that dies is started again, on the same
 * port, as soon as waitpid returns it: one thread blocked in waitpid, a
 * posix_spawn (glibc: clone with CLONE_VM|CLONE_VFORK, then exec), and
 * nothing else. SIGTERM kill -9's the children, reaps them and exits 0.
 *
 * What is left between a kill and the replacement accepting is the
 * machine's: the signal's delivery, the exit, the wake-up, the clone and
 * exec, the child's own start and the prober. See bench/README.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *child;
static int first, n;
static volatile pid_t *pids; /* by child index; read by the SIGTERM handler */
static volatile sig_atomic_t stopping;
static posix_spawn_file_actions_t fa;
static posix_spawnattr_t attr;

/* onterm runs with SIGTERM blocked everywhere else a child is started
 * (see spawn), so no child started after it escapes the kill. */
static void onterm(int sig) {
	(void)sig;
	stopping = 1;
	for (int i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
}

static int spawn(int i) {
	char port[16];
	snprintf(port, sizeof port, "%d", first + i);
	char *argv[] = {(char *)child, port, NULL};
	pid_t pid;
	int err = posix_spawn(&pid, child, &fa, &attr, argv, environ);
	if (err) {
		fprintf(stderr, "floor: start %s %s: %s\n", child, port, strerror(err));
		return -1;
	}
	pids[i] = pid;
	return 0;
}

static int index_of(pid_t pid) {
	for (int i = 0; i < n; i++)
		if (pids[i] == pid)
			return i;
	return -1;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: floor <child> <first port> <n>\n");
		return 2;
	}
	child = argv[1];
	first = atoi(argv[2]);
	n = atoi(argv[3]);
	if (first <= 0 || first + n > 65536 || n <= 0) {
		fprintf(stderr, "floor: bad first port %s or count %s\n", argv[2], argv[3]);
		return 2;
	}
	pids = calloc(n, sizeof *pids);
	if (!pids) {
		perror("floor: calloc");
		return 1;
	}

	/* /dev/null once, given to every child as stdin, stdout and stderr. */
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0) {
		perror("floor: /dev/null");
		return 1;
	}
	posix_spawn_file_actions_init(&fa);
	for (int fd = 0; fd < 3; fd++)
		posix_spawn_file_actions_adddup2(&fa, null, fd);

	sigset_t none, term, usr1;
	sigemptyset(&none);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	/* Children start with no signal blocked and SIGTERM and SIGUSR1 at
	 * their defaults, whatever floor does with them. */
	posix_spawnattr_init(&attr);
	sigset_t deflt = term;
	sigaddset(&deflt, SIGUSR1);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &deflt);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

	/* No SA_RESTART: SIGTERM ends a waitpid with EINTR. */
	struct sigaction sa = {0};
	sa.sa_handler = onterm;
	sigaction(SIGTERM, &sa, NULL);
	/* Both blocked until the start: a SIGTERM before it ends floor here. */
	sigset_t startstop = usr1;
	sigaddset(&startstop, SIGTERM);
	sigprocmask(SIG_BLOCK, &startstop, NULL);

	printf("ready\n");
	fflush(stdout);
	int sig;
	if (sigwait(&startstop, &sig) != 0)
		return 1;
	if (sig == SIGTERM)
		return 0;
	for (int i = 0; i < n; i++)
		if (spawn(i) != 0) {
			onterm(SIGTERM);
			return 1;
		}
	/* A SIGTERM that came during the start is handled here. */
	sigprocmask(SIG_UNBLOCK, &term, NULL);

	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD && stopping)
				return 0;
			perror("floor: waitpid");
			return 1;
		}
		int i = index_of(pid);
		if (i < 0)
			continue;
		sigprocmask(SIG_BLOCK, &term, NULL);
		pids[i] = 0;
		int err = stopping ? 0 : spawn(i);
		sigprocmask(SIG_UNBLOCK, &term, NULL);
		if (err != 0)
			return 1;
	}
}

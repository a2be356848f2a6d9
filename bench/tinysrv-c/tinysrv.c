/*
 * tinysrv, in C: the tiny child the bench runs under every supervisor by
 * default (see bench/README.md, "The child"). It behaves like the Go one in
 * bench/tinysrv: it listens on 127.0.0.1:<port> (argv[1], else $PORT, else
 * $ALLEX_TCP_PORT) and answers each connection with its pid and a newline
 * before closing it, so the bench can tell a replacement from the process it
 * killed without asking the supervisor. It only returns on failure (exit 1
 * with a message on stderr): a supervisor stops it by signal.
 *
 * It exists because a Go binary's runtime start costs ~3 ms CPU, a constant
 * that is the same under every supervisor and hides their differences when
 * hundreds of children start on a small machine; this one starts in a
 * fraction of that.
 *
 * Plain POSIX C; the bench builds it with: cc -O2 -Wall -Wextra
 * This directory holds no Go files, so the go tool ignores it.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define USAGE "want a port as argv[1], $PORT or $ALLEX_TCP_PORT"

/* parse_port returns the port s holds (decimal digits only, 1 to 65535), or
 * -1. Port 0 is refused: it would listen on a port nobody asked for. */
static int parse_port(const char *s)
{
	long v = 0;

	if (s == NULL || *s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	return v == 0 ? -1 : (int)v;
}

/* first_set is the first of a, b, c that is set and not empty. */
static const char *first_set(const char *a, const char *b, const char *c)
{
	if (a != NULL && *a != '\0')
		return a;
	if (b != NULL && *b != '\0')
		return b;
	return c;
}

/* accept_again says whether an accept error only concerns the connection
 * being accepted (or a signal), so the listener keeps going. Linux reports
 * pending network errors of the new connection through accept (see
 * accept(2)); Go's net package retries on the same ones. */
static int accept_again(int err)
{
	switch (err) {
	case EINTR:
	case EAGAIN:
#if defined(EWOULDBLOCK) && EWOULDBLOCK != EAGAIN
	case EWOULDBLOCK:
#endif
	case ECONNABORTED:
	case EPROTO:
	case ENETDOWN:
	case ENETUNREACH:
	case EHOSTUNREACH:
	case ENOPROTOOPT:
	case EOPNOTSUPP:
#if defined(ENOTSUP) && ENOTSUP != EOPNOTSUPP
	case ENOTSUP:
#endif
#ifdef EHOSTDOWN
	case EHOSTDOWN:
#endif
#ifdef ENONET
	case ENONET:
#endif
		return 1;
	default:
		return 0;
	}
}

/* answer writes msg to fd; a failed write only means the prober already
 * left (SIGPIPE is ignored, so it cannot kill the process). */
static void answer(int fd, const char *msg, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, msg, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		msg += n;
		len -= (size_t)n;
	}
}

int main(int argc, char **argv)
{
	const char *arg = first_set(argc > 1 ? argv[1] : NULL, getenv("PORT"), getenv("ALLEX_TCP_PORT"));
	int port = parse_port(arg);
	struct sigaction sa;
	struct sockaddr_in sin;
	char msg[32];
	int fd, one = 1, len;

	if (port < 0) {
		fprintf(stderr, "tinysrv: " USAGE "\n");
		return 1;
	}

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGPIPE, &sa, NULL) != 0) {
		fprintf(stderr, "tinysrv: ignore SIGPIPE: %s\n", strerror(errno));
		return 1;
	}

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		fprintf(stderr, "tinysrv: socket: %s\n", strerror(errno));
		return 1;
	}
	/* As Go's net.Listen does: a replacement may bind the port while the
	 * killed child's connections are still in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
		fprintf(stderr, "tinysrv: setsockopt SO_REUSEADDR: %s\n", strerror(errno));
		return 1;
	}
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
		fprintf(stderr, "tinysrv: listen tcp 127.0.0.1:%d: bind: %s\n", port, strerror(errno));
		return 1;
	}
	/* Linux caps the backlog at net.core.somaxconn, the value Go uses. */
	if (listen(fd, 65535) != 0) {
		fprintf(stderr, "tinysrv: listen tcp 127.0.0.1:%d: listen: %s\n", port, strerror(errno));
		return 1;
	}

	len = snprintf(msg, sizeof msg, "%ld\n", (long)getpid());
	if (len < 0 || (size_t)len >= sizeof msg) {
		fprintf(stderr, "tinysrv: format pid\n");
		return 1;
	}
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			if (accept_again(errno))
				continue;
			fprintf(stderr, "tinysrv: accept tcp 127.0.0.1:%d: %s\n", port, strerror(errno));
			return 1;
		}
		answer(c, msg, (size_t)len);
		close(c);
	}
}

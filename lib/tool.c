/*  tool: posix_spawnp plus a pidfd to wait with a deadline. A tool that hangs (a stuck NFS
    mount, a full disk) is killed when its deadline passes rather than freezing the service
    loop forever; the tools used here finish in milliseconds when healthy. */
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The last bytes of the tool's output on one line, for the error message. */
static void s_tail(const char *log_path, char *out, size_t size)
{
    out[0] = '\0';
    int fd = open(log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[240];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = end > (off_t)sizeof buf - 1 ? end - (off_t)sizeof buf + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, start);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')
            buf[i] = ' ';
    while (n > 0 && buf[n - 1] == ' ')
        buf[--n] = '\0';
    snprintf(out, size, "%s", buf);
}

/* Wait for pid, at most timeout_ms; kills it when the deadline passes. 0 and *status, or -1. */
static int s_wait(pid_t pid, int timeout_ms, int *status, int *timed_out)
{
    *timed_out = 0;
    int fd = pidfd_open(pid, 0);
    if (fd >= 0) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int rc;
        do
            rc = poll(&p, 1, timeout_ms);
        while (rc < 0 && errno == EINTR);
        close(fd);
        if (rc == 0) {
            *timed_out = 1;
            kill(pid, SIGKILL);
        }
    }
    /* Without pidfds (kernel < 5.3) this wait is bounded only by the tool itself. */
    pid_t got;
    do
        got = waitpid(pid, status, 0);
    while (got < 0 && errno == EINTR);
    return got == pid ? 0 : -1;
}

int tool_run(const char *const argv[], const char *log_path, int timeout_ms, char *error,
             size_t error_size)
{
    posix_spawn_file_actions_t actions;
    if (posix_spawn_file_actions_init(&actions) != 0) {
        snprintf(error, error_size, "cannot run %s: out of memory", argv[0]);
        return -1;
    }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &actions, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        snprintf(error, error_size, "cannot run %s: %s", argv[0], strerror(rc));
        return -1;
    }
    int status = 0, timed_out = 0;
    if (s_wait(pid, timeout_ms, &status, &timed_out) != 0) {
        snprintf(error, error_size, "cannot wait for %s: %s", argv[0], strerror(errno));
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !timed_out)
        return 0;
    char tail[256];
    s_tail(log_path, tail, sizeof tail);
    if (timed_out)
        snprintf(error, error_size, "%s did not finish within %d ms and was killed", argv[0],
                 timeout_ms);
    else if (WIFEXITED(status))
        snprintf(error, error_size, "%s exited with status %d: %s", argv[0], WEXITSTATUS(status),
                 tail[0] ? tail : "no output");
    else
        snprintf(error, error_size, "%s was killed by signal %d", argv[0],
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return -1;
}

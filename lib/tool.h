/*  tool: run a maintained command-line tool (qemu-img) as a child process with posix_spawn,
    never through a shell, with a deadline. The stager creates and inspects images this way,
    and an agent makes full copies of them, instead of writing qcow2 by hand. */
#ifndef BERTH_TOOL_H
#define BERTH_TOOL_H

#include <stddef.h>

/* Run argv (argv[0] looked up in PATH) with stdin from /dev/null and stdout + stderr into
   log_path, and wait at most timeout_ms. 0 when it exited with status 0; -1 otherwise, with
   error saying which tool failed how (exit status or signal, and the tail of its output). */
int tool_run(const char *const argv[], const char *log_path, int timeout_ms, char *error,
             size_t error_size);

#endif

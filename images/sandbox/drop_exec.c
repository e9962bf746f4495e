/*
 * convoy-drop-exec UID GID ERRFD PROGRAM [ARG...]
 *
 * The agent's way to start a task as the sandbox user with vfork (sandbox_agent.runnables.drop):
 * it sets all three uids to UID and all three gids to GID, then execs PROGRAM (looked up on the
 * PATH of its environment when it has no slash, as execvp does) with the environment it was
 * given, untouched. A fork of the agent (tens of MiB: its page tables copied, then a fault on
 * every page either side writes next) cost more than the task itself; a vfork of the agent
 * plus this exec costs about half.
 *
 * Contract:
 * - nothing is exec'd unless the uid and gid changes succeeded, and never as root (UID, GID
 *   and ERRFD must be positive decimal numbers, else it exits 126 at once);
 * - ERRFD is made close-on-exec, so a successful exec of PROGRAM closes it; when the uid or
 *   gid change fails or PROGRAM cannot be exec'd, the errno (a native int) is written to
 *   ERRFD and it exits (126, 127);
 * - supplementary groups are left as they are: the agent cleared them before it serves
 *   (sandbox_agent.privileges.drop_to), and it no longer has the capability to change them.
 *
 * No C library: glibc's start-up code would run in secure mode here (the agent's real and
 * effective uids differ, so the kernel sets AT_SECURE) and strip LD_*, TMPDIR and the like
 * from the task's environment; and this is all raw system calls anyway. x86-64 Linux only,
 * like the agent bundle. Built by scripts/build-drop-exec (for scripts/build-images) with the
 * host's C compiler.
 */
#include <asm/unistd.h>
#include <asm-generic/errno.h>

#define F_SETFD 2
#define FD_CLOEXEC 1
#define PATH_MAX 4096

static long sys3(long number, long a, long b, long c) {
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return result;
}

__attribute__((noreturn)) static void leave(int code) {
    for (;;) sys3(__NR_exit_group, code, 0, 0);
}

/* The errno ``error`` reported on ``errfd``, then the exit ``code``. */
__attribute__((noreturn)) static void report(long errfd, int error, int code) {
    sys3(__NR_write, errfd, (long)&error, sizeof error);
    leave(code);
}

/* A positive decimal number, or -1. */
static long number(const char *text) {
    long value = 0;
    if (!*text) return -1;
    for (; *text; text++) {
        if (*text < '0' || *text > '9' || value > 100000000) return -1;
        value = value * 10 + (*text - '0');
    }
    return value > 0 ? value : -1;
}

static int has_slash(const char *text) {
    for (; *text; text++)
        if (*text == '/') return 1;
    return 0;
}

/* The value of PATH in envp, or the default execvp and Python's os.defpath use. */
static const char *search_path(char **envp) {
    for (; *envp; envp++) {
        const char *entry = *envp;
        if (entry[0] == 'P' && entry[1] == 'A' && entry[2] == 'T' && entry[3] == 'H' && entry[4] == '=')
            return entry + 5;
    }
    return "/bin:/usr/bin";
}

/* execve of each candidate on the PATH in turn; returns the errno to report. */
static long exec_on_path(char **argv, char **envp) {
    const char *name = argv[0];
    if (has_slash(name)) return -sys3(__NR_execve, (long)name, (long)argv, (long)envp);
    long name_length = 0;
    while (name[name_length]) name_length++;
    long reported = ENOENT;
    const char *entry = search_path(envp);
    for (;;) {
        char path[PATH_MAX];
        long length = 0;
        while (entry[length] && entry[length] != ':') length++;
        if (length + 1 + name_length < PATH_MAX) {
            long at = 0;
            if (length == 0) path[at++] = '.'; /* an empty entry is the current directory */
            for (long i = 0; i < length; i++) path[at++] = entry[i];
            path[at++] = '/';
            for (long i = 0; i <= name_length; i++) path[at++] = name[i];
            long error = -sys3(__NR_execve, (long)path, (long)argv, (long)envp);
            /* As execvp: a program found but not runnable is what is reported. */
            if (error != ENOENT && error != ENOTDIR && reported == ENOENT) reported = error;
        }
        if (!entry[length]) return reported;
        entry += length + 1;
    }
}

__attribute__((noreturn, used)) void drop_exec(long *stack) {
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;
    if (argc < 5) leave(126);
    long uid = number(argv[1]), gid = number(argv[2]), errfd = number(argv[3]);
    if (uid < 0 || gid < 0 || errfd < 0) leave(126);
    long failed = sys3(__NR_fcntl, errfd, F_SETFD, FD_CLOEXEC);
    if (failed < 0) report(errfd, (int)-failed, 126);
    /* gids first: once the uids are the user's, the gids could no longer be changed */
    if ((failed = sys3(__NR_setresgid, gid, gid, gid)) < 0) report(errfd, (int)-failed, 126);
    if ((failed = sys3(__NR_setresuid, uid, uid, uid)) < 0) report(errfd, (int)-failed, 126);
    report(errfd, (int)exec_on_path(argv + 4, envp), 127);
}

/* The entry point: the kernel's initial stack (argc, argv, envp) handed to drop_exec, aligned. */
__asm__(".globl _start\n"
        "_start:\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call drop_exec\n");

/* maxrss: run a command and print its peak resident memory (KiB) to
 * stderr as "maxrss: N".  A child's ru_maxrss starts from the RSS of the
 * process that forked it, so the forker must be small: this one is,
 * unlike a Python interpreter. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: maxrss COMMAND [ARGS...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        perror(argv[1]);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
        perror("maxrss");
        return 2;
    }
    fprintf(stderr, "maxrss: %ld\n", ru.ru_maxrss);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

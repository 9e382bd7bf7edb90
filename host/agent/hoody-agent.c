/*
 * hoody-agent: starts commands inside one container for hoodyd, so a cron run costs a fork and an exec in the
 * container instead of a `docker exec` (about 15 ms of the engine's CPU each). hoodyd starts it once per
 * container with `docker exec` (so it has the container's user namespace, capabilities, seccomp filter,
 * no-new-privileges, AppArmor profile and cgroup); every command it forks inherits exactly those.
 *
 *   hoody-agent <socket>    connects to hoodyd's socket for this container (bind-mounted read-only) and serves
 *
 * Frames, both ways: u32 payload length, u8 type, u32 run id (little endian), then the payload.
 *   hoodyd -> agent  'R' run:  NUL-terminated strings: user, working dir ("" = inherit), output cap (decimal),
 *                              argument count (decimal), the arguments, then environment entries to the end
 *                    'K' kill: the run's process group gets SIGKILL
 *   agent -> hoodyd  'H' hello (payload: version), 'O' output bytes, 'X' exit (i32: status >= 0, or -signal),
 *                    'E' the run could not start (payload: why)
 * The agent exits when hoodyd's end closes, killing what it started: a run nobody can report is not left over.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "1"
#define MAX_RUNS 64
#define MAX_FRAME (1u << 20)
#define MAX_GROUPS 64

extern char **environ;

struct run {
  int used;
  uint32_t id;
  pid_t pid;
  int fd; /* the read end of the run's stdout+stderr pipe, -1 once at EOF */
  int exited;
  int status;
  long cap;
  long sent;
};

static int sock = -1;
static struct run runs[MAX_RUNS];

static void write_all(const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(sock, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(0); /* hoodyd is gone */
    c += w;
    n -= (size_t)w;
  }
}

static void send_frame(uint8_t type, uint32_t id, const void *payload, uint32_t n) {
  unsigned char h[9];
  memcpy(h, &n, 4); /* x86-64 and arm64 are little endian, as is hoodyd's side */
  h[4] = type;
  memcpy(h + 5, &id, 4);
  write_all(h, 9);
  if (n) write_all(payload, n);
}

static void send_error(uint32_t id, const char *why) { send_frame('E', id, why, (uint32_t)strlen(why)); }

/* The user as `docker exec -u` resolves it: a name or a number, from the container's own /etc/passwd. */
struct who {
  uid_t uid;
  gid_t gid;
  char home[256];
  char name[64];
};

static int find_user(const char *user, struct who *w) {
  char *end;
  long numeric = strtol(user, &end, 10);
  int by_id = *user && !*end;
  w->uid = by_id ? (uid_t)numeric : 0;
  w->gid = 0;
  strcpy(w->home, "/");
  snprintf(w->name, sizeof w->name, "%s", user);
  FILE *f = fopen("/etc/passwd", "re");
  if (f) {
    char line[1024];
    while (fgets(line, sizeof line, f)) {
      char *fields[7] = {0};
      int n = 0;
      char *s = line;
      for (char *p = line; n < 7; p++) {
        if (*p == ':' || *p == '\n' || *p == 0) {
          int last = *p == 0 || *p == '\n';
          *p = 0;
          fields[n++] = s;
          s = p + 1;
          if (last) break;
        }
      }
      if (n < 6) continue;
      int match = by_id ? strtol(fields[2], NULL, 10) == numeric : strcmp(fields[0], user) == 0;
      if (!match) continue;
      w->uid = (uid_t)strtol(fields[2], NULL, 10);
      w->gid = (gid_t)strtol(fields[3], NULL, 10);
      snprintf(w->home, sizeof w->home, "%s", fields[5]);
      snprintf(w->name, sizeof w->name, "%s", fields[0]);
      fclose(f);
      return 0;
    }
    fclose(f);
  }
  return by_id ? 0 : -1;
}

/* Supplementary groups: every /etc/group line that lists the user (what runc sets for docker exec). */
static int groups_of(const char *name, gid_t primary, gid_t *out) {
  int n = 0;
  out[n++] = primary;
  FILE *f = fopen("/etc/group", "re");
  if (!f) return n;
  char line[4096];
  while (fgets(line, sizeof line, f) && n < MAX_GROUPS) {
    line[strcspn(line, "\n")] = 0;
    char *save, *gname = strtok_r(line, ":", &save);
    char *pw = gname ? strtok_r(NULL, ":", &save) : NULL;
    char *gid = pw ? strtok_r(NULL, ":", &save) : NULL;
    char *members = gid ? strtok_r(NULL, ":", &save) : NULL;
    if (!members) continue;
    for (char *m = strtok_r(members, ",", &save); m; m = strtok_r(NULL, ",", &save))
      if (strcmp(m, name) == 0) {
        out[n++] = (gid_t)strtol(gid, NULL, 10);
        break;
      }
  }
  fclose(f);
  return n;
}

static int has_key(char **env, int n, const char *entry) {
  size_t k = strcspn(entry, "=");
  for (int i = 0; i < n; i++)
    if (strncmp(env[i], entry, k) == 0 && env[i][k] == '=') return 1;
  return 0;
}

static struct run *slot_of(uint32_t id) {
  for (int i = 0; i < MAX_RUNS; i++)
    if (runs[i].used && runs[i].id == id) return &runs[i];
  return NULL;
}

static void start_run(uint32_t id, char *p, uint32_t n) {
  char *strs[4096];
  int count = 0;
  for (uint32_t i = 0, s = 0; i < n && count < 4095; i++)
    if (p[i] == 0) {
      strs[count++] = p + s;
      s = i + 1;
    }
  if (count < 5) return send_error(id, "malformed run request");
  const char *user = strs[0], *cwd = strs[1];
  long cap = strtol(strs[2], NULL, 10);
  int argc = (int)strtol(strs[3], NULL, 10);
  if (argc < 1 || 4 + argc > count) return send_error(id, "malformed run request");
  char **argv = &strs[4];
  char **extra = &strs[4 + argc];
  int nextra = count - 4 - argc;
  if (slot_of(id)) return send_error(id, "run id in use");
  struct run *r = NULL;
  for (int i = 0; i < MAX_RUNS && !r; i++)
    if (!runs[i].used) r = &runs[i];
  if (!r) return send_error(id, "too many runs at once");
  struct who w;
  if (*user && find_user(user, &w) < 0) {
    char why[160];
    snprintf(why, sizeof why, "unable to find user %.64s: no matching entries in passwd file", user);
    return send_error(id, why);
  }
  gid_t groups[MAX_GROUPS];
  int ngroups = *user ? groups_of(w.name, w.gid, groups) : 0;

  /* The environment: the agent's own (the container's, as docker exec gave it), the run's on top, HOME last. */
  int nenv = 0;
  while (environ[nenv]) nenv++;
  char **env = calloc((size_t)(nenv + nextra + 2), sizeof *env);
  char home[300];
  if (!env) return send_error(id, "out of memory");
  int k = 0;
  for (int i = 0; i < nextra; i++) env[k++] = extra[i];
  for (int i = 0; i < nenv; i++)
    if (!has_key(env, k, environ[i]) && (!*user || strncmp(environ[i], "HOME=", 5) != 0)) env[k++] = environ[i];
  if (*user && !has_key(env, k, "HOME=")) {
    snprintf(home, sizeof home, "HOME=%s", w.home);
    env[k++] = home;
  }
  env[k] = NULL;

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) {
    free(env);
    return send_error(id, "pipe failed");
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    free(env);
    return send_error(id, "fork failed (the container's pids limit?)");
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid(); /* its own process group: a kill reaches what it started too */
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    if (*user) {
      if (setgroups((size_t)ngroups, groups) < 0 || setgid(w.gid) < 0 || setuid(w.uid) < 0) {
        dprintf(2, "hoody-agent: cannot switch to user %s: %s\n", user, strerror(errno));
        _exit(126);
      }
    }
    if (*cwd && chdir(cwd) < 0) {
      dprintf(2, "hoody-agent: cannot enter %s: %s\n", cwd, strerror(errno));
      _exit(126);
    }
    environ = env;
    execvp(argv[0], argv);
    dprintf(2, "hoody-agent: %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(fds[1]);
  free(env);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  *r = (struct run){.used = 1, .id = id, .pid = pid, .fd = fds[0], .cap = cap < 0 ? 0 : cap};
}

static void finish_if_done(struct run *r) {
  if (!r->used || !r->exited || r->fd >= 0) return;
  int32_t code = WIFEXITED(r->status) ? WEXITSTATUS(r->status) : -WTERMSIG(r->status);
  send_frame('X', r->id, &code, 4);
  r->used = 0;
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
    for (int i = 0; i < MAX_RUNS; i++)
      if (runs[i].used && runs[i].pid == pid) {
        runs[i].exited = 1;
        runs[i].status = status;
        finish_if_done(&runs[i]);
      }
}

static void drain(struct run *r) {
  char buf[16384];
  for (;;) {
    ssize_t got = read(r->fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) {
      close(r->fd);
      r->fd = -1;
      finish_if_done(r);
      return;
    }
    /* Past the cap (plus one byte, so hoodyd sees the truncation) output is read and dropped here. */
    long room = r->cap + 1 - r->sent;
    if (room > 0) {
      uint32_t n = (uint32_t)(got < room ? got : room);
      send_frame('O', r->id, buf, n);
      r->sent += n;
    }
  }
}

static void kill_all(void) {
  for (int i = 0; i < MAX_RUNS; i++)
    if (runs[i].used) {
      kill(-runs[i].pid, SIGKILL);
      kill(runs[i].pid, SIGKILL);
    }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: hoody-agent <socket>\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_CHILD_SUBREAPER, 1); /* orphans of a run come back here and are reaped, not left as zombies */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (sfd < 0 || sock < 0 || strlen(argv[1]) >= sizeof addr.sun_path) return 1;
  strcpy(addr.sun_path, argv[1]);
  if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("hoody-agent: connect");
    return 1;
  }
  send_frame('H', 0, VERSION, sizeof VERSION - 1);

  static unsigned char in[MAX_FRAME + 9];
  size_t have = 0;
  for (;;) {
    struct pollfd pf[MAX_RUNS + 2];
    struct run *of[MAX_RUNS + 2];
    int n = 0;
    pf[n] = (struct pollfd){.fd = sock, .events = POLLIN};
    of[n++] = NULL;
    pf[n] = (struct pollfd){.fd = sfd, .events = POLLIN};
    of[n++] = NULL;
    for (int i = 0; i < MAX_RUNS; i++)
      if (runs[i].used && runs[i].fd >= 0) {
        pf[n] = (struct pollfd){.fd = runs[i].fd, .events = POLLIN};
        of[n++] = &runs[i];
      }
    if (poll(pf, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (pf[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
      }
      reap();
    }
    for (int i = 2; i < n; i++)
      if (pf[i].revents && of[i]->used && of[i]->fd == pf[i].fd) drain(of[i]);
    if (pf[0].revents) {
      ssize_t got = read(sock, in + have, sizeof in - have);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        kill_all();
        return 0;
      }
      have += (size_t)got;
      for (;;) {
        if (have < 9) break;
        uint32_t len, id;
        memcpy(&len, in, 4);
        memcpy(&id, in + 5, 4);
        if (len > MAX_FRAME) {
          kill_all();
          return 1;
        }
        if (have < 9 + len) break;
        unsigned char type = in[4];
        if (type == 'R') start_run(id, (char *)in + 9, len);
        else if (type == 'K') {
          struct run *r = slot_of(id);
          if (r) {
            kill(-r->pid, SIGKILL);
            kill(r->pid, SIGKILL); /* before its setsid() the group does not exist yet */
          }
        }
        memmove(in, in + 9 + len, have - 9 - len);
        have -= 9 + len;
      }
    }
  }
}

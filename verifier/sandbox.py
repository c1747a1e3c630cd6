"""Run code built from patch text (gcc, the harness) in a bubblewrap sandbox.

Why bubblewrap: it is the well-kept, small, setuid-free tool (Flatpak's) that builds the
namespaces we need — mount, PID, network, IPC, UTS, user — in one exec, and it works here
both as root and as an unprivileged user with user namespaces. Hand-rolled unshare(2)
code would repeat it with more room for mistakes. On top of it a seccomp filter of our
own (classic BPF, x86-64; no libseccomp binding needed) turns what a harness must never
do into SIGSYS, which ``GUARD_C`` (linked into every harness) reports by name:

- no network: a new network namespace (only its own ``lo``) and ``socket`` trapped;
- a read-only view of ``/usr`` (and the ``/bin``, ``/lib`` links), the build inputs
  read-only, one scratch directory the only writable place (``/tmp`` a small tmpfs);
  nothing of ``$HOME``, the repositories or the cache beyond what is bound;
- its own PID namespace: when the command ends, or the tool dies (``--die-with-parent``),
  every process in it is killed; ``--new-session`` so it cannot reach the terminal;
- limits: RLIMIT_CPU, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_CORE=0, RLIMIT_AS where the
  program is not built with ASan (gcc), and ASan's own ``hard_rss_limit_mb`` /
  ``max_allocation_size_mb`` for the harness (RLIMIT_AS breaks ASan's shadow mapping);
  a wall-clock timeout for every run.

Where no sandbox can be had (no bwrap, user namespaces disabled), ``require`` refuses
to run patch code unless ``allow_unsandboxed(True)`` was called (``--no-sandbox``);
then the old rlimits + own session are all there is, and ``status().note`` says so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from verifier.model import VerifyError

# ------------------------------------------------------------------ policy

SYSTEM_RO = ("/usr", "/etc/alternatives", "/etc/ld.so.cache")
SYSTEM_LINKS = ("/bin", "/lib", "/lib64", "/sbin", "/lib32", "/libx32")
PATH = "/usr/bin:/bin"
TMPFS_BYTES = 256 << 20
HARNESS_RSS_MB = 1024  # ASan's hard_rss_limit_mb: a 20 GB allocation ends in about a second
HARNESS_ALLOC_MB = 512  # ASan's max_allocation_size_mb: one allocation larger is a report
VIOLATION_EXIT = 88  # GUARD_C's exit status after reporting a trapped system call

_allow_unsandboxed = False


class SandboxUnavailable(VerifyError):
    """No sandbox on this machine, and running patch code without one was not allowed."""


@dataclass(frozen=True)
class Status:
    available: bool
    reason: str  # why not, or what the sandbox is
    seccomp: bool  # the system-call filter applies (x86-64 only)
    # False: root where no user namespace can be made (a chroot: the kernel refuses
    # CLONE_NEWUSER there); the other namespaces and dropped capabilities still apply
    user_ns: bool = True

    @property
    def note(self) -> str:
        if self.available:
            return f"sandbox: {self.reason}"
        return f"NO SANDBOX ({self.reason}): patch code ran with resource limits only"


def allow_unsandboxed(allow: bool = True) -> None:
    """``--no-sandbox``: run patch code even where no sandbox can be had."""
    global _allow_unsandboxed
    _allow_unsandboxed = allow


@functools.lru_cache(maxsize=1)
def status() -> Status:
    """Whether bubblewrap works on this machine (probed once per process)."""
    if os.environ.get("XEN_VERIFY_NO_BWRAP"):  # tests: behave as a machine without it
        return Status(False, "XEN_VERIFY_NO_BWRAP is set", False)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Status(False, "bubblewrap (bwrap) is not installed; Debian package bubblewrap",
                      False)
    def probe(user_ns: bool) -> subprocess.CompletedProcess | str:
        try:
            return subprocess.run(
                [bwrap, *_namespace_args(user_ns), *_system_args(), "--", "/usr/bin/true"],
                capture_output=True, timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bwrap does not run: {e}"

    seccomp = platform.machine() == "x86_64"
    filt = " + seccomp filter" if seccomp else ""
    proc = probe(True)
    if isinstance(proc, str):
        return Status(False, proc, False)
    if proc.returncode == 0:
        return Status(True, "bubblewrap (user, mount, PID, network, IPC namespaces)" + filt,
                      seccomp)
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if os.geteuid() == 0:  # root in a chroot: every namespace but the user one
        again = probe(False)
        if not isinstance(again, str) and again.returncode == 0:
            return Status(True, "bubblewrap as root without a user namespace (mount, PID, "
                          "network, IPC namespaces, capabilities dropped)" + filt, seccomp,
                          user_ns=False)
    return Status(False, "bwrap cannot create namespaces here: "
                  + (err[-1] if err else f"exit {proc.returncode}"), False)


def require() -> Status:
    """The sandbox status, or SandboxUnavailable when patch code may not run without one."""
    st = status()
    if not st.available and not _allow_unsandboxed:
        raise SandboxUnavailable(
            f"no sandbox for patch code: {st.reason}; install bubblewrap, or pass "
            "--no-sandbox to run the patch's code unconfined (limits only)"
        )
    return st


# ------------------------------------------------------------------ seccomp

_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW = 0x7FFF0000
_RET_TRAP = 0x00030000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_ENOSYS = 38
_CLONE_THREAD = 0x00010000
_O_WRITE = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY O_RDWR O_CREAT O_TRUNC O_APPEND

# What each trapped call means, by the category number the filter passes in si_errno.
CATEGORIES = {
    1: "open a socket",
    2: "run a program",
    3: "start a process",
    4: "write to the file system",
    5: "signal another process",
    6: "make a privileged system call",
}
# x86-64 system-call numbers (asm/unistd_64.h) by category; 0 = unconditional trap.
_TRAPPED: dict[int, tuple[int, ...]] = {
    1: (41, 53),  # socket socketpair
    # 2 (execve, execveat) is trapped by GUARD_C's own filter: bwrap must exec the harness
    3: (57, 58),  # fork vfork (clone: below, unless CLONE_THREAD)
    4: (85, 87, 263, 82, 264, 316, 83, 258, 84, 86, 265, 88, 266, 90, 268, 452, 92, 94,
        260, 76, 133, 259),  # creat unlink* rename* mkdir* rmdir link* symlink* chmod*
    #                          chown* truncate mknod*
    5: (62, 200),  # kill tkill (tgkill stays: raise() and abort() use it)
    6: (101, 310, 311, 165, 166, 155, 161, 308, 272, 321, 298, 250, 248, 249, 175, 313,
        176, 169, 246, 320, 323, 425, 426, 427, 428, 429, 430, 431, 432, 433, 442, 179,
        167, 168, 170, 171, 172, 173, 163, 112),  # ptrace, process_vm_*, mount family,
    #   chroot, setns, unshare, bpf, perf, keys, modules, reboot, kexec, userfaultfd,
    #   io_uring (it would bypass this filter), swap, hostname, iopl, acct, setsid
}
_OPEN_FLAGS_ARG = {2: 1, 257: 2}  # open(path, flags), openat(dirfd, path, flags)
_CLONE, _CLONE3, _OPENAT2 = 56, 435, 437
SYSCALL_NAMES = {
    41: "socket", 53: "socketpair", 59: "execve", 322: "execveat", 57: "fork", 58: "vfork",
    56: "clone", 2: "open", 257: "openat", 85: "creat", 87: "unlink", 263: "unlinkat",
    82: "rename", 264: "renameat", 316: "renameat2", 83: "mkdir", 258: "mkdirat",
    84: "rmdir", 86: "link", 265: "linkat", 88: "symlink", 266: "symlinkat", 90: "chmod",
    62: "kill", 200: "tkill", 101: "ptrace", 165: "mount", 272: "unshare", 112: "setsid",
    76: "truncate", 133: "mknod", 259: "mknodat", 425: "io_uring_setup",
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_program(processes: bool = False) -> bytes:
    """The harness's filter (struct sock_filter[]) for bwrap --seccomp.

    ``processes``: a harness that runs each path in a forked child of its own (generic
    mode) may fork and signal its children; they stay in its PID namespace, within its
    process-count limit, and exec stays trapped.
    """
    ld_abs, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    nr_off, arch_off = 0, 4

    def arg_lo(i: int) -> int:
        return 16 + 8 * i

    prog = [
        _insn(ld_abs, 0, 0, arch_off),
        _insn(jeq, 1, 0, _AUDIT_ARCH_X86_64),
        _insn(ret, 0, 0, _RET_KILL_PROCESS),
        _insn(ld_abs, 0, 0, nr_off),
        _insn(jge, 0, 1, 0x40000000),  # the x32 ABI: never used by a harness
        _insn(ret, 0, 0, _RET_KILL_PROCESS),
    ]
    for cat, numbers in _TRAPPED.items():
        if processes and cat in (3, 5):
            continue
        for nr in numbers:
            prog += [_insn(jeq, 0, 1, nr), _insn(ret, 0, 0, _RET_TRAP | cat)]
    # clone3's flags are in memory the filter cannot read: ENOSYS, glibc falls back to clone
    for nr in (_CLONE3, _OPENAT2):
        prog += [_insn(jeq, 0, 1, nr), _insn(ret, 0, 0, _RET_ERRNO | _ENOSYS)]
    if not processes:
        prog += [  # clone without CLONE_THREAD is a new process; with it, a thread (ASan's)
            _insn(jeq, 0, 4, _CLONE),
            _insn(ld_abs, 0, 0, arg_lo(0)),
            _insn(jset, 1, 0, _CLONE_THREAD),
            _insn(ret, 0, 0, _RET_TRAP | 3),
            _insn(ld_abs, 0, 0, nr_off),
        ]
    for nr, argi in _OPEN_FLAGS_ARG.items():
        prog += [
            _insn(jeq, 0, 3, nr),
            _insn(ld_abs, 0, 0, arg_lo(argi)),
            _insn(jset, 0, 1, _O_WRITE),
            _insn(ret, 0, 0, _RET_TRAP | 4),
            _insn(ld_abs, 0, 0, nr_off),
        ]
    prog.append(_insn(ret, 0, 0, _RET_ALLOW))
    return b"".join(prog)


# The SIGSYS reporter linked into every harness: it names the trapped call (and the path
# it was given, copied through a pipe so a bad pointer cannot crash the report), then
# exits. The filter has already refused the call; this only says what it was.
GUARD_C = r"""/* xen-verify sandbox guard: report a system call the sandbox refused. */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int xv_guard_pipe[2] = {-1, -1};

static const char *xv_guard_what(int cat)
{
    switch (cat) {
    case 1: return "open a socket";
    case 2: return "run a program";
    case 3: return "start a process";
    case 4: return "write to the file system";
    case 5: return "signal another process";
    default: return "make a privileged system call";
    }
}

static long xv_guard_path_arg(long nr, const greg_t *r)
{
#if defined(__x86_64__)
    switch (nr) {
    case 2: case 85: case 87: case 82: case 83: case 84: case 86: case 88: case 90:
    case 92: case 94: case 76: case 133: case 59:
        return r[REG_RDI];
    case 257: case 263: case 264: case 316: case 258: case 265: case 268: case 260:
    case 259: case 322: case 452:
        return r[REG_RSI];
    }
#else
    (void)nr; (void)r;
#endif
    return 0;
}

static void xv_guard_put(char *buf, size_t *n, size_t cap, const char *s)
{
    while (*s && *n + 1 < cap)
        buf[(*n)++] = *s++;
}

static void xv_guard_num(char *buf, size_t *n, size_t cap, long v)
{
    char tmp[24];
    int i = 0;
    if (v < 0) { xv_guard_put(buf, n, cap, "-"); v = -v; }
    do { tmp[i++] = (char)('0' + v % 10); v /= 10; } while (v && i < 23);
    while (i && *n + 1 < cap)
        buf[(*n)++] = tmp[--i];
}

__attribute__((no_sanitize("address", "undefined")))
static void xv_guard_sigsys(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    char buf[600], path[257];
    size_t n = 0;
    long nr = si->si_syscall, p;
    (void)sig;
    xv_guard_put(buf, &n, sizeof(buf), "\nXV-FINDING sandbox: ");
    xv_guard_put(buf, &n, sizeof(buf), xv_guard_what(si->si_errno));
    xv_guard_put(buf, &n, sizeof(buf), " (system call ");
    xv_guard_num(buf, &n, sizeof(buf), nr);
    p = xv_guard_path_arg(nr, uc->uc_mcontext.gregs);
    if (p && xv_guard_pipe[1] >= 0) {
        /* raw system calls: ASan's interceptors would check (and report) the buffer */
        long w = syscall(SYS_write, xv_guard_pipe[1], (const void *)p, 256);
        if (w > 0 && syscall(SYS_read, xv_guard_pipe[0], path, w) == w) {
            path[w] = 0;
            xv_guard_put(buf, &n, sizeof(buf), " path ");
            xv_guard_put(buf, &n, sizeof(buf), path);
        }
    }
    xv_guard_put(buf, &n, sizeof(buf), ")\n");
    syscall(SYS_write, 2, buf, n);
    _exit(88);
}

/* Once running, no program may be executed: bwrap's filter allowed only the first exec. */
static void xv_guard_no_exec(void)
{
#if defined(__x86_64__)
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 59, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 322, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP | 2),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { (unsigned short)(sizeof(f) / sizeof(f[0])), f };
    if (getenv("XV_SANDBOX_SECCOMP") == 0)
        return; /* not in the sandbox (--no-sandbox, or a reviewer's rebuild) */
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
        _exit(89);
#endif /* elsewhere the namespaces alone confine it (status().seccomp is False) */
}

/* The libc calls that start a program, named as the code under test called them
 * (system() blocks signals before its clone: the filter's report could not say which). */
__attribute__((no_sanitize("address", "undefined")))
static void xv_guard_program(const char *fn, const char *cmd)
{
    char buf[400];
    size_t n = 0;
    xv_guard_put(buf, &n, sizeof(buf), "\nXV-FINDING sandbox: run a program with ");
    xv_guard_put(buf, &n, sizeof(buf), fn);
    xv_guard_put(buf, &n, sizeof(buf), "() (command \"");
    if (cmd) {
        size_t i;
        for (i = 0; cmd[i] && i < 160 && n + 8 < sizeof(buf); i++)
            buf[n++] = (cmd[i] >= 32 && cmd[i] < 127 && cmd[i] != '"') ? cmd[i] : '?';
    }
    xv_guard_put(buf, &n, sizeof(buf), "\")\n");
    syscall(SYS_write, 2, buf, n);
    _exit(88);
}

int system(const char *cmd)
{
    xv_guard_program("system", cmd);
    return -1;
}

void *popen(const char *cmd, const char *mode)
{
    (void)mode;
    xv_guard_program("popen", cmd);
    return 0;
}

int posix_spawn(int *pid, const char *path, const void *fa, const void *at,
                char *const argv[], char *const envp[])
{
    (void)pid; (void)fa; (void)at; (void)argv; (void)envp;
    xv_guard_program("posix_spawn", path);
    return -1;
}

int posix_spawnp(int *pid, const char *file, const void *fa, const void *at,
                 char *const argv[], char *const envp[])
{
    (void)pid; (void)fa; (void)at; (void)argv; (void)envp;
    xv_guard_program("posix_spawnp", file);
    return -1;
}

__attribute__((constructor(101))) static void xv_guard_init(void)
{
    struct sigaction sa;
    xv_guard_no_exec();
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = xv_guard_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSYS, &sa, 0);
    if (pipe(xv_guard_pipe) < 0)
        xv_guard_pipe[0] = xv_guard_pipe[1] = -1;
}
"""


# ------------------------------------------------------------------ bwrap command line


def _namespace_args(user_ns: bool | None = None) -> list[str]:
    if user_ns is None:
        user_ns = status().user_ns
    user = ["--unshare-user"] if user_ns else []
    return [
        *user, "--unshare-pid", "--unshare-net", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session",
        "--cap-drop", "ALL", *(["--disable-userns"] if user_ns else []),
    ]


def _system_args(devices: bool = True) -> list[str]:
    """The system, read-only; ``devices`` False: of /dev only /dev/null (a build step: an
    ``#include "/dev/zero"`` then finds nothing to read, where it would read forever)."""
    args: list[str] = []
    for p in SYSTEM_RO:
        args += ["--ro-bind-try", p, p]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    dev = ["--dev", "/dev"] if devices else ["--tmpfs", "/dev", "--dev-bind", "/dev/null",
                                             "/dev/null"]
    args += ["--proc", "/proc", *dev, "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
    return args


@dataclass
class Limits:
    cpu_s: int = 60
    mem_bytes: int | None = 2 << 30  # RLIMIT_AS; None for ASan-built programs
    nproc: int = 64
    fsize_bytes: int = 512 << 20


def _preexec(limits: Limits, sandboxed: bool):  # type: ignore[no-untyped-def]
    def run() -> None:  # in the child, before exec: inherited by bwrap and all it runs
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 2))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes))
        if limits.mem_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.mem_bytes, limits.mem_bytes))
        if sandboxed:  # counted in the sandbox's own user namespace; outside, per user
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))

    return run


def command(
    argv: list[str],
    *,
    cwd: Path,
    readable: Iterable[Path] = (),
    writable: Path | None = None,
    env: Mapping[str, str] | None = None,
    seccomp_fd: int | None = None,
    devices: bool = True,
) -> list[str]:
    """The bwrap command line that runs ``argv`` in the sandbox (see the module docstring)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    args = [bwrap, *_namespace_args(), *_system_args(devices), "--clearenv"]
    for key, value in {"PATH": PATH, "LANG": "C.UTF-8", "TMPDIR": "/tmp",
                       **(env or {})}.items():
        args += ["--setenv", key, value]
    ro = [Path(p).resolve() for p in readable]
    # a path given through a symlink (an editable install's harness_templates) is also
    # bound where it was named: gcc drops an -I directory it cannot see, silently
    aliases = [(Path(p).resolve(), Path(os.path.abspath(p))) for p in readable]
    aliases = [(real, named) for real, named in aliases if real != named]
    w = Path(writable).resolve() if writable is not None else None
    here = Path(cwd).resolve()
    if not any(here == p or p in here.parents for p in [*ro, *([w] if w else [])]):
        ro.append(here)  # the working directory is always visible (read-only)
    for p in ro:
        args += ["--ro-bind", str(p), str(p)]
    for real, named in aliases:
        args += ["--ro-bind", str(real), str(named)]
    if w is not None:
        args += ["--bind", str(w), str(w)]
    args += ["--chdir", str(here)]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return [*args, "--", *argv]


def _seccomp_file(processes: bool = False) -> int:
    """A readable fd holding the filter (bwrap reads it once at start)."""
    with tempfile.TemporaryFile() as f:
        f.write(seccomp_program(processes))
        f.flush()
        return os.open(f"/proc/self/fd/{f.fileno()}", os.O_RDONLY)


def popen(
    argv: list[str],
    *,
    cwd: Path,
    readable: Iterable[Path] = (),
    writable: Path | None = None,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
    seccomp: bool = False,
    processes: bool = False,
    devices: bool = True,
    **popen_kw: object,
) -> subprocess.Popen:
    """Start ``argv`` in the sandbox (Popen-like; for the long-lived harness process).

    ``seccomp`` applies the harness filter. The process is its own session; kill it
    with ``kill(proc)``: bwrap's death ends its PID namespace, and everything in it.
    """
    st = require()
    limits = limits or Limits()
    fds: list[int] = []
    if st.available:
        fd = _seccomp_file(processes) if seccomp and st.seccomp else None
        if fd is not None:
            fds.append(fd)
            env = {**(env or {}), "XV_SANDBOX_SECCOMP": "1"}
        full = command(argv, cwd=cwd, readable=readable, writable=writable, env=env,
                       seccomp_fd=fd, devices=devices)
        run_env: dict[str, str] | None = {"PATH": os.environ.get("PATH", PATH)}
    else:  # --no-sandbox: limits and an own session only
        full = list(argv)
        run_env = {**os.environ, **(env or {})}
    try:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            full, cwd=str(cwd), env=run_env, preexec_fn=_preexec(limits, st.available),
            start_new_session=True, pass_fds=tuple(fds), close_fds=True, **popen_kw,
        )
    finally:
        for fd in fds:
            os.close(fd)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's process group (bwrap; its PID namespace dies with it)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


WATCHDOG_RSS_BYTES = (HARNESS_RSS_MB + 512) << 20  # the tool's own check, above ASan's


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every process under it (the sandbox's whole tree)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo, seen = 0, [pid], set()
    while todo and len(seen) < 4096:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Result:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    seconds: float


def run(
    argv: list[str],
    *,
    cwd: Path,
    readable: Iterable[Path] = (),
    writable: Path | None = None,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    stdin: bytes | None = None,
    seccomp: bool = False,
    max_output: int = 1 << 20,
    devices: bool = True,
) -> Result:
    """Run ``argv`` to completion in the sandbox; output is kept up to ``max_output`` bytes."""
    import time

    t0 = time.monotonic()
    proc = popen(
        argv, cwd=cwd, readable=readable, writable=writable, limits=limits, env=env,
        seccomp=seccomp, devices=devices,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    timed_out = False
    try:
        out, err = _communicate(proc, stdin, timeout_s, max_output)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill(proc)
        out, err = b"", b""
    finally:
        kill(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
    return Result(proc.returncode, out, err, timed_out, time.monotonic() - t0)


def _communicate(
    proc: subprocess.Popen, stdin: bytes | None, timeout: float, cap: int
) -> tuple[bytes, bytes]:
    """Like Popen.communicate, but output beyond ``cap`` bytes is read and dropped."""
    import selectors
    import time

    deadline = time.monotonic() + timeout
    bufs: dict[int, bytearray] = {}
    sel = selectors.DefaultSelector()
    if proc.stdin is not None:
        if stdin:
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.write(stdin)
        with contextlib.suppress(OSError):
            proc.stdin.close()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            bufs[f.fileno()] = bytearray()
            sel.register(f.fileno(), selectors.EVENT_READ)
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                elif len(bufs[key.fd]) < cap:
                    bufs[key.fd] += chunk[: cap - len(bufs[key.fd])]
        left = max(0.0, deadline - time.monotonic())
        proc.wait(timeout=left)
    finally:
        sel.close()
    out = bytes(bufs.get(proc.stdout.fileno(), b"")) if proc.stdout else b""
    err = bytes(bufs.get(proc.stderr.fileno(), b"")) if proc.stderr else b""
    return out, err


def run_sandboxed(
    argv: list[str],
    *,
    cwd: Path,
    readable: Iterable[Path] = (),
    writable: Path | None = None,
    cpu_s: int = 60,
    mem_bytes: int | None = 2 << 30,
    nproc: int = 64,
    timeout_s: float = 60.0,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    seccomp: bool = False,
) -> Result:
    """``run`` with the limits as keywords (for builds of patch text: generic mode's gcc).

    ``mem_bytes`` is RLIMIT_AS: pass None for an ASan-built program (see asan_env).
    """
    return run(argv, cwd=cwd, readable=readable, writable=writable,
               limits=Limits(cpu_s=cpu_s, mem_bytes=mem_bytes, nproc=nproc), env=env,
               timeout_s=timeout_s, stdin=stdin, seccomp=seccomp)


# A build step on a tree that may hold patch text: make ($(shell ...) runs even under
# -n) and gcc (an #include of a device or of a file outside the tree). Generous enough
# for a whole header preparation (make -j, sub-makes, flex/bison, python3).
BUILD_LIMITS = Limits(cpu_s=600, mem_bytes=4 << 30, nproc=1024, fsize_bytes=1 << 30)
# one gcc on one unit (BUILD, generic mode's lift): a macro bomb ends in two minutes
COMPILE_LIMITS = Limits(cpu_s=120, mem_bytes=3 << 30, nproc=64, fsize_bytes=512 << 20)
BUILD_OUTPUT = 16 << 20


def run_build_step(
    argv: list[str],
    *,
    cwd: Path,
    readable: Iterable[Path] = (),
    writable: Path | None = None,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    limits: Limits | None = None,
) -> subprocess.CompletedProcess[str]:
    """``run`` for make or gcc on a tree, shaped as ``subprocess.run(text=True)``'s result.

    The command sees the system read-only, ``readable`` read-only, ``writable`` (the
    tree's own copy, or an output directory) and a private ``/tmp``; no network, no home,
    no cache. Raises ``subprocess.TimeoutExpired`` at ``timeout_s`` (everything it started
    is killed), ``SandboxUnavailable`` where patch code may not run.
    """
    res = run(argv, cwd=cwd, readable=readable, writable=writable,
              limits=limits or BUILD_LIMITS, env=env, timeout_s=timeout_s,
              max_output=BUILD_OUTPUT, devices=False)
    if res.timed_out:
        raise subprocess.TimeoutExpired(argv, timeout_s)
    rc = res.returncode if res.returncode is not None else -9
    return subprocess.CompletedProcess(argv, rc, res.stdout.decode(errors="replace"),
                                       res.stderr.decode(errors="replace"))


def popen_sandboxed(
    argv: list[str],
    *,
    cwd: Path,
    readable: Iterable[Path] = (),
    writable: Path | None = None,
    cpu_s: int = 120,
    mem_bytes: int | None = None,
    nproc: int = 16,
    env: Mapping[str, str] | None = None,
    seccomp: bool = True,
    **popen_kw: object,
) -> subprocess.Popen:
    """``popen`` with the limits as keywords: a long-lived harness process (stdin/stdout
    pipes in ``popen_kw``); defaults fit an ASan harness (no RLIMIT_AS, the filter on).
    Add ``asan_env`` to ``env`` for the memory limits, and end it with ``kill``."""
    return popen(argv, cwd=cwd, readable=readable, writable=writable,
                 limits=Limits(cpu_s=cpu_s, mem_bytes=mem_bytes, nproc=nproc), env=env,
                 seccomp=seccomp, **popen_kw)


def asan_env(base: Mapping[str, str]) -> dict[str, str]:
    """Sanitizer options with the sandbox's memory limits added (see HARNESS_RSS_MB)."""
    env = dict(base)
    # detect_leaks=0: LeakSanitizer stops the world with a clone the filter refuses
    extra = [f"hard_rss_limit_mb={HARNESS_RSS_MB}",
             f"max_allocation_size_mb={HARNESS_ALLOC_MB}",
             "allocator_may_return_null=0", "detect_leaks=0"]
    env["ASAN_OPTIONS"] = ":".join([env["ASAN_OPTIONS"], *extra] if env.get("ASAN_OPTIONS")
                                   else extra)
    return env


__all__ = [
    "GUARD_C",
    "Limits",
    "Result",
    "SandboxUnavailable",
    "Status",
    "allow_unsandboxed",
    "asan_env",
    "command",
    "kill",
    "popen",
    "popen_sandboxed",
    "require",
    "run",
    "run_sandboxed",
    "status",
]

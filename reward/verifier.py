"""math-verify equivalence under a hard wall-clock limit, from any thread of any process.

Why a separate process: sympy (under math-verify) can run for minutes or for ever on a pathological
answer (`9^{9^{9^9}}`, thousands of nested braces), and math-verify's own time limit is SIGALRM,
which only works in a process's main thread; verl calls reward functions from executor threads
inside Ray actors. Why not `multiprocessing`: a 'spawn' child re-imports the caller's `__main__`,
so a script without a main guard breaks it (verl's own math_verify pool then scores 0 silently),
and 'fork' inside a threaded Ray worker can copy held locks.

Design: each calling process keeps a small pool of persistent worker processes
(`verifier_worker.py`, started with `subprocess` from its file path and fed JSON lines). A call
checks out an idle worker, sends the two answers with the seconds it has left, and waits on the
pipe with `poll`. The worker interrupts itself at that time (SIGALRM in its own main thread);
if no answer comes within `KILL_GRACE_S` more, the caller kills it, starts a replacement at once
(so its imports overlap with whatever comes next) and reports a timeout. A call therefore returns
within its timeout + `KILL_GRACE_S`, except the first one that needs math-verify in a process,
which first waits (up to `STARTUP_TIMEOUT_S`) for a worker to import and warm up sympy (about two
seconds), outside its time limit.
"""

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verifier_worker.py")
KILL_GRACE_S = 0.5
STARTUP_TIMEOUT_S = 120.0


class VerifierUnavailable(RuntimeError):
    """The first verifier process of this process could not start: the environment is broken
    (math-verify missing, memory limit too low). Raised rather than scored 0, so it is seen."""


@dataclass(frozen=True)
class Verdict:
    equal: bool
    reason: str  # math_verify_equal | math_verify_unequal | timeout | verifier_error | verifier_crashed


class _WorkerDied(Exception):
    pass


class _WorkerProcess:
    """One verifier process and the partial line read from it so far; used by one thread at a time."""

    def __init__(self, memory_mb: int):
        self.process = subprocess.Popen(
            [sys.executable, WORKER_SCRIPT, "--memory-mb", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self.ready = False
        self._unread = b""

    def alive(self) -> bool:
        return self.process.poll() is None

    def _read_message(self, deadline: float) -> dict | None:
        """The next JSON line, or None if it has not arrived by `deadline` (time.monotonic)."""
        stdout = self.process.stdout.fileno()
        # poll, not select: select fails on descriptors above 1024, common in a busy Ray worker.
        poller = select.poll()
        poller.register(stdout, select.POLLIN)
        while b"\n" not in self._unread:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if poller.poll(remaining * 1000):
                chunk = os.read(stdout, 1 << 16)
                if not chunk:
                    raise _WorkerDied
                self._unread += chunk
        line, self._unread = self._unread.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, deadline: float) -> bool:
        if not self.ready:
            self.ready = self._read_message(deadline) is not None
        return self.ready

    def ask(self, gold: str, pred: str, seconds: float, deadline: float) -> dict | None:
        request = json.dumps({"gold": gold, "pred": pred, "seconds": seconds}) + "\n"
        try:
            self.process.stdin.write(request.encode("ascii"))
            self.process.stdin.flush()
        except OSError as error:
            raise _WorkerDied from error
        return self._read_message(deadline)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


class VerifierPool:
    """Up to `max_processes` verifier processes shared by the threads of one process."""

    def __init__(self, max_processes: int, memory_mb: int):
        if max_processes < 1:
            raise ValueError(f"max_processes must be >= 1, got {max_processes}")
        self._max_processes = max_processes
        self._memory_mb = memory_mb
        self._condition = threading.Condition()
        self._idle: list[_WorkerProcess] = []
        self._process_count = 0
        self._has_started = False
        self._first_start_lock = threading.Lock()

    def check(self, gold: str, pred: str, timeout: float) -> Verdict:
        """Whether math-verify finds `pred` equivalent to `gold`, decided within `timeout` s."""
        if not self._has_started:
            self._start_first_worker()
        deadline = time.monotonic() + timeout
        worker = self._acquire(deadline)
        if worker is None:
            return Verdict(False, "timeout")
        try:
            verdict, healthy = self._check_with(worker, gold, pred, deadline)
        except BaseException:
            self._discard(worker, restart=worker.ready)
            raise
        if healthy:
            self._release(worker)
        else:
            self._discard(worker, restart=worker.ready)
        return verdict

    def _check_with(self, worker: _WorkerProcess, gold: str, pred: str, deadline: float) -> tuple[Verdict, bool]:
        try:
            if not worker.wait_ready(deadline):
                return Verdict(False, "timeout"), True
            seconds = deadline - time.monotonic()
            if seconds <= 0:
                return Verdict(False, "timeout"), True
            reply = worker.ask(gold, pred, seconds, deadline + KILL_GRACE_S)
        except _WorkerDied:
            return Verdict(False, "verifier_crashed"), False
        if reply is None:
            return Verdict(False, "timeout"), False
        if reply.get("timeout"):
            return Verdict(False, "timeout"), True
        if "error" in reply:
            return Verdict(False, "verifier_error"), not reply.get("fatal", False)
        equal = bool(reply["equal"])
        return Verdict(equal, "math_verify_equal" if equal else "math_verify_unequal"), True

    def _start_first_worker(self) -> None:
        """Start a worker and wait, outside any call's time limit, until it has imported sympy."""
        with self._first_start_lock:
            if self._has_started:
                return
            with self._condition:
                self._process_count += 1
            try:
                worker = _WorkerProcess(self._memory_mb)
            except BaseException:
                self._forget_one()
                raise
            try:
                started = worker.wait_ready(time.monotonic() + STARTUP_TIMEOUT_S)
            except _WorkerDied:
                started = False
            if not started:
                self._discard(worker, restart=False)
                raise VerifierUnavailable(
                    f"the math-verify process ({WORKER_SCRIPT}) did not start within {STARTUP_TIMEOUT_S:.0f} s; "
                    "its error, if any, is on stderr above"
                )
            self._has_started = True
            self._release(worker)

    def _acquire(self, deadline: float) -> _WorkerProcess | None:
        with self._condition:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    worker.kill()
                    self._process_count -= 1
                if self._process_count < self._max_processes:
                    self._process_count += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)
        try:
            return _WorkerProcess(self._memory_mb)
        except BaseException:
            self._forget_one()
            raise

    def _release(self, worker: _WorkerProcess) -> None:
        with self._condition:
            self._idle.append(worker)
            self._condition.notify()

    def _discard(self, worker: _WorkerProcess, restart: bool) -> None:
        worker.kill()
        if not restart:
            self._forget_one()
            return
        try:
            replacement = _WorkerProcess(self._memory_mb)
        except OSError:
            self._forget_one()
            return
        self._release(replacement)

    def _forget_one(self) -> None:
        with self._condition:
            self._process_count -= 1
            self._condition.notify()

    def worker_pids(self) -> list[int]:
        """Process ids of the idle workers (for tests and diagnostics)."""
        with self._condition:
            return [worker.process.pid for worker in self._idle]

    def close(self) -> None:
        with self._condition:
            idle, self._idle = self._idle, []
            self._process_count -= len(idle)
        for worker in idle:
            worker.kill()


_pools: dict[tuple[int, int], VerifierPool] = {}
_pools_lock = threading.Lock()


def get_pool(max_processes: int, memory_mb: int) -> VerifierPool:
    """The pool of this process for these settings, created on first use."""
    key = (max_processes, memory_mb)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = VerifierPool(max_processes, memory_mb)
        return _pools[key]


def _close_all_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.close()


def _forget_parent_pools() -> None:
    # A forked child shares its parent's pipes to the parent's workers: it must start its own
    # (and must not kill the parent's), and the lock may have been held by another thread.
    global _pools, _pools_lock
    _pools = {}
    _pools_lock = threading.Lock()


atexit.register(_close_all_pools)
os.register_at_fork(after_in_child=_forget_parent_pools)

"""A control loop in a thread of its own: absolute deadlines, overrun handling, RT settings.

The loop calls one function per period (the controller's ``read → update →
write``). Two pacings:

* ``deadline`` — tick k starts at ``t0 + k·period`` on CLOCK_MONOTONIC, slept to
  with ``clock_nanosleep(TIMER_ABSTIME)`` (absolute: the error of one tick does
  not carry into the next). A tick that ends after its deadline, or starts later
  than ``tolerance·period``, is a miss; the schedule then skips the slots it lost
  instead of bursting to catch up. ``max_consecutive_misses`` misses in a row
  (Franka's FCI stops after 20 missed 1 kHz packets) call ``on_overrun`` once
  (the controller holds and reports ERROR) until a tick is on time again.
* ``free`` — no sleeping: a simulator stepping on demand (lockstep on sim time)
  sets the pace; wall-clock periods are recorded for the figures, never counted
  as misses. The loop keeps the long switch interval throughout (nothing waits
  for it on the wall clock): the process's other threads run while a tick
  blocks and otherwise every ``TICK_SWITCH_INTERVAL``.

Real-time settings, applied in the loop thread where the system permits and
reported (``RealtimeReport``) where it does not: SCHED_FIFO priority, CPU
affinity, locked memory (``mlockall``), and a 1 ns timer slack. In CPython the
loop thread shares the GIL with the process's other Python threads (the
executor, output threads): one of them preempted by another process while it
holds the GIL stalls the loop until the scheduler runs it again, whatever the
loop's priority (priority inversion). ``io_priority`` gives the process's
other threads (Python's and the middleware's) a SCHED_FIFO priority below the
loop's for as long as the loop runs. The garbage
collector is kept out of the tick, and the interpreter's thread switch
interval is shortened so that a woken loop thread gets the GIL within
``switch_interval``: automatic collection is disabled while the
loop runs and the loop collects the youngest generation itself right after a
tick, when the rest of the period is free, and every generation every
``full_collect_period`` s.

``gil_lead`` closes the last gap: the loop wakes that long before its deadline,
takes the GIL (waiting for whichever thread holds it), and sleeps the rest of the
way to the deadline *holding* it (``clock_nanosleep`` called without releasing the
GIL), so the tick starts on the kernel's wake-up alone. The other threads lose the
GIL for ``gil_lead`` per period, no CPU time is spent.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from visuomotor_core.timing import PeriodStats

PACINGS: tuple[str, ...] = ("deadline", "free")

_CLOCK_MONOTONIC = 1
_TIMER_ABSTIME = 1
_PR_SET_PDEATHSIG = 1
_PR_SET_TIMERSLACK = 29
_MCL_CURRENT, _MCL_FUTURE = 1, 2
#: Ticks between two readings of the loop thread's CPU time.
CPU_WINDOW = 1000
#: The interpreter's switch interval while a tick runs, s: a thread that starts waiting
#: for the GIL during the tick asks the loop to drop it only after this long, so the tick
#: runs through (the short ``switch_interval`` is back before the loop sleeps, so the loop,
#: waking, gets the GIL from the others that soon).
TICK_SWITCH_INTERVAL = 5e-3
#: Young objects allowed before the loop collects generation 0 after a tick.
_GEN0_BUDGET = 700


class _GcHold:
    """Automatic garbage collection off, and a short GIL switch interval, while any loop
    thread runs (process-wide).

    The first loop to start freezes what exists (not scanned while loops run) and
    disables automatic collection; the last loop thread to end unfreezes and gives
    automatic collection back if it was on. Held by the loop threads themselves, so a
    loop that ended on an error releases it without waiting for ``stop()``. Starting
    does not collect: a full collection takes tens of ms in a process holding rclpy and
    PyBullet, and a loop restarted live (a rate change) would send no command for that
    long; garbage frozen with the rest is collected once the last loop has ended.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def acquire(self, switch_interval: float) -> None:
        with self._lock:
            if self._holders == 0:
                self._switch_interval = sys.getswitchinterval()
                sys.setswitchinterval(switch_interval)
                self._was_enabled = gc.isenabled()
                gc.freeze()
                gc.disable()
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                gc.unfreeze()
                if self._was_enabled:
                    gc.enable()
                sys.setswitchinterval(self._switch_interval)


_GC_HOLD = _GcHold()


#: Threads running a control loop (``threading.get_ident()``) -> their short switch
#: interval, s (:class:`LoopLock`).
_LOOP_THREADS: dict[int, float] = {}


@contextlib.contextmanager
def waiting_in_loop() -> Iterator[None]:
    """Around a wait of a loop's tick for another thread (a lock, a condition): the loop
    thread's short switch interval meanwhile, so the GIL comes back that soon after the
    other thread is done (see :class:`LoopLock`). Nothing in other threads."""
    short = _LOOP_THREADS.get(threading.get_ident())
    if short is None:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(short)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class LoopLock:
    """A lock for what a control loop's tick shares with the process's other threads.

    A tick runs with the long switch interval (``TICK_SWITCH_INTERVAL``), so that no
    thread makes it yield midway. When the tick finds a plain lock held, it releases the
    GIL to wait; the holder finishes its critical section and releases the lock, but then
    keeps the GIL, running on, until it blocks or the switch interval in force expires: up
    to 5 ms before the tick may go on (measured in the robot process: 0.4-1 ms waits, the
    ticks of most deadline misses). A loop thread that finds a ``LoopLock`` held waits for
    it with its short ``switch_interval`` instead, so it gets the GIL back that soon after
    the release. Uncontended, and in any other thread, it is a plain lock (a failed
    non-blocking attempt first). Usable with ``threading.Condition``.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        lock = self._lock
        if lock.acquire(False):
            return True
        if not blocking:
            return False
        with waiting_in_loop():
            return lock.acquire(True, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        if self._lock.acquire(False):  # the common case, without acquire()'s call
            return True
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


def _libc(kind: type[ctypes.CDLL] = ctypes.CDLL) -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return kind(name, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()
#: The same C library called *without* releasing the GIL (``ctypes.PyDLL``).
_LIBC_HOLDING_GIL = _libc(ctypes.PyDLL)


def sleep_until_ns(deadline_ns: int) -> None:
    """Sleep until CLOCK_MONOTONIC reaches ``deadline_ns`` (absolute; GIL released)."""
    if _LIBC is not None:
        spec = _Timespec(deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
        while _LIBC.clock_nanosleep(_CLOCK_MONOTONIC, _TIMER_ABSTIME, ctypes.byref(spec),
                                    None) == 4:  # EINTR: a signal arrived; sleep on
            pass
        return
    remaining = deadline_ns - time.monotonic_ns()
    if remaining > 0:
        time.sleep(remaining * 1e-9)


def sleep_holding_gil_until_ns(deadline_ns: int) -> None:
    """Sleep until CLOCK_MONOTONIC reaches ``deadline_ns`` without releasing the GIL: no
    other Python thread of the process runs meanwhile. Without the C library: return
    at once."""
    if _LIBC_HOLDING_GIL is None:
        return
    spec = _Timespec(deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
    while _LIBC_HOLDING_GIL.clock_nanosleep(_CLOCK_MONOTONIC, _TIMER_ABSTIME,
                                            ctypes.byref(spec), None) == 4:  # EINTR
        pass


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs.

    Attributes:
        rate_hz: control rate, Hz.
        pacing: ``deadline`` (wall-clock deadlines) or ``free`` (as fast as the tick returns).
        tolerance: a tick starting later than ``tolerance·period`` is a miss (> 0).
        max_consecutive_misses: misses in a row that call ``on_overrun`` (>= 1).
        priority: SCHED_FIFO priority of the loop thread, 1-99; 0 keeps the default policy.
        cpu_affinity: CPUs the loop thread may run on; empty: any.
        lock_memory: ``mlockall`` the process so no page fault reaches the loop.
        io_priority: SCHED_FIFO priority of the process's other threads while the loop
            runs (their scheduling is given back when it ends), below ``priority``; 0
            leaves them. Threads already at a real-time priority at least as high are left
            alone; threads started meanwhile inherit their creator's and keep it.
        full_collect_period: s between full garbage collections.
        switch_interval: the interpreter's thread switch interval while the loop runs,
            s (``sys.setswitchinterval``): how long another thread may hold the GIL
            before the loop thread, woken at its deadline, gets it (Python's default
            5 ms would be five control periods).
        gil_lead: s before each deadline at which the loop wakes and takes the GIL, then
            sleeps to the deadline holding it (``deadline`` pacing; 0: wake at the
            deadline and wait for the GIL there). At most half a period is used
            (``gil_lead_ns``), so the others always get the GIL between ticks.
    """

    rate_hz: float = 1000.0
    pacing: str = "deadline"
    tolerance: float = 0.5
    max_consecutive_misses: int = 20
    priority: int = 0
    cpu_affinity: tuple[int, ...] = ()
    lock_memory: bool = False
    io_priority: int = 0
    full_collect_period: float = 30.0
    switch_interval: float = 2e-4
    gil_lead: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0.0):
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz!r}")
        if self.pacing not in PACINGS:
            raise ValueError(f"pacing must be one of {PACINGS}, got {self.pacing!r}")
        if not (math.isfinite(self.tolerance) and self.tolerance > 0.0):
            raise ValueError(f"tolerance must be > 0, got {self.tolerance!r}")
        if self.max_consecutive_misses < 1:
            raise ValueError("max_consecutive_misses must be >= 1")
        if not (math.isfinite(self.switch_interval) and self.switch_interval > 0.0):
            raise ValueError(f"switch_interval must be > 0 s, got {self.switch_interval!r}")
        if not (math.isfinite(self.gil_lead) and self.gil_lead >= 0.0):
            raise ValueError(f"gil_lead must be >= 0 s, got {self.gil_lead!r}")
        if any(cpu < 0 for cpu in self.cpu_affinity):
            raise ValueError(f"cpu_affinity must list CPUs >= 0, got {list(self.cpu_affinity)}")
        if not 0 <= self.priority <= 99:
            raise ValueError(f"priority must be 0-99, got {self.priority}")
        if self.io_priority and not 0 < self.io_priority < self.priority:
            raise ValueError(f"io_priority must be 0 or 1 to priority - 1 ({self.priority - 1}),"
                             f" got {self.io_priority}: the loop thread must stay above the "
                             "threads it shares the GIL with")

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.rate_hz)

    @property
    def gil_lead_ns(self) -> int:
        """The GIL lead the loop uses, ns: ``gil_lead``, at most half a period."""
        return min(round(self.gil_lead * 1e9), self.period_ns // 2)


@dataclass
class RealtimeReport:
    """What the loop thread got of the real-time settings it asked for."""

    applied: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux
    ``PR_SET_PDEATHSIG``; kept across exec). False where the system has no such call.

    A node started by a launcher (``ros2 launch``, the multi-process bringup) then ends
    with the launcher however the launcher ends, SIGKILL included, instead of running on
    as an orphan — a controller still commanding with nobody to stop it.
    """
    if _LIBC is None:
        return False
    return _LIBC.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def apply_realtime_settings(config: LoopConfig) -> RealtimeReport:
    """Apply ``config``'s priority, affinity, memory lock and timer slack to the calling
    thread (memory lock: the process); each refusal is reported, none raises."""
    report = RealtimeReport()
    if _LIBC is not None:
        if _LIBC.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0:
            report.applied.append("timer slack 1 ns")
    if config.cpu_affinity:
        try:
            os.sched_setaffinity(0, set(config.cpu_affinity))
            report.applied.append(f"CPU affinity {sorted(config.cpu_affinity)}")
        except (OSError, ValueError) as error:
            report.refused.append(f"CPU affinity {list(config.cpu_affinity)}: {error}")
    if config.priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(config.priority))
            report.applied.append(f"SCHED_FIFO priority {config.priority}")
        except (OSError, AttributeError) as error:
            report.refused.append(
                f"SCHED_FIFO priority {config.priority}: {error} (needs root or an rtprio "
                "limit for this user in /etc/security/limits.conf)"
            )
    if config.lock_memory:
        if _LIBC is not None and _LIBC.mlockall(_MCL_CURRENT | _MCL_FUTURE) == 0:
            report.applied.append("memory locked")
        else:
            errno = ctypes.get_errno() if _LIBC is not None else 0
            report.refused.append(
                f"mlockall: {os.strerror(errno) if errno else 'unavailable'} "
                "(needs a memlock limit for this user)"
            )
    return report


#: A thread's scheduling before :func:`raise_other_threads` changed it: (tid, policy, priority).
ThreadScheduling = tuple[int, int, int]


def raise_other_threads(priority: int, exclude: int) -> tuple[list[ThreadScheduling], str]:
    """SCHED_FIFO ``priority`` for every thread of this process (``/proc/self/task``:
    Python's and the middleware's) except the one of native id ``exclude`` and those
    already at a real-time priority at least as high (another loop); returns what each
    raised thread had before, for :func:`restore_threads`, and why not all could be
    raised ('' when all were)."""
    raised: list[ThreadScheduling] = []
    try:
        tids = sorted(int(name) for name in os.listdir("/proc/self/task"))
    except OSError as error:
        return raised, f"SCHED_FIFO priority {priority} for the other threads: {error}"
    for tid in tids:
        if tid == exclude:
            continue
        try:
            policy = os.sched_getscheduler(tid)
            before = os.sched_getparam(tid).sched_priority
            if policy in (os.SCHED_FIFO, os.SCHED_RR) and before >= priority:
                continue
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except (OSError, AttributeError) as error:
            return raised, f"SCHED_FIFO priority {priority} for the other threads: {error}"
        raised.append((tid, policy, before))
    return raised, ""


def restore_threads(raised: list[ThreadScheduling]) -> None:
    """Give the threads :func:`raise_other_threads` raised their scheduling back (threads
    that ended meanwhile are skipped; threads started meanwhile keep what they inherited)."""
    for tid, policy, priority in raised:
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(priority))
        except OSError:
            pass


@dataclass
class LoopCounters:
    """Counted by the loop thread; read by other threads for diagnostics."""

    ticks: int = 0
    misses: int = 0
    #: Misses by cause: the tick started later than ``tolerance·period`` (woken late, or
    #: waiting for the GIL or a lock), or it started on time and ended after its deadline.
    late_starts: int = 0
    long_ticks: int = 0
    consecutive_misses: int = 0
    overruns: int = 0
    skipped_periods: int = 0
    gc_collections: int = 0
    #: CPU time of the loop thread / wall time, over the last ``CPU_WINDOW`` ticks.
    cpu_fraction: float = 0.0


class ControlLoop:
    """Runs ``tick()`` once per period in a dedicated thread until :meth:`stop`.

    Args:
        tick: one control period's work; must not block except in ``free`` pacing
            (where the hardware sets the pace). An exception stops the loop and is
            handed to ``on_error``.
        config: rate, pacing, RT settings.
        on_overrun: called (in the loop thread) with the number of consecutive misses
            when it reaches ``config.max_consecutive_misses``.
        on_error: called with the exception that stopped the loop.
        name: thread name.
    """

    def __init__(
        self,
        tick: Callable[[], None],
        config: LoopConfig,
        on_overrun: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "control-loop",
        stats_capacity: int = 5000,
    ) -> None:
        self.config = config
        self._tick = tick
        self._on_overrun = on_overrun
        self._on_error = on_error
        self._name = name
        self.period_stats = PeriodStats(1.0 / config.rate_hz, stats_capacity, config.tolerance)
        self.counters = LoopCounters()
        self.realtime = RealtimeReport()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_mark: tuple[float, float] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        _GC_HOLD.acquire(self.config.switch_interval)  # released by the thread when it ends
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._name,
                                        daemon=True)
        self._thread.start()
        ready.wait(5.0)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    # ------------------------------------------------------------------ thread
    def _run(self, ready: threading.Event) -> None:
        raised: list[ThreadScheduling] = []
        ident = threading.get_ident()
        _LOOP_THREADS[ident] = self.config.switch_interval
        try:
            self.realtime = apply_realtime_settings(self.config)
            if self.config.io_priority:
                raised, refused = raise_other_threads(self.config.io_priority,
                                                      threading.get_native_id())
                if refused:
                    self.realtime.refused.append(refused)
                else:
                    self.realtime.applied.append(
                        f"SCHED_FIFO priority {self.config.io_priority} for the process's "
                        f"{len(raised)} other threads")
            ready.set()
            if self.config.pacing == "deadline":
                self._run_deadlines()
            else:
                self._run_free()
        except BaseException as error:  # noqa: BLE001 - reported, the loop is over
            if self._on_error is not None:
                self._on_error(error)
        finally:
            _LOOP_THREADS.pop(ident, None)
            restore_threads(raised)
            ready.set()
            _GC_HOLD.release()

    def _run_deadlines(self) -> None:
        period = self.config.period_ns
        late_limit = round(self.config.tolerance * period)
        counters, stats = self.counters, self.period_stats
        next_start = time.monotonic_ns() + period
        last_start: int | None = None
        next_full_gc = time.monotonic() + self.config.full_collect_period
        short, hold = self.config.switch_interval, TICK_SWITCH_INTERVAL
        lead = self.config.gil_lead_ns
        setswitchinterval = sys.setswitchinterval
        while not self._stop.is_set():
            if lead:
                sleep_until_ns(next_start - lead)
                setswitchinterval(hold)
                sleep_holding_gil_until_ns(next_start)
            else:
                sleep_until_ns(next_start)
                setswitchinterval(hold)
            start = time.monotonic_ns()
            self._tick()
            setswitchinterval(short)
            end = time.monotonic_ns()
            counters.ticks += 1
            if last_start is not None:
                stats.record_period((start - last_start) * 1e-9)
            last_start = start
            deadline = next_start + period
            if start - next_start > late_limit:
                counters.late_starts += 1
                self._missed()
            elif end > deadline:
                counters.long_ticks += 1
                self._missed()
            else:
                counters.consecutive_misses = 0
            next_start = deadline
            if end > next_start:  # the schedule is lost: restart it from now
                lost = (end - next_start) // period + 1
                counters.skipped_periods += int(lost)
                next_start += int(lost) * period
            next_full_gc = self._collect(next_full_gc)

    def _run_free(self) -> None:
        counters, stats = self.counters, self.period_stats
        last_start: int | None = None
        next_full_gc = time.monotonic() + self.config.full_collect_period
        # No wall-clock deadline to keep: the loop is not made to hand the GIL over every
        # switch_interval. The others run while a tick blocks (the lockstep sim waiting
        # for the policy's answer) and otherwise every TICK_SWITCH_INTERVAL.
        sys.setswitchinterval(TICK_SWITCH_INTERVAL)
        while not self._stop.is_set():
            start = time.monotonic_ns()
            self._tick()
            counters.ticks += 1
            if last_start is not None:
                stats.record_period((start - last_start) * 1e-9)
            last_start = start
            next_full_gc = self._collect(next_full_gc)

    def _missed(self) -> None:
        counters = self.counters
        counters.misses += 1
        counters.consecutive_misses += 1
        if counters.consecutive_misses == self.config.max_consecutive_misses:
            counters.overruns += 1
            if self._on_overrun is not None:
                self._on_overrun(counters.consecutive_misses)

    def _collect(self, next_full: float) -> float:
        """Collect garbage in the time left after a tick, never inside one (and account
        the thread's CPU time every ``CPU_WINDOW`` ticks)."""
        if self.counters.ticks % CPU_WINDOW == 0:
            cpu, wall = time.thread_time(), time.monotonic()
            if self._cpu_mark is not None:
                cpu0, wall0 = self._cpu_mark
                if wall > wall0:
                    self.counters.cpu_fraction = (cpu - cpu0) / (wall - wall0)
            self._cpu_mark = (cpu, wall)
        if gc.get_count()[0] > _GEN0_BUDGET:
            gc.collect(0)
            self.counters.gc_collections += 1
        now = time.monotonic()
        if now >= next_full:
            gc.collect()
            self.counters.gc_collections += 1
            return now + self.config.full_collect_period
        return next_full

"""ControlLoop (visuomotor_core.rt_loop): ticks in a thread of its own, miss accounting,
overrun handling, free pacing, GC handling and the real-time settings report.

Misses are driven deterministically: a tick that sleeps longer than its period always
ends after its deadline, whatever the machine's load. Nothing here asserts how many
ticks run per wall-clock second; waits are bounded waits on conditions.
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from visuomotor_core.rt_loop import (
    TICK_SWITCH_INTERVAL,
    ControlLoop,
    LoopConfig,
    LoopLock,
    apply_realtime_settings,
    sleep_holding_gil_until_ns,
    sleep_until_ns,
)
from visuomotor_core.timing import wait_until

WAIT = 10.0  # s, upper bound on any wait for a condition


def wait_for(condition, timeout: float = WAIT) -> bool:
    return wait_until(condition, timeout, 0.002)

@pytest.fixture
def loops():
    started: list[ControlLoop] = []
    yield started
    for loop in started:
        loop.stop()


def run(loops: list[ControlLoop], tick: Callable[[], None], **config) -> ControlLoop:
    loop = ControlLoop(tick, LoopConfig(**config))
    loops.append(loop)
    loop.start()
    return loop


# ------------------------------------------------------------------ ticking
def test_the_tick_runs_repeatedly_in_a_thread_of_its_own_until_stop_joins_it(loops):
    threads: set[str] = set()
    loop = run(loops, lambda: threads.add(threading.current_thread().name), rate_hz=200.0)
    assert loop.running
    assert wait_for(lambda: loop.counters.ticks >= 5)
    assert threads == {"control-loop"}
    loop.stop()
    assert not loop.running
    ticks = loop.counters.ticks
    time.sleep(0.05)
    assert loop.counters.ticks == ticks, "no tick after stop() returned"


def _stamps_of_another_thread_during(sleep: Callable[[int], None]) -> list[int]:
    """Stamps a busy Python thread took while this thread slept 0.2 s with ``sleep``."""
    stamps: list[int] = []
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            stamps.append(time.monotonic_ns())
            time.sleep(0)  # gives the GIL up by itself: no forced switch is needed

    thread = threading.Thread(target=busy, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(10.0)  # this thread is not made to yield between start and sleep
    try:
        thread.start()
        assert wait_for(lambda: len(stamps) > 10)
        start = time.monotonic_ns()
        deadline = start + 200_000_000
        sleep(deadline)
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        thread.join(WAIT)
    return [t for t in stamps if start < t < deadline]


def test_sleeping_holding_the_gil_keeps_every_other_python_thread_out():
    """What ``gil_lead`` relies on: the loop, woken early, sleeps to its deadline holding
    the GIL, so no other thread of the process runs Python meanwhile; the ordinary sleep
    lets them run."""
    assert _stamps_of_another_thread_during(sleep_holding_gil_until_ns) == []
    assert _stamps_of_another_thread_during(sleep_until_ns), "the control: others ran"


def test_a_loop_with_a_gil_lead_ticks_on_its_deadlines(loops):
    loop = run(loops, lambda: None, rate_hz=200.0, gil_lead=2e-3)
    assert wait_for(lambda: loop.counters.ticks >= 5)
    loop.stop()
    assert loop.period_stats.summary().count == loop.counters.ticks - 1


def test_the_gil_lead_is_at_most_half_a_period():
    assert LoopConfig(rate_hz=1000.0, gil_lead=3e-4).gil_lead_ns == 300_000
    assert LoopConfig(rate_hz=10_000.0, gil_lead=3e-4).gil_lead_ns == 50_000
    assert LoopConfig(gil_lead=0.0).gil_lead_ns == 0


def test_periods_are_recorded_for_the_figures(loops):
    loop = run(loops, lambda: None, rate_hz=100.0)
    assert wait_for(lambda: loop.counters.ticks >= 4)
    loop.stop()
    assert loop.period_stats.summary().count == loop.counters.ticks - 1


# ------------------------------------------------------------------ misses
def test_consecutive_misses_call_on_overrun_once_at_the_threshold_and_reset_on_time():
    period = 0.02
    slow_ticks = 5
    index = [0]
    overruns: list[tuple[int, int]] = []

    def tick() -> None:
        index[0] += 1
        if index[0] <= slow_ticks:
            time.sleep(2.5 * period)  # ends after its deadline, whatever the load

    loop = ControlLoop(
        tick,
        LoopConfig(rate_hz=1.0 / period, max_consecutive_misses=3),
        on_overrun=lambda misses: overruns.append((misses, index[0])),
    )
    loop.start()
    try:
        assert wait_for(lambda: loop.counters.ticks > slow_ticks
                        and loop.counters.consecutive_misses == 0), \
            "an on-time tick after the slow ones resets the consecutive count"
    finally:
        loop.stop()
    counters = loop.counters
    assert overruns[0] == (3, 3), "called with the count, at the third miss in a row"
    assert counters.misses >= slow_ticks
    # Each miss has one cause; the slow ticks started on time and ended late.
    assert counters.late_starts + counters.long_ticks == counters.misses
    assert counters.long_ticks >= slow_ticks
    # The schedule skipped the slots the slow ticks lost instead of bursting to catch up.
    assert counters.skipped_periods >= slow_ticks
    assert counters.overruns == len(overruns)
    assert len(overruns) == 1, f"one call per run of misses, got {overruns}"


def test_a_tick_kept_from_starting_is_counted_as_a_late_start(loops):
    period = 0.02
    hold = threading.Event()
    ticks_before: list[int] = []
    loop = run(loops, lambda: None, rate_hz=1.0 / period)
    assert wait_for(lambda: loop.counters.ticks >= 3)

    def take_the_gil() -> None:
        # Holding the GIL for 3 periods: the loop thread wakes on time but cannot run
        # its tick, which starts more than tolerance * period late.
        ticks_before.append(loop.counters.ticks)
        sleep_holding_gil_until_ns(time.monotonic_ns() + round(3 * period * 1e9))
        hold.set()

    threading.Thread(target=take_the_gil).start()
    assert hold.wait(WAIT)
    assert wait_for(lambda: loop.counters.ticks >= ticks_before[0] + 3)
    loop.stop()
    counters = loop.counters
    assert counters.late_starts >= 1
    assert counters.late_starts + counters.long_ticks == counters.misses


def test_overrun_is_called_again_only_after_an_on_time_tick():
    period = 0.02
    # Two runs of 2 slow ticks separated by quick ones; the threshold is 2.
    pattern = [True, True, False, False, False, True, True]
    index = [0]
    overruns: list[int] = []

    def tick() -> None:
        i = index[0]
        index[0] += 1
        if i < len(pattern) and pattern[i]:
            time.sleep(2.5 * period)

    loop = ControlLoop(tick, LoopConfig(rate_hz=1.0 / period, max_consecutive_misses=2),
                       on_overrun=lambda misses: overruns.append(index[0]))
    loop.start()
    try:
        assert wait_for(lambda: index[0] > len(pattern)
                        and loop.counters.consecutive_misses == 0)
    finally:
        loop.stop()
    assert overruns[:2] == [2, 7], "once per run of misses, at its second tick"


def test_the_switch_interval_is_short_under_deadlines_long_in_free_pacing_and_restored(loops):
    """A deadline loop waits with a short switch interval (it gets the GIL soon after its
    deadline); a free-running loop (lockstep) has no deadline and keeps the long one, so it
    is not made to yield every 0.2 ms; the interpreter's own comes back when loops end."""
    before = sys.getswitchinterval()
    seen: list[float] = []
    loop = run(loops, lambda: seen.append(sys.getswitchinterval()), rate_hz=200.0)
    assert wait_for(lambda: loop.counters.ticks >= 3)
    between: list[float] = []  # sampled while the loop mostly sleeps to its deadlines
    assert wait_for(lambda: between.append(sys.getswitchinterval())
                    or math.isclose(between[-1], loop.config.switch_interval))
    loop.stop()
    assert all(math.isclose(v, TICK_SWITCH_INTERVAL) for v in seen), "ticks: the long one"
    seen.clear()
    loop = run(loops, lambda: (seen.append(sys.getswitchinterval()), time.sleep(0.001)),
               pacing="free")
    assert wait_for(lambda: loop.counters.ticks >= 3)
    waiting = []
    assert wait_for(lambda: waiting.append(sys.getswitchinterval()) or len(waiting) > 3)
    loop.stop()
    assert all(math.isclose(v, TICK_SWITCH_INTERVAL) for v in seen + waiting)
    assert math.isclose(sys.getswitchinterval(), before)


def test_free_pacing_never_counts_misses(loops):
    period = 0.005
    loop = run(loops, lambda: time.sleep(3 * period), rate_hz=1.0 / period, pacing="free",
               max_consecutive_misses=1)
    assert wait_for(lambda: loop.counters.ticks >= 5)
    loop.stop()
    counters = loop.counters
    assert (counters.misses, counters.consecutive_misses, counters.overruns,
            counters.skipped_periods) == (0, 0, 0, 0)
    # wall-clock periods are still recorded, for the figures
    assert loop.period_stats.summary().count == counters.ticks - 1


def test_an_exception_in_the_tick_ends_the_loop_and_is_reported():
    errors: list[BaseException] = []

    def tick() -> None:
        raise RuntimeError("sensor gone")

    loop = ControlLoop(tick, LoopConfig(rate_hz=100.0), on_error=errors.append)
    loop.start()
    assert wait_for(lambda: not loop.running)
    loop.stop()
    assert [str(e) for e in errors] == ["sensor gone"]


# ------------------------------------------------------------------ GC
def test_automatic_gc_is_off_while_a_loop_runs_and_back_when_every_loop_ended():
    assert gc.isenabled()
    seen: list[bool] = []
    first = ControlLoop(lambda: seen.append(gc.isenabled()), LoopConfig(rate_hz=200.0))
    second = ControlLoop(lambda: None, LoopConfig(rate_hz=200.0))
    first.start()
    second.start()
    try:
        assert wait_for(lambda: len(seen) >= 3)
        first.stop()
        assert not gc.isenabled(), "still off while the second loop runs"
    finally:
        first.stop()
        second.stop()
    assert not any(seen)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0, "objects frozen at start are unfrozen at the end"


def test_a_loop_ended_by_an_error_gives_automatic_gc_back():
    assert gc.isenabled()

    def tick() -> None:
        raise RuntimeError("boom")

    loop = ControlLoop(tick, LoopConfig(rate_hz=100.0), on_error=lambda error: None)
    loop.start()
    assert wait_for(lambda: not loop.running)
    assert wait_for(gc.isenabled), "automatic GC back without waiting for stop()"
    loop.stop()
    assert gc.isenabled()


def test_the_loop_collects_young_garbage_between_ticks(loops):
    def tick() -> None:
        for _ in range(200):  # young container objects, as a careless tick would make
            a: list = []
            a.append(a)

    loop = run(loops, tick, rate_hz=200.0)
    assert wait_for(lambda: loop.counters.gc_collections >= 1)


# ------------------------------------------------------------------ RT settings
def _settings_in_thread(config: LoopConfig) -> tuple[object, int]:
    """The report and the scheduling policy of a loop thread asking for ``config``."""
    policy: list[int] = []
    loop = ControlLoop(lambda: policy.append(os.sched_getscheduler(0)), config)
    loop.start()
    try:
        assert wait_for(lambda: policy)
    finally:
        loop.stop()
    return loop.realtime, policy[0]


def _fifo_permitted() -> bool:
    try:
        return subprocess.run(["chrt", "-f", "1", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _fifo_permitted(), reason="SCHED_FIFO not permitted on this machine")
def test_permitted_fifo_priority_and_affinity_are_applied_to_the_loop_thread_only():
    cpu = sorted(os.sched_getaffinity(0))[0]
    report, policy = _settings_in_thread(
        LoopConfig(rate_hz=100.0, priority=5, cpu_affinity=(cpu,)))
    assert "SCHED_FIFO priority 5" in report.applied
    assert f"CPU affinity [{cpu}]" in report.applied
    assert report.refused == []
    assert policy == os.SCHED_FIFO
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the caller's thread is untouched"
    assert len(os.sched_getaffinity(0)) >= 1


@pytest.mark.skipif(not _fifo_permitted(), reason="SCHED_FIFO not permitted on this machine")
def test_io_priority_raises_the_other_threads_below_the_loop_while_it_runs():
    """The threads the loop shares the GIL with get SCHED_FIFO io_priority while the loop
    runs (no priority inversion) and normal scheduling back when it stops."""
    seen: list[tuple[int, int, int]] = []
    main = threading.get_native_id()
    # Another real-time thread above io_priority (a second loop) keeps its priority.
    higher_ready, release = threading.Event(), threading.Event()
    higher: list[int] = []

    def other_loop() -> None:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(15))
        higher.append(threading.get_native_id())
        higher_ready.set()
        release.wait(10.0)

    other = threading.Thread(target=other_loop, daemon=True)
    other.start()
    assert higher_ready.wait(5.0)

    def tick() -> None:
        seen.append((os.sched_getscheduler(main), os.sched_getparam(main).sched_priority,
                     os.sched_getparam(higher[0]).sched_priority))

    loop = ControlLoop(tick, LoopConfig(rate_hz=200.0, priority=20, io_priority=10))
    loop.start()
    try:
        assert wait_until(lambda: len(seen) > 2, 10.0, 0.005)
    finally:
        loop.stop()
    after = os.sched_getparam(higher[0]).sched_priority
    release.set()
    other.join(5.0)
    assert seen[-1] == (os.SCHED_FIFO, 10, 15)
    assert after == 15, "the higher thread's priority is neither lowered nor reset"
    assert any("SCHED_FIFO priority 10 for the process's" in line
               for line in loop.realtime.applied), loop.realtime.applied
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "restored when the loop ended"


def test_without_rt_settings_only_the_timer_slack_is_applied():
    report, policy = _settings_in_thread(LoopConfig(rate_hz=100.0))
    assert report.refused == []
    assert report.applied in ([], ["timer slack 1 ns"])
    assert policy == os.SCHED_OTHER


def test_an_affinity_to_a_cpu_the_machine_lacks_is_refused_with_the_reason():
    report = apply_realtime_settings(LoopConfig(cpu_affinity=(1023,)))
    assert [line for line in report.refused if line.startswith("CPU affinity [1023]")]
    assert not [line for line in report.applied if line.startswith("CPU affinity")]


_UNPRIVILEGED = """
import json, os, resource, sys
from visuomotor_core.rt_loop import ControlLoop, LoopConfig
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
if os.getuid() == 0:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)   # an ordinary user: no capabilities left
policies = []
loop = ControlLoop(lambda: policies.append(os.sched_getscheduler(0)),
                   LoopConfig(rate_hz=100.0, priority=80, lock_memory=True))
loop.start()
import time
deadline = time.monotonic() + 10.0
while not policies and time.monotonic() < deadline:
    time.sleep(0.005)
loop.stop()
print(json.dumps({"applied": loop.realtime.applied, "refused": loop.realtime.refused,
                  "policy": policies[0] if policies else None,
                  "fifo": os.SCHED_FIFO}))
"""


def test_refused_fifo_priority_and_memory_lock_are_reported_and_the_loop_still_runs():
    """In a process of an ordinary user without an rtprio or memlock limit."""
    result = subprocess.run([sys.executable, "-c", _UNPRIVILEGED], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    refused = report["refused"]
    assert any(line.startswith("SCHED_FIFO priority 80:") and "rtprio" in line
               for line in refused), refused
    assert any(line.startswith("mlockall:") for line in refused), refused
    assert not any("SCHED_FIFO" in line or "memory locked" in line for line in report["applied"])
    assert report["policy"] is not None, "the loop ticked under normal scheduling"
    assert report["policy"] != report["fifo"]


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(("field", "value", "match"), [
    ("rate_hz", 0.0, "rate_hz"),
    ("rate_hz", float("nan"), "rate_hz"),
    ("pacing", "sometimes", "pacing"),
    ("tolerance", 0.0, "tolerance"),
    ("max_consecutive_misses", 0, "max_consecutive_misses"),
    ("priority", 100, "priority"),
    ("io_priority", 5, "io_priority"),  # with priority 0: nothing to stay below
    ("gil_lead", -1e-4, "gil_lead"),
    ("gil_lead", float("nan"), "gil_lead"),
])
def test_invalid_loop_configurations_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        LoopConfig(**{field: value})


def test_io_priority_must_stay_below_the_loop_priority():
    with pytest.raises(ValueError, match="io_priority"):
        LoopConfig(priority=50, io_priority=50)
    assert LoopConfig(priority=50, io_priority=49).io_priority == 49


def test_negative_cpus_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        LoopConfig(cpu_affinity=(0, -2))


def test_starting_a_loop_does_not_stop_for_a_full_collection():
    """A full collection at start would leave a loop restarted live (a rate change)
    without ticks for tens of ms; garbage existing at start waits for the loop's end."""
    import weakref

    class Cycle:
        pass

    garbage = Cycle()
    garbage.self = garbage
    alive = weakref.ref(garbage)
    del garbage
    loop = ControlLoop(lambda: None, LoopConfig(rate_hz=200.0))
    loop.start()
    try:
        assert wait_for(lambda: loop.counters.ticks >= 3)
        gc.collect()  # while the loop runs, what existed at its start is frozen
        assert alive() is not None
    finally:
        loop.stop()
    assert wait_for(gc.isenabled)
    gc.collect()
    assert alive() is None


# ------------------------------------------------------------------ LoopLock
def _loop_blocked_on(lock, loops) -> tuple[ControlLoop, threading.Event, dict]:
    """A loop whose first tick takes ``lock`` (held by the caller) and records the switch
    interval it runs with once inside."""
    entered, seen = threading.Event(), {}

    def tick() -> None:
        if entered.is_set():
            return
        entered.set()
        with lock:
            seen["inside"] = sys.getswitchinterval()

    return run(loops, tick, rate_hz=100.0, switch_interval=2e-4), entered, seen


def test_a_loop_thread_waits_for_a_held_loop_lock_with_its_short_switch_interval(loops):
    lock = LoopLock()
    with lock:
        _loop, entered, seen = _loop_blocked_on(lock, loops)
        assert entered.wait(WAIT)
        # The tick runs with the long interval; blocked on the lock, the loop thread
        # lowers it to its own, so it gets the GIL back that soon after the release.
        assert wait_for(lambda: math.isclose(sys.getswitchinterval(), 2e-4, rel_tol=1e-3)), \
            sys.getswitchinterval()
    assert wait_for(lambda: "inside" in seen)
    assert math.isclose(seen["inside"], TICK_SWITCH_INTERVAL, rel_tol=1e-3), \
        "back to the tick's interval once held"


def test_a_plain_lock_leaves_the_tick_s_long_switch_interval_in_force(loops):
    # The control: what LoopLock is for. A tick blocked on a threading.Lock leaves the
    # 5 ms interval, so the thread that releases it keeps the GIL up to 5 ms.
    lock = threading.Lock()
    with lock:
        _loop, entered, seen = _loop_blocked_on(lock, loops)
        assert entered.wait(WAIT)
        time.sleep(0.1)
        assert math.isclose(sys.getswitchinterval(), TICK_SWITCH_INTERVAL, rel_tol=1e-3)
    assert wait_for(lambda: "inside" in seen)


def test_loop_lock_is_a_plain_lock_outside_loop_threads_and_serves_a_condition():
    lock = LoopLock()
    interval = sys.getswitchinterval()
    assert lock.acquire() and lock.locked()
    assert not lock.acquire(blocking=False)
    assert not lock.acquire(timeout=0.01)
    lock.release()
    assert not lock.locked()
    acquired = threading.Event()
    with lock:
        waiter = threading.Thread(target=lambda: (lock.acquire(), acquired.set(),
                                                  lock.release()))
        waiter.start()
        assert not acquired.wait(0.05)
        assert sys.getswitchinterval() == interval, "no loop thread: the interval stays"
    assert acquired.wait(WAIT)
    waiter.join()
    condition = threading.Condition(LoopLock())
    box: list[int] = []

    def consumer() -> None:
        with condition:
            assert condition.wait_for(lambda: box, timeout=WAIT)
            box.append(2)

    thread = threading.Thread(target=consumer)
    thread.start()
    with condition:
        box.append(1)
        condition.notify_all()
    thread.join(WAIT)
    assert box == [1, 2]

"""Keep a node alive when one of its callbacks raises.

An exception escaping a subscription, timer, guard-condition or service callback ends
``executor.spin()`` and with it the node's process. :class:`CallbackGuard` wraps a
callback so that an unexpected exception is counted (per callback) and logged as one
line, at most once per ``period`` seconds per callback with the number suppressed in
between, and the callback returns ``fallback(*args)`` (None by default; a service
callback passes a fallback that fills its response). Inputs a node *expects* to be bad
(malformed messages) are refused by the node itself with its own counters; the guard is
the last line for what nobody anticipated.

Usage::

    self._guard = CallbackGuard(self.get_logger())
    self.create_subscription(JointState, "joint_states", self._guard(self._on_state), qos)
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

_MAX_MESSAGE_CHARS = 300


def one_line(error: BaseException | str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """``error`` as a single line (whitespace collapsed), at most ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class CallbackGuard:
    """Wraps callbacks so an exception is logged (throttled) and counted, never raised.

    Args:
        logger: an rclpy logger (``node.get_logger()``); ``error`` is called on it.
        period: minimum wall-clock interval between two log lines of one callback, s.
        alive: returns False once the node's context is shut down (e.g.
            ``lambda: node.context.ok()``); exceptions after that are the shutdown's, and
            are neither logged nor counted.
    """

    def __init__(self, logger: Any, period: float = 2.0,
                 alive: Callable[[], bool] | None = None) -> None:
        self._logger = logger
        self._alive = alive
        self._period = period
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, callback: Callable[..., Any],
                 fallback: Callable[..., Any] | None = None) -> Callable[..., Any]:
        """The guarded version of ``callback``."""
        name = getattr(callback, "__name__", repr(callback))

        @functools.wraps(callback)
        def guarded(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as error:  # noqa: BLE001 - the guard exists so nothing escapes
                if self._alive is not None and not self._alive():
                    return None  # the context is shutting down: nothing to report
                self._record(name, error)
                return fallback(*args) if fallback is not None else None

        return guarded

    @property
    def errors(self) -> dict[str, int]:
        """Exceptions caught so far, per callback name (a copy)."""
        with self._lock:
            return dict(self._errors)

    @property
    def total(self) -> int:
        """Exceptions caught so far, all callbacks."""
        with self._lock:
            return sum(self._errors.values())

    def _record(self, name: str, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._errors[name] = self._errors.get(name, 0) + 1
            if now - self._last_log.get(name, float("-inf")) < self._period:
                self._suppressed[name] = self._suppressed.get(name, 0) + 1
                return
            self._last_log[name] = now
            suppressed = self._suppressed.pop(name, 0)
            count = self._errors[name]
        more = f"; {suppressed} more since the last report" if suppressed else ""
        self._logger.error(f"callback {name} failed ({type(error).__name__}: "
                           f"{one_line(error)}); ignored, the node keeps running "
                           f"({count} so far{more})")

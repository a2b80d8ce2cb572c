"""Keep the test process's main thread on its own signal stack.

OpenVINO (loaded in-process by the backend tests) points the calling thread's alternate signal stack
(``sigaltstack``) at memory of its own and moves it again on the next compile, leaving the old region to be
freed. Python installs its signal handlers with ``SA_ONSTACK``, so the next signal the main thread takes
(pytest-timeout's alarm, a child's exit, ^C) is delivered onto freed memory and the kernel kills the whole run
with SIGSEGV (SI_KERNEL), hundreds of tests later (seen under gdb: the main thread in ``epoll_wait``). The
service loads models in worker threads, never on the thread that handles its signals; here the tests call
OpenVINO on the main thread, so after each test the main thread gets back the stack it started with.
"""

from __future__ import annotations

import ctypes
import threading

import pytest


class StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_saved: StackT | None = None


def _current() -> StackT:
    stack = StackT()
    _libc.sigaltstack(None, ctypes.byref(stack))
    return stack


def pytest_sessionstart(session: pytest.Session) -> None:
    global _saved
    if threading.current_thread() is threading.main_thread():
        _saved = _current()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item):  # noqa: ANN201 (a hook wrapper)
    yield
    if _saved is None or threading.current_thread() is not threading.main_thread():
        return
    now = _current()
    if (now.ss_sp, now.ss_size, now.ss_flags) != (_saved.ss_sp, _saved.ss_size, _saved.ss_flags):
        _libc.sigaltstack(ctypes.byref(_saved), None)

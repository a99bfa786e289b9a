"""Process entry of `reactkd` and `python -m reactkd`: Ctrl-C never shows a traceback, even while the modules
load or the interpreter shuts down (the work is done then; an interrupt there must not turn exit 0 into a
death by signal)."""

import signal
import sys


def run() -> None:
    code = None
    try:
        from reactkd.cli.main import main

        code = main()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finished: nothing left to interrupt
    except KeyboardInterrupt:
        if code is None:  # before main() could catch it; after it returned, its code stands
            print("error: interrupted", file=sys.stderr)
            code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == 130:
        _forget_interrupted_c_eval()
    sys.exit(code)


def _forget_interrupted_c_eval() -> None:
    """CPython remembers a KeyboardInterrupt that ended code run through its C API (``PyRun_String``, which
    pybind11's ``py::exec`` uses while torch imports) and, however the program then exits, kills itself with
    SIGINT at shutdown: `error: interrupted` was printed, yet the exit status is -2 instead of 130. Running any
    code through the same API resets that flag."""
    import ctypes

    ctypes.pythonapi.PyRun_SimpleString(b"pass")

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
    sys.exit(code)

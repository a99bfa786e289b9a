"""Process entry of `reactkd` and `python -m reactkd`: Ctrl-C never shows a traceback, even while the modules
load or the interpreter shuts down (the work is done then; an interrupt there must not turn exit 0 into a
death by signal)."""

import signal
import sys


def run() -> None:
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt:  # before main() could catch it
        print("error: interrupted", file=sys.stderr)
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)

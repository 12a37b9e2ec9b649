"""The run's log file (<run>/<command>.log, Hydra's job logging) as a handler that a full disk or a lost
directory does not turn into a traceback per log record: the first failed write is reported in one
`warning:` line, the file is closed, and the run goes on (what fails for real then fails in its one line)."""

from __future__ import annotations

import logging
import sys


class TolerantFileHandler(logging.FileHandler):
    """logging.FileHandler whose first failed write says so once on stderr and turns the handler off."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        reason = getattr(error, "strerror", None) or error
        print(
            f"warning: the run's log {self.baseFilename} cannot be written ({reason}); it stops here",
            file=sys.stderr,
        )
        try:
            self.close()
        except OSError:
            pass  # closing flushes into the same full disk

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

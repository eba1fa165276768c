"""Open Job Description progress lines a tool prints on its stderr, surfaced in the task log."""

import logging
import re

from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _

OPENJD_LINE = re.compile(r"^\s*openjd_(progress|status|fail)\s*:\s*(.*?)\s*$")


class OpenJdProgress:
    """Surfaces Open Job Description lines a tool prints on stderr."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.fail_reason: str | None = None

    def line(self, text: str) -> None:
        match = OPENJD_LINE.match(text)
        if not match:
            return
        kind, value = match.groups()
        if kind == "progress":
            self.logger.info(_("task progress", percent=value))
        elif kind == "status":
            self.logger.log(NOTICE_LEVEL, _("task status", status=value))
        else:
            self.fail_reason = value
            self.logger.error(_("task reports failure", reason=value))

"""Structured logging: one line per event with time, component and message, optionally JSON.

Every process names its component (replay, learner, actor-3, ...) so that interleaved logs from
`mamql local` or a cluster stay readable.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str):
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(component: str, level: str = "INFO", json_lines: bool = False, stream=None) -> logging.Logger:
    """Configure the root logger for this process; returns the component's logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(component))
    else:
        fmt = logging.Formatter(f"%(asctime)s %(levelname)s [{component}] %(name)s: %(message)s")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return logging.getLogger(f"mamql.{component}")

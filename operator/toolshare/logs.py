"""Log output for the operator and the gate: plain text (default) or one JSON object per line.

JSON is for log pipelines (Loki, Elasticsearch): fields time, level, logger, message, plus kopf's
object reference (k8s_ref) on the operator's per-object messages.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}


def json_formatter() -> logging.Formatter:
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields=_JSON_FIELDS)


def configure(log_format: str = "text", verbose: bool = False) -> None:
    """Root logging for `toolshare operator` and `toolshare gate`."""
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    if not verbose:
        # kopf logs every handler run per object at INFO ("Handler ... succeeded"): at 10,000 runs
        # that is most of the operator's output and a measurable share of its CPU.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # kopf's webhook server is aiohttp, which logs one access line per admission call: every
        # write to a ToolRun, RunShare or ImageShare. The API server's own metrics count them
        # (apiserver_admission_webhook_*); --verbose shows them again.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

"""Request counters and latency in Prometheus text format.

Metric names follow TF Serving's (``:tensorflow:serving:request_count`` with
``model_name`` and ``status`` labels) so dashboards work with both servers;
only counters and latency totals are kept.

The ``model_name`` label takes only the names of configured models: any other
requested name (a typo, or a client sending random names) is counted under
:data:`UNKNOWN_MODEL_LABEL`, so hostile requests cannot grow the label set, the
memory and the scrape without bound.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

#: The ``model_name`` label of requests for a model the server does not serve.
UNKNOWN_MODEL_LABEL = "<unknown>"


class Metrics:
    """Thread-safe request counters, exposed at the monitoring path of the REST port.

    Args:
        is_known: Whether a model name is configured (asked at each request, so a
            reloaded model config applies); None = every name is kept.
    """

    def __init__(self, is_known: Callable[[str], bool] | None = None) -> None:
        self._is_known = is_known
        self._lock = threading.Lock()
        self._count: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._latency_us: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(self, api: str, model_name: str, status: str, seconds: float) -> None:
        """Counts one finished request.

        Args:
            api: E.g. ``"Predict"``, ``"GetModelMetadata"``.
            model_name: Requested model name ("" if none; a name that is not
                configured is counted as :data:`UNKNOWN_MODEL_LABEL`).
            status: The gRPC status name, e.g. ``"OK"``, ``"INVALID_ARGUMENT"``.
            seconds: Wall time spent serving it.
        """
        if self._is_known is not None and not self._is_known(model_name):
            model_name = UNKNOWN_MODEL_LABEL
        with self._lock:
            self._count[(api, model_name, status)] += 1
            self._latency_us[(api, model_name)] += int(seconds * 1e6)

    def count(
        self, api: str | None = None, model_name: str | None = None, status: str | None = None
    ) -> int:
        """Requests matching the given labels (None = any)."""
        with self._lock:
            return sum(
                n
                for (a, m, s), n in self._count.items()
                if api in (None, a) and model_name in (None, m) and status in (None, s)
            )

    def prometheus_text(self) -> str:
        """All metrics in the Prometheus text exposition format."""

        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        lines = [
            "# TYPE :tensorflow:serving:request_count counter",
        ]
        with self._lock:
            for (api, model, status), n in sorted(self._count.items()):
                lines.append(
                    f':tensorflow:serving:request_count{{api="{esc(api)}",'
                    f'model_name="{esc(model)}",status="{esc(status)}"}} {n}'
                )
            lines.append("# TYPE :tensorflow:serving:request_latency_sum_us counter")
            for (api, model), total in sorted(self._latency_us.items()):
                lines.append(
                    f':tensorflow:serving:request_latency_sum_us{{api="{esc(api)}",'
                    f'model_name="{esc(model)}"}} {total}'
                )
        return "\n".join(lines) + "\n"

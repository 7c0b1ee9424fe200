"""RMSE and bias of a prediction against the reference, the way
metrics-standard computes them: over every case (row), the root of the
mean over variables of the squared error, then the mean over cases; bias
is the mean of prediction minus reference over everything.

Config: `metrics` (a subset of ["rmse", "bias"], default both).
"""

import math

from geohost_plugin import Config, PluginError, metric


class RmseBias:
    def __init__(self, config: Config):
        config.allow_only("metrics")
        self.metrics = config.values.get("metrics", ["rmse", "bias"])
        unknown = [m for m in self.metrics if m not in ("rmse", "bias")]
        if not isinstance(self.metrics, list) or unknown or not self.metrics:
            raise PluginError(f"config key `metrics`: a non-empty list of rmse, bias (got {self.metrics!r})")

    def info(self):
        return dict(name="metric-rmse-py", version="0.1.0", metrics=self.metrics)

    def compute(self, prediction, reference, members):
        if len(prediction) != len(reference) or not reference:
            raise PluginError(f"prediction has {len(prediction)} rows, reference {len(reference)}")
        values = {}
        if "rmse" in self.metrics:
            per_case = [math.sqrt(sum((p - r) ** 2 for p, r in zip(pr, rr)) / len(rr)) for pr, rr in zip(prediction, reference)]
            values["rmse"] = sum(per_case) / len(per_case)
        if "bias" in self.metrics:
            count = sum(len(r) for r in reference)
            values["bias"] = sum(p - r for pr, rr in zip(prediction, reference) for p, r in zip(pr, rr)) / count
        return {m: values[m] for m in self.metrics}


Score = metric(RmseBias)

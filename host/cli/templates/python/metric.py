"""`{{name}}`: a verification metric. Replace the mean absolute error
below by yours: `compute` gets the prediction and the reference as rows
(one per scored time or case), and the ensemble behind the prediction
when there is one (else None), and returns named numbers (or lists).
"""

from geohost_plugin import Config, PluginError, metric


class Mae:
    def __init__(self, config: Config):
        config.allow_only()

    def info(self):
        return dict(name="{{name}}", version="0.1.0", metrics=["mean_abs_error"])

    def compute(self, prediction, reference, members):
        values = [abs(p - r) for prow, rrow in zip(prediction, reference) for p, r in zip(prow, rrow)]
        if len(prediction) != len(reference) or not values:
            raise PluginError(f"prediction ({len(prediction)} rows) and reference ({len(reference)} rows) differ or are empty")
        return {"mean_abs_error": sum(values) / len(values)}


Score = metric(Mae)

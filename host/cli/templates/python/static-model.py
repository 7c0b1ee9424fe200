"""`{{name}}`: a static simulator for inference over parameters. Replace
the line through `points` points below by yours: `simulate` maps each row
of `thetas` (in the order of `info()["parameters"]`) to one output row.
A stochastic simulator draws its noise from random.Random(seed) and says
`stochastic=True`.
"""

from geohost_plugin import Config, static_model


class Line:
    def __init__(self, config: Config):
        config.allow_only("points")
        self.points = config.int("points", 10, min=2)

    def info(self):
        return dict(
            name="{{name}}",
            version="0.1.0",
            parameters=[("slope", "1"), ("intercept", "1")],
            output_size=self.points,
        )

    def simulate(self, thetas, seed):
        n = self.points - 1
        return [[slope * (i / n) + intercept for i in range(self.points)] for slope, intercept in thetas]


Simulate = static_model(Line)

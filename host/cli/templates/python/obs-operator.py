"""`{{name}}`: an observation operator. Replace the every-`stride`-th
variable selection below by yours: `observe` maps one state to one
observation vector; `info` gives R's diagonal and where each observation
sits (in grid units, for localisation).
"""

from geohost_plugin import Config, obs_operator


class Operator:
    def __init__(self, config: Config):
        config.allow_only("state_size", "stride", "variance")
        self.state_size = config.int("state_size", 40, min=1)
        self.stride = config.int("stride", 2, min=1)
        self.variance = config.float("variance", 1.0, min=0.0)
        self.at = list(range(0, self.state_size, self.stride))

    def info(self):
        return dict(
            name="{{name}}",
            version="0.1.0",
            state_size=self.state_size,
            obs_size=len(self.at),
            noise_variance=[self.variance] * len(self.at),
            locations=[float(i) for i in self.at],
        )

    def observe(self, x, t):
        return [x[i] for i in self.at]


Observe = obs_operator(Operator)

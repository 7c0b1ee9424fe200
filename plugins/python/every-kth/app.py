"""Observe every k-th state variable with noise variance `variance` (R's
diagonal): the observation operator of the Lorenz-96 twin experiments with
fewer observations.

Config: `state_size` (the host fills it in from the model), `k` (default
1: all), `offset` (the first observed variable, default 0), `variance`
(default 1; 0 for a noise-free operator).
"""

from geohost_plugin import Config, PluginError, obs_operator


class EveryKth:
    def __init__(self, config: Config):
        config.allow_only("state_size", "k", "offset", "variance")
        self.state_size = config.int("state_size", min=1)
        self.k = config.int("k", 1, min=1)
        self.offset = config.int("offset", 0, min=0)
        self.variance = config.float("variance", 1.0, min=0.0)
        if self.offset >= self.state_size:
            raise PluginError(f"config key `offset` ({self.offset}) must be below state_size ({self.state_size})")
        self.at = list(range(self.offset, self.state_size, self.k))

    def info(self):
        return dict(
            name="every-kth-py",
            version="0.1.0",
            state_size=self.state_size,
            obs_size=len(self.at),
            noise_variance=[self.variance] * len(self.at),
            locations=[float(i) for i in self.at],
            parameters=[("k", self.k, "1"), ("variance", self.variance, "1")],
        )

    def observe(self, x, t):
        return [x[i] for i in self.at]


Observe = obs_operator(EveryKth)

"""A deliberately simple filter submission: nudging with a fixed gain, as
plugins/filter-nudging (Rust). Each member moves a fraction `gain` of the
way from its observed value to the observation, at the grid point each
observation sits on.

Config: `N` (members, default 10), `gain` (in (0, 1], default 0.5).
"""

from geohost_plugin import Config, PluginError, filter_method


class Nudging:
    def __init__(self, config: Config, problem):
        config.allow_only("N", "gain")
        self.n = max(config.int("N", 10, min=1), 2)
        self.gain = config.float("gain", 0.5)
        if not 0.0 < self.gain <= 1.0:
            raise PluginError(f"`gain` must be in (0, 1], got {self.gain}")
        self.at = []
        for j, loc in enumerate(problem.locations):
            i = round(loc)
            if not 0 <= i < problem.state_size:
                raise PluginError(f"observation {j} sits at {loc}, off the state's grid (0..{problem.state_size})")
            self.at.append(i)

    def info(self):
        return dict(name="nudging-py", version="0.1.0", members=self.n)

    def analyse(self, forecast, forecast_obs, y, t, seed):
        for member, observed in zip(forecast, forecast_obs):
            for k, i in enumerate(self.at):
                member[i] += self.gain * (y[k] - observed[k])
        return forecast


Assimilate = filter_method(Nudging)

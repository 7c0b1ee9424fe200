"""`{{name}}`: a forward model. Replace the damped oscillators below by
yours: `__init__` reads the config, `info` describes the state, `advance`
moves every member (a list of floats) from t by dt.

No print, time or random here: the sandbox provides no WASI, and such a
call traps. Raise PluginError (or any exception) to fail a call.
"""

from geohost_plugin import Config, forward_model


class Model:
    def __init__(self, config: Config):
        config.allow_only("pairs", "omega", "damping")
        # Pairs (x, v) of oscillators: state size 2 × pairs.
        self.pairs = config.int("pairs", 4, min=1)
        self.omega = config.float("omega", 1.0, min=1e-12)
        self.damping = config.float("damping", 0.05, min=0.0)

    def info(self):
        return dict(
            name="{{name}}",
            version="0.1.0",
            state_size=2 * self.pairs,
            default_dt=0.05,
            parameters=[("omega", self.omega, "1/s"), ("damping", self.damping, "1/s")],
        )

    def advance(self, members, t, dt):
        # Semi-implicit Euler: stable for omega * dt < 2.
        out = []
        for x in members:
            y = list(x)
            for i in range(0, len(y), 2):
                y[i + 1] += dt * (-self.omega * self.omega * y[i] - 2.0 * self.damping * y[i + 1])
                y[i] += dt * y[i + 1]
            out.append(y)
        return out


Forward = forward_model(Model)

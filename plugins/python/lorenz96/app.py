"""Lorenz-96 in Python: dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F on a
periodic ring of `size` variables, integrated with classic RK4.

Config: `F` (forcing, default 8), `size` (default 40, at least 4). The
arithmetic is in the same order as plugins/lorenz96 (Rust), so both give
the same bits.
"""

from geohost_plugin import Config, forward_model


class Lorenz96:
    def __init__(self, config: Config):
        config.allow_only("F", "size")
        self.forcing = config.float("F", 8.0)
        self.size = config.int("size", 40, min=4)

    def info(self):
        return dict(
            name="lorenz96-py",
            version="0.1.0",
            state_size=self.size,
            default_dt=0.05,
            parameters=[("F", self.forcing, "1")],
            grid=dict(points=self.size, periodic=True),
        )

    def tendency(self, x):
        n, f = len(x), self.forcing
        return [(x[(i + 1) % n] - x[i - 2]) * x[i - 1] - x[i] + f for i in range(n)]

    def step(self, x, dt):
        h = 0.5 * dt
        k1 = self.tendency(x)
        k2 = self.tendency([xi + h * k for xi, k in zip(x, k1)])
        k3 = self.tendency([xi + h * k for xi, k in zip(x, k2)])
        k4 = self.tendency([xi + dt * k for xi, k in zip(x, k3)])
        return [xi + dt / 6.0 * (a + 2.0 * b + 2.0 * c + d) for xi, a, b, c, d in zip(x, k1, k2, k3, k4)]

    def advance(self, members, t, dt):
        return [self.step(x, dt) for x in members]


Forward = forward_model(Lorenz96)

"""`{{name}}`: a data-assimilation method, submitted to a benchmark as a
`filter` component. Replace the stochastic EnKF below (perturbed
observations, serial over observations, multiplicative inflation) by
yours: `__init__` reads the config and the problem (sizes, R's diagonal,
where each observation sits), `info` names the filter and its ensemble
size, `analyse` turns the forecast members into the analysis members.
Observations are processed one at a time (R is diagonal), each updating
the state and the remaining observed values of every member.
Randomness comes from random.Random(seed), never from the system.
"""

import math
import random

from geohost_plugin import Config, filter_method


class PerturbedObsEnkf:
    def __init__(self, config: Config, problem):
        config.allow_only("N", "infl")
        self.n = config.int("N", 20, min=2)
        self.infl = config.float("infl", 1.0, min=0.0)
        self.r = problem.noise_variance

    def info(self):
        return dict(name="{{name}}", version="0.1.0", members=self.n)

    def analyse(self, x, hx, y, t, seed):
        rng = random.Random(seed)
        n, p = len(x), len(y)
        x = [list(row) for row in x]
        hx = [list(row) for row in hx]
        for k in range(p):
            ybar = sum(h[k] for h in hx) / n
            dy = [h[k] - ybar for h in hx]
            denominator = sum(d * d for d in dy) + (n - 1) * self.r[k]
            # K = cov(x, y_k) / (var(y_k) + r_k), for the state and the
            # observed values; dy has mean zero, so sum_j x_j dy_j is
            # (n - 1) cov(x, y_k) without centring x.
            gain_x = [0.0] * len(x[0])
            gain_y = [0.0] * p
            for member, observed, d in zip(x, hx, dy):
                w = d / denominator
                gain_x = [g + w * v for g, v in zip(gain_x, member)]
                gain_y = [g + w * v for g, v in zip(gain_y, observed)]
            for j in range(n):
                # Perturbed observation: y_k + e, e ~ N(0, r_k).
                innovation = y[k] + math.sqrt(self.r[k]) * rng.gauss(0.0, 1.0) - hx[j][k]
                x[j] = [v + g * innovation for v, g in zip(x[j], gain_x)]
                hx[j] = [v + g * innovation for v, g in zip(hx[j], gain_y)]
        if self.infl != 1.0:
            m = len(x[0])
            xbar = [sum(member[i] for member in x) / n for i in range(m)]
            x = [[c + self.infl * (v - c) for v, c in zip(member, xbar)] for member in x]
        return x


Assimilate = filter_method(PerturbedObsEnkf)

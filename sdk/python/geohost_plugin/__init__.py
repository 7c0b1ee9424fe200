"""Write geohost plugins (wasm components) in plain Python.

A plugin is a class with ``__init__(self, config)``, ``info(self)`` and the
world's one working method; one line turns it into the export class that
componentize-py wants::

    from geohost_plugin import Config, forward_model

    class Decay:
        def __init__(self, config: Config):
            config.allow_only("rate")
            self.rate = config.float("rate", 1.0)
        def info(self):
            return dict(name="decay", version="0.1.0", state_size=3, default_dt=0.1)
        def advance(self, members, t, dt):
            return [[v * math.exp(-self.rate * dt) for v in x] for x in members]

    Forward = forward_model(Decay)

What the adapters do for you (each is a thing Python authors trip over):

* **State lives at module level.** componentize-py makes a new export object
  for every call, so attributes set in ``init`` would be gone by the next
  call. The adapter keeps your instance in the adapter itself (module
  state), made once by ``init``.
* **Exceptions become the world's errors.** An exception escaping an export
  traps the component as ``unreachable``. The adapter returns it as the
  call's ``result`` error instead: the exception's type and message (a
  :class:`PluginError`'s message alone, for errors meant for the user) and
  where it was raised, file and line, so the host prints it.
* **Shapes.** Ensembles cross the boundary as one flat ``list[float]``; the
  adapter hands you rows (one list per member) and checks the rows you give
  back (count, length, finite values) before the host sees them.

The sandbox provides no WASI: components are built with
``componentize-py --stub-wasi``, so ``print``, ``time.time()``, ``random``
and file access trap. Seed randomness from the ``seed`` argument
(``random.Random(seed)`` works: it does not ask the system for entropy).
"""

import json
import math

__all__ = [
    "Config",
    "PluginError",
    "rows",
    "flat",
    "forward_model",
    "obs_operator",
    "static_model",
    "metric",
    "filter_method",
]


class PluginError(Exception):
    """An error meant for the user: its message is returned as it is."""


class Config:
    """A plugin's JSON config with typed getters whose errors name the key."""

    def __init__(self, text):
        try:
            value = json.loads(text) if text.strip() else {}
        except ValueError as e:
            raise PluginError(f"config is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise PluginError(f"config must be a JSON object, got {type(value).__name__}")
        self.values = value

    def allow_only(self, *keys):
        """Refuse keys not in ``keys`` (a typo would otherwise be ignored)."""
        unknown = sorted(set(self.values) - set(keys))
        if unknown:
            allowed = ", ".join(keys) if keys else "none"
            raise PluginError(f"unknown config key `{unknown[0]}` (allowed: {allowed})")

    def _get(self, key, default, kind, check):
        if key not in self.values or self.values[key] is None:
            if default is None:
                raise PluginError(f"config key `{key}` is required ({kind})")
            return default
        value = self.values[key]
        if not check(value):
            raise PluginError(f"config key `{key}` must be {kind}, got {json.dumps(value)}")
        return value

    def float(self, key, default=None, min=None, max=None):
        """A finite number, optionally within [min, max]."""
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        value = float(self._get(key, default, "a finite number", number))
        if (min is not None and value < min) or (max is not None and value > max):
            raise PluginError(f"config key `{key}` must be in [{min}, {max}], got {value}")
        return value

    def int(self, key, default=None, min=None, max=None):
        """An integer, optionally within [min, max]."""
        integer = lambda v: isinstance(v, int) and not isinstance(v, bool)
        value = self._get(key, default, "an integer", integer)
        if (min is not None and value < min) or (max is not None and value > max):
            raise PluginError(f"config key `{key}` must be in [{min}, {max}], got {value}")
        return value

    def str(self, key, default=None, choices=None):
        """A string, optionally one of ``choices``."""
        value = self._get(key, default, "a string", lambda v: isinstance(v, str))
        if choices is not None and value not in choices:
            raise PluginError(f"config key `{key}` must be one of {', '.join(choices)}, got {value!r}")
        return value

    def bool(self, key, default=None):
        return self._get(key, default, "true or false", lambda v: isinstance(v, bool))

    def floats(self, key, default=None):
        """A list of finite numbers."""
        ok = lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        return [float(x) for x in self._get(key, default, "a list of finite numbers", ok)]


def rows(data, size):
    """A flat row-major list as a list of rows of ``size`` values."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def flat(rows_, members, size, what):
    """Rows back to one flat list, checking there are ``members`` rows of
    ``size`` finite values (``what`` names them in the error)."""
    if len(rows_) != members:
        raise PluginError(f"{what}: {len(rows_)} rows returned, expected {members}")
    out = []
    for i, row in enumerate(rows_):
        if len(row) != size:
            raise PluginError(f"{what}: row {i} has {len(row)} values, expected {size}")
        out.extend(row)
    for i, v in enumerate(out):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise PluginError(f"{what}: value {i} (row {i // size}) is {v!r}, not a finite number")
    return [float(v) for v in out]


def _where(tb):
    """Where an exception was raised, from its traceback's frames only
    (formatting a traceback the usual way reads the source files, which a
    sandboxed component cannot)."""
    places = []
    while tb is not None:
        code = tb.tb_frame.f_code
        # componentize-py files each -p folder as /0/, /1/, ...: keep the
        # path inside it. The adapters' own frames say nothing to the author.
        file = code.co_filename.split("/", 2)[-1] if code.co_filename.startswith("/") else code.co_filename
        if not file.startswith("geohost_plugin/"):
            places.append(f"{file}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    return places


def _as_err(call):
    """Run ``call()``, turning any exception into componentize-py's ``Err``."""
    from componentize_py_types import Err

    try:
        return call()
    except Err:
        raise
    except PluginError as e:
        raise Err(str(e)) from None
    except Exception as e:  # noqa: BLE001 - every failure becomes the call's error
        trace = "; ".join(_where(e.__traceback__)) or "?"
        raise Err(f"Python {type(e).__name__}: {e} (at {trace})") from None


class _Slot:
    """The user's plugin instance, kept across calls (see the module doc)."""

    def __init__(self, cls):
        self.cls = cls
        self.instance = None

    def get(self):
        if self.instance is None:
            raise PluginError("called before init")
        return self.instance


def _record(cls, values, defaults, what):
    """A WIT record from a dict, with defaults; unknown or missing fields
    are errors that name them."""
    if not isinstance(values, dict):
        raise PluginError(f"{what} must return a dict, got {type(values).__name__}")
    fields = dict(defaults)
    fields.update(values)
    try:
        return cls(**fields)
    except TypeError as e:
        raise PluginError(f"{what}: {e}") from None


def _parameters(types, values):
    return [types.Parameter(name=n, value=float(v), units=u) for (n, v, u) in values]


def forward_model(cls):
    """The ``Forward`` export of the ``forward-model`` world for ``cls``:
    ``cls(config)``, ``info()`` returning a dict of ``model-info`` (name,
    version, state_size, default_dt; optional parameters as (name, value,
    units) tuples, state_units, time_units, grid as dict(points, periodic)),
    and ``advance(members, t, dt)`` returning the advanced members."""
    from wit_world import exports
    from wit_world.exports import forward
    from wit_world.imports import types

    slot = _Slot(cls)

    class Forward(exports.Forward):
        def init(self, config):
            def run():
                slot.instance = cls(Config(config))
                info = dict(slot.instance.info())
                info["parameters"] = _parameters(types, info.get("parameters", []))
                grid = info.get("grid")
                info["grid"] = types.Grid(**grid) if isinstance(grid, dict) else grid
                return _record(forward.ModelInfo, info, {"state_units": "1", "time_units": "1", "grid": None}, "info()")

            return _as_err(run)

        def advance(self, states, t, dt):
            def run():
                model = slot.get()
                out = model.advance(rows(states.data, states.size), t, dt)
                data = flat(out, states.members, states.size, "advance")
                return types.Ensemble(members=states.members, size=states.size, data=data)

            return _as_err(run)

    return Forward


def obs_operator(cls):
    """The ``Observe`` export of the ``obs-operator`` world for ``cls``:
    ``cls(config)``, ``info()`` returning a dict of ``obs-info`` (name,
    version, state_size, obs_size, noise_variance, locations; optional
    parameters, units), and ``observe(state, t)`` returning one
    observation vector for one state."""
    from wit_world import exports
    from wit_world.exports import observe
    from wit_world.imports import types

    slot = _Slot(cls)

    class Observe(exports.Observe):
        def init(self, config):
            def run():
                slot.instance = cls(Config(config))
                info = dict(slot.instance.info())
                info["parameters"] = _parameters(types, info.get("parameters", []))
                record = _record(observe.ObsInfo, info, {"units": "1"}, "info()")
                slot.obs_size = record.obs_size
                return record

            return _as_err(run)

        def observe(self, states, t):
            def run():
                op = slot.get()
                out = [op.observe(x, t) for x in rows(states.data, states.size)]
                data = flat(out, states.members, slot.obs_size, "observe")
                return types.Ensemble(members=states.members, size=slot.obs_size, data=data)

            return _as_err(run)

    return Observe


def static_model(cls):
    """The ``Simulate`` export of the ``static-model`` world for ``cls``:
    ``cls(config)``, ``info()`` returning a dict of ``simulator-info``
    (name, version, parameters as (name, units) tuples, output_size;
    optional output_units, settings, stochastic), and ``simulate(thetas,
    seed)`` returning one output row per row of ``thetas``."""
    from wit_world import exports
    from wit_world.exports import simulate
    from wit_world.imports import types

    slot = _Slot(cls)

    class Simulate(exports.Simulate):
        def init(self, config):
            def run():
                slot.instance = cls(Config(config))
                info = dict(slot.instance.info())
                info["parameters"] = [simulate.ParameterInfo(name=n, units=u) for (n, u) in info.get("parameters", [])]
                info["settings"] = _parameters(types, info.get("settings", []))
                record = _record(simulate.SimulatorInfo, info, {"output_units": "1", "stochastic": False}, "info()")
                slot.output_size = record.output_size
                return record

            return _as_err(run)

        def simulate(self, thetas, seed):
            def run():
                out = slot.get().simulate(rows(thetas.data, thetas.size), seed)
                data = flat(out, thetas.members, slot.output_size, "simulate")
                return types.Ensemble(members=thetas.members, size=slot.output_size, data=data)

            return _as_err(run)

    return Simulate


def metric(cls):
    """The ``Score`` export of the ``metric`` world for ``cls``:
    ``cls(config)``, ``info()`` returning a dict (name, version, metrics),
    and ``compute(prediction, reference, members)`` with the tables as rows
    (``members``: None, or one table of rows per member) returning a dict
    of metric name to a number or a list of numbers."""
    from wit_world import exports
    from wit_world.exports import score

    slot = _Slot(cls)

    class Score(exports.Score):
        def init(self, config):
            def run():
                slot.instance = cls(Config(config))
                return _record(score.MetricInfo, dict(slot.instance.info()), {}, "info()")

            return _as_err(run)

        def compute(self, input):
            def run():
                p, r, m = input.prediction, input.reference, input.members
                members = None
                if m is not None:
                    per = m.rows * m.cols
                    members = [rows(m.data[k * per : (k + 1) * per], m.cols) for k in range(m.members)]
                values = slot.get().compute(rows(p.data, p.cols), rows(r.data, r.cols), members)
                out = []
                for name, v in values.items():
                    if isinstance(v, (list, tuple)):
                        out.append(score.MetricValue(name=name, value=score.Value_Vector([float(x) for x in v])))
                    else:
                        out.append(score.MetricValue(name=name, value=score.Value_Scalar(float(v))))
                return out

            return _as_err(run)

    return Score


class Problem:
    """The assimilation problem a filter is made for (``assimilate.problem``)."""

    def __init__(self, p):
        self.state_size = p.state_size
        self.obs_size = p.obs_size
        self.noise_variance = list(p.noise_variance)
        self.locations = list(p.locations)
        self.grid = None if p.grid is None else {"points": p.grid.points, "periodic": p.grid.periodic}
        self.dt = p.dt


def filter_method(cls):
    """The ``Assimilate`` export of the ``filter`` world for ``cls``:
    ``cls(config, problem)`` (a :class:`Problem`), ``info()`` returning a
    dict (name, version, members), and ``analyse(forecast, forecast_obs, y,
    t, seed)`` with the ensembles as rows, returning the analysis rows."""
    from wit_world import exports
    from wit_world.exports import assimilate
    from wit_world.imports import types

    slot = _Slot(cls)

    class Assimilate(exports.Assimilate):
        def init(self, config, problem):
            def run():
                slot.instance = cls(Config(config), Problem(problem))
                return _record(assimilate.FilterInfo, dict(slot.instance.info()), {}, "info()")

            return _as_err(run)

        def analyse(self, forecast, forecast_obs, y, t, seed):
            def run():
                out = slot.get().analyse(rows(forecast.data, forecast.size), rows(forecast_obs.data, forecast_obs.size), list(y), t, seed)
                data = flat(out, forecast.members, forecast.size, "analyse")
                return types.Ensemble(members=forecast.members, size=forecast.size, data=data)

            return _as_err(run)

    return Assimilate

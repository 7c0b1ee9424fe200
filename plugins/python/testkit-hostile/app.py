"""A misbehaving Python forward model, for the tests: `mode` = "ok"
(persistence), "raise" (a Python exception in `advance`), "print" (calls
print, a WASI call the sandbox stubs out), "time" (calls time.time()),
"escape" (an exception that escapes the export, without the SDK's adapter).
"""

import time

from geohost_plugin import Config, forward_model


class Hostile:
    def __init__(self, config: Config):
        config.allow_only("mode", "size")
        self.mode = config.str("mode", "ok", choices=["ok", "raise", "print", "time", "escape"])
        self.size = config.int("size", 40, min=1)

    def info(self):
        return dict(name="testkit-hostile-py", version="0.1.0", state_size=self.size, default_dt=0.05)

    def advance(self, members, t, dt):
        if self.mode == "raise":
            return [self.explode(x) for x in members]
        if self.mode == "print":
            print("advancing", len(members), "members")
        if self.mode == "time":
            members[0][0] += time.time() * 0.0
        return members

    def explode(self, x):
        raise ValueError(f"state of {len(x)} variables is not what this model expected")


_Adapted = forward_model(Hostile)


class Forward(_Adapted):
    def advance(self, states, t, dt):
        if _Adapted.mode_escape:
            raise RuntimeError("escaped the adapter")
        return super().advance(states, t, dt)

    def init(self, config):
        _Adapted.mode_escape = '"escape"' in config
        return super().init(config)

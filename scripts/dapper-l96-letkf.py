"""DAPPER's LETKF on Lorenz-96 of Nx variables, timed per cycle: the side
of docs/performance.md#against-dapper-on-lorenz-96 that geohost's
cycles/bench/l96-letkf-*.toml mirror (sakov2008's HMM otherwise: dt 0.05,
every variable observed with R = I, batches of 2 as local domains),
N = 20, infl 1.04, loc_rad 4, statistics on, no live plots.

Usage (DAPPER 1.7.1 from PyPI in a venv): python dapper-l96-letkf.py NX CYCLES
"""
import sys
import time

import numpy as np
import dapper.mods as modelling
import dapper.da_methods as da
from dapper.mods.Lorenz96 import dstep_dx, step, x0
from dapper.tools.localization import nd_Id_localization

Nx, K = int(sys.argv[1]), int(sys.argv[2])
tseq = modelling.Chronology(0.05, dko=1, Ko=K, BurnIn=0.05)
Dyn = {"M": Nx, "model": step, "linear": dstep_dx, "noise": 0}
X0 = modelling.GaussRV(mu=x0(Nx), C=0.001)
Obs = modelling.partial_Id_Obs(Nx, np.arange(Nx))
Obs["noise"] = 1
Obs["localizer"] = nd_Id_localization((Nx,), (2,))
HMM = modelling.HiddenMarkovModel(Dyn, Obs, tseq, X0)
xx, yy = HMM.simulate()
xp = da.LETKF(N=20, infl=1.04, loc_rad=4)
start = time.perf_counter()
xp.assimilate(HMM, xx, yy, liveplots=False)
elapsed = time.perf_counter() - start
print(f"DAPPER LETKF Nx={Nx}: {1e3 * elapsed / K:.1f} ms per cycle over {K} cycles")

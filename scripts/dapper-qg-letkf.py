"""DAPPER's LETKF on its QG/sakov2008 setup, timed per cycle: the side of
docs/performance.md#against-dapper-on-qg that geohost's cycles/qg.toml
mirrors (129 × 129 streamfunction, 300 track observations with R = 4,
2 × 2 batches, one cycle every 5 time units), DAPPER's suggested tuning
(LETKF mp=True, infl 1.04 for N = 25 and 1.02 for N = 45, loc_rad 10),
shortened to CYCLES cycles, no live plots.

Usage (DAPPER 1.7.1 from PyPI in a venv, its QG Fortran built with f2py
as dapper/mods/QG/f90/README.md says; the first import generates DAPPER's
sample file): python dapper-qg-letkf.py N CYCLES [serial]
(`serial`: mp=False, the analysis in one process).
"""
import sys
import time

import dapper.da_methods as da
import dapper.mods as modelling
from dapper.mods.QG.sakov2008 import HMM

N, K = int(sys.argv[1]), int(sys.argv[2])
mp = sys.argv[3:] != ["serial"]
HMM.tseq = modelling.Chronology(HMM.tseq.dt, dko=1, Ko=K, BurnIn=HMM.tseq.dt)
xx, yy = HMM.simulate()
xp = da.LETKF(mp=mp, N=N, infl=1.04 if N <= 25 else 1.02, loc_rad=10)
start = time.perf_counter()
xp.assimilate(HMM, xx, yy, liveplots=False)
elapsed = time.perf_counter() - start
cycles = HMM.tseq.Ko + 1  # analyses, the first at the first observation
print(f"DAPPER QG LETKF N={N} mp={mp}: {cycles} cycles in {elapsed:.1f} s, {elapsed / cycles * 1e3:.0f} ms per cycle")

//! The quasi-geostrophic model of Sakov & Oke (2008): one layer of
//! streamfunction ψ on a square basin (unit side, walls at the edges),
//! driven by a double-gyre wind curl, as in DAPPER's `QG/sakov2008` setup.
//!
//! Written from the model's equations:
//!
//!   q = ∇²ψ − F ψ                                   (potential vorticity)
//!   ∂q/∂t = −r J(ψ, q) − β ∂ψ/∂x − r_kb ζ + r_kh ∇²ζ − r_kh2 ∇⁴ζ + curl τ,
//!   ζ = ∇²ψ,  curl τ = −2π sin(2π y),  ψ = 0 on the walls.
//!
//! Discretisation (`n × n` points, spacing h = 1/(n−1)): Arakawa's (1966)
//! Jacobian, which conserves the discrete energy and enstrophy; five-point
//! Laplacians (zero on the walls); centred ∂ψ/∂x; classic RK4 in q with
//! steps of at most `max_dt`. ψ is recovered from q by solving the
//! Helmholtz problem (∇² − F)ψ = q exactly: a sine transform along x
//! (which diagonalises the second difference with ψ = 0 at the walls) and
//! a tridiagonal solve along y for each sine mode. ζ = ∇²ψ is then q + Fψ.
//!
//! The state is ψ at every point, rows of constant y (slowest) by x; the
//! model describes it as a 2-D layout (axes `y`, `x`, in grid points).
//!
//! Config: `refinement` (n = 2^refinement + 1, default 7 → 129), `F`
//! (1600), `r` (1e-5), `beta` (1), `rkb` (0), `rkh` (0), `rkh2` (2e-12),
//! `forcing` (1: scale of the wind curl), `max_dt` (1.25).

use geohost_sdk::{Config, ForwardModel, Layout, ModelInfo, Parameter};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::f64::consts::PI;
use std::sync::Arc;

/// The exact solver of (∇² − F)ψ = q with ψ = 0 on the walls, on the
/// `m × m` interior points (m = n − 2).
struct Helmholtz {
    m: usize,
    fft: Arc<dyn RealToComplex<f64>>,
    /// Per row j and sine mode k (row-major, j slowest): the Thomas
    /// algorithm's modified super-diagonal c′ and 1 / modified diagonal.
    c_prime: Vec<f64>,
    inv_diag: Vec<f64>,
    /// Rows kept of the two tables: every later row equals the last.
    /// Stored: derived from the tables' length in `solve` instead, the
    /// plugins/build.sh build measured 3–4% slower (`geohost perf model`).
    table_rows: usize,
    /// 1/h², the off-diagonals of the tridiagonal systems.
    off: f64,
    /// sin(π j / (m+1)), j = 0..=m, for the sine transform's folding.
    sines: Vec<f64>,
    line: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    /// The transformed field, interior rows × sine modes.
    hat: Vec<f64>,
}

impl Helmholtz {
    fn new(n: usize, h: f64, f: f64) -> Helmholtz {
        let m = n - 2;
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(m + 1);
        let off = 1.0 / (h * h);
        let (mut c_prime, mut inv_diag) = (vec![0.0; m * m], vec![0.0; m * m]);
        for k in 0..m {
            // The second difference along x of sine mode k+1.
            let lambda = (2.0 * (PI * (k + 1) as f64 / (m + 1) as f64).cos() - 2.0) * off;
            let b = lambda - 2.0 * off - f;
            let mut c_prev = 0.0;
            for j in 0..m {
                let d = 1.0 / (b - off * c_prev);
                inv_diag[j * m + k] = d;
                c_prime[j * m + k] = off * d;
                c_prev = c_prime[j * m + k];
            }
        }
        // The recurrence reaches a fixed point (in floating point, exactly):
        // keep the rows up to the last that differs from the one after.
        let mut rows = m;
        while rows > 1 && c_prime[(rows - 2) * m..(rows - 1) * m] == c_prime[(rows - 1) * m..rows * m] && inv_diag[(rows - 2) * m..(rows - 1) * m] == inv_diag[(rows - 1) * m..rows * m] {
            rows -= 1;
        }
        c_prime.truncate(rows * m);
        inv_diag.truncate(rows * m);
        let (line, spectrum, scratch) = (fft.make_input_vec(), fft.make_output_vec(), fft.make_scratch_vec());
        let sines = (0..=m).map(|j| (PI * j as f64 / (m + 1) as f64).sin()).collect();
        Helmholtz { m, fft, c_prime, inv_diag, table_rows: rows, off, sines, line, spectrum, scratch, hat: vec![0.0; m * m] }
    }

    /// The sine transform S_k = Σ_j x_j sin(π k j / N) of `row` (x_1 …
    /// x_m, N = m + 1 even) into `out`, times `scale`, through a real FFT
    /// of length N (Numerical Recipes' `sinft`): fold the row into
    /// y_j = sin(πj/N)(x_j + x_{N−j}) + ½(x_j − x_{N−j}); then with
    /// Y = FFT(y), S_2k = −Im Y_k and S_2k+1 = S_2k−1 + Re Y_k from
    /// S_1 = ½ Re Y_0. Half the length of the odd extension's FFT.
    #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
    fn sine_transform(&mut self, row: &[f64], out: &mut [f64], scale: f64) {
        let m = self.m;
        let (row, out) = (&row[..m], &mut out[..m]);
        // y_j for j = 1 … m reads x_j forwards and x_{N−j} backwards.
        self.line[0] = 0.0;
        for (((y, &s), &a), &b) in self.line[1..].iter_mut().zip(&self.sines[1..]).zip(row).zip(row.iter().rev()) {
            *y = s * (a + b) + 0.5 * (a - b);
        }
        self.fft.process_with_scratch(&mut self.line, &mut self.spectrum, &mut self.scratch).expect("buffers sized by the plan");
        let mut sum = 0.5 * self.spectrum[0].re;
        out[0] = scale * sum;
        // (S_2k−1, S_2k) for k = 1 … N/2 − 1.
        for (pair, y) in out[1..].chunks_exact_mut(2).zip(&self.spectrum[1..]) {
            pair[0] = -scale * y.im;
            sum += y.re;
            pair[1] = scale * sum;
        }
    }

    /// ψ from q (both `n × n`, row-major by y); ψ is zero on the walls.
    #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
    fn solve(&mut self, q: &[f64], psi: &mut [f64]) {
        let (m, n) = (self.m, self.m + 2);
        let mut hat = std::mem::take(&mut self.hat);
        for j in 0..m {
            let row = &q[(j + 1) * n + 1..(j + 1) * n + 1 + m];
            self.sine_transform(row, &mut hat[j * m..(j + 1) * m], 1.0);
        }
        // Thomas algorithm along y for every mode at once (k innermost).
        let off = self.off;
        for (x, &d) in hat[..m].iter_mut().zip(&self.inv_diag[..m]) {
            *x *= d;
        }
        for j in 1..m {
            let (done, rest) = hat.split_at_mut(j * m);
            let (prev, row) = (&done[(j - 1) * m..], &mut rest[..m]);
            let t = j.min(self.table_rows - 1);
            for ((x, &p), &d) in row.iter_mut().zip(prev).zip(&self.inv_diag[t * m..(t + 1) * m]) {
                *x = (*x - off * p) * d;
            }
        }
        for j in (0..m - 1).rev() {
            let (head, next) = hat.split_at_mut((j + 1) * m);
            let (row, next) = (&mut head[j * m..], &next[..m]);
            let t = j.min(self.table_rows - 1);
            for ((x, &nx), &c) in row.iter_mut().zip(next).zip(&self.c_prime[t * m..(t + 1) * m]) {
                *x -= c * nx;
            }
        }
        // Back to points: the sine transform is its own inverse up to 2/(m+1).
        zero_walls(n, psi);
        for j in 0..m {
            self.sine_transform(&hat[j * m..(j + 1) * m], &mut psi[(j + 1) * n + 1..(j + 1) * n + 1 + m], 2.0 / (m + 1) as f64);
        }
        self.hat = hat;
    }
}

/// Zero on the walls of the `n × n` field `out`: the stencils below write
/// every interior point and leave the walls to this (cheaper than zeroing
/// the whole field first).
fn zero_walls(n: usize, out: &mut [f64]) {
    out[..n].fill(0.0);
    out[(n - 1) * n..].fill(0.0);
    for row in out[n..(n - 1) * n].chunks_exact_mut(n) {
        row[0] = 0.0;
        row[n - 1] = 0.0;
    }
}

/// The interior points of row `j` of `v` (`n` per row), shifted by `dx`
/// points along x and `dy` rows: `n − 2` values. The stencils below read
/// their neighbours as such shifted rows, so each loop runs over slices of
/// one length the compiler can see (no bounds checks; the loops vectorise
/// where the target has SIMD).
fn shifted(v: &[f64], n: usize, j: usize, dy: isize, dx: isize) -> &[f64] {
    let start = ((j as isize + dy) * n as isize + 1 + dx) as usize;
    &v[start..start + n - 2]
}

/// The five-point Laplacian of `a` into `out`, zero on the walls.
#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
fn laplacian(n: usize, h: f64, a: &[f64], out: &mut [f64]) {
    zero_walls(n, out);
    for j in 1..n - 1 {
        laplacian_row(n, h, a, j, &mut out[j * n + 1..(j + 1) * n - 1]);
    }
}

/// Row `j` of Arakawa's Jacobian J(a, b) = a_x b_y − a_y b_x (x along
/// rows, y across them), the mean of the three second-order forms J⁺⁺,
/// J⁺ˣ, Jˣ⁺, at the row's `n − 2` interior points, into `out`. The flux
/// takes it row by row, so no whole field of it is ever stored.
#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
fn arakawa_row(n: usize, h: f64, a: &[f64], b: &[f64], j: usize, out: &mut [f64]) {
    let scale = 1.0 / (12.0 * h * h);
    // Neighbours: e(ast) = x+1, w = x−1, n(orth) = y+1, s = y−1.
    let ra = |dy, dx| shifted(a, n, j, dy, dx);
    let rb = |dy, dx| shifted(b, n, j, dy, dx);
    let (ae, aw, an, as_) = (ra(0, 1), ra(0, -1), ra(1, 0), ra(-1, 0));
    let (ane, anw, ase, asw) = (ra(1, 1), ra(1, -1), ra(-1, 1), ra(-1, -1));
    let (be, bw, bn, bs) = (rb(0, 1), rb(0, -1), rb(1, 0), rb(-1, 0));
    let (bne, bnw, bse, bsw) = (rb(1, 1), rb(1, -1), rb(-1, 1), rb(-1, -1));
    let m = out.len();
    let (ae, aw, an, as_, ane, anw, ase, asw) = (&ae[..m], &aw[..m], &an[..m], &as_[..m], &ane[..m], &anw[..m], &ase[..m], &asw[..m]);
    let (be, bw, bn, bs, bne, bnw, bse, bsw) = (&be[..m], &bw[..m], &bn[..m], &bs[..m], &bne[..m], &bnw[..m], &bse[..m], &bsw[..m]);
    for i in 0..m {
        let j_pp = (ae[i] - aw[i]) * (bn[i] - bs[i]) - (an[i] - as_[i]) * (be[i] - bw[i]);
        let j_px = ae[i] * (bne[i] - bse[i]) - aw[i] * (bnw[i] - bsw[i]) - an[i] * (bne[i] - bnw[i]) + as_[i] * (bse[i] - bsw[i]);
        let j_xp = bn[i] * (ane[i] - anw[i]) - bs[i] * (ase[i] - asw[i]) - be[i] * (ane[i] - ase[i]) + bw[i] * (anw[i] - asw[i]);
        out[i] = (j_pp + j_px + j_xp) * scale;
    }
}

/// Row `j` of the five-point Laplacian of `a` at its `n − 2` interior
/// points, into `out` (the same sums as [`laplacian`]).
#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
fn laplacian_row(n: usize, h: f64, a: &[f64], j: usize, out: &mut [f64]) {
    let inv_h2 = 1.0 / (h * h);
    let row = |dy, dx| shifted(a, n, j, dy, dx);
    let (c, w, e, s, nn) = (row(0, 0), row(0, -1), row(0, 1), row(-1, 0), row(1, 0));
    for ((((o, c), w), e), (s, nn)) in out.iter_mut().zip(c).zip(w).zip(e).zip(s.iter().zip(nn)) {
        *o = (w + e + s + nn - 4.0 * c) * inv_h2;
    }
}

struct Qg {
    n: usize,
    h: f64,
    f: f64,
    r: f64,
    beta: f64,
    rkb: f64,
    rkh: f64,
    rkh2: f64,
    forcing: f64,
    max_dt: f64,
    /// The wind curl at every point.
    curl: Vec<f64>,
    solver: Helmholtz,
    /// Work arrays, each `n × n`.
    psi: Vec<f64>,
    zeta: Vec<f64>,
    zeta2: Vec<f64>,
    /// One interior row each of J(ψ, q) and ∇²ζ₂, made as the flux needs them.
    jac_row: Vec<f64>,
    zeta4_row: Vec<f64>,
    stages: [Vec<f64>; 4],
    q: Vec<f64>,
    q_stage: Vec<f64>,
}

impl Qg {
    /// dq/dt at `q` into `flux` (ψ solved into `self.psi` on the way).
    /// Row by row: the Jacobian and ∇⁴ζ of a row are made just before
    /// the row's flux (the same sums as whole fields, without storing them).
    #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
    fn flux(&mut self, q: &[f64], stage: usize) {
        let (n, h) = (self.n, self.h);
        self.solver.solve(q, &mut self.psi);
        // ζ = ∇²ψ = q + Fψ: the solve made (∇² − F)ψ = q exactly, so this
        // is the five-point Laplacian without its pass over ψ's neighbours
        // (3.5–4% of the model's time, docs/performance.md).
        let f = self.f;
        for ((z, &q), &psi) in self.zeta.iter_mut().zip(q).zip(&self.psi) {
            *z = q + f * psi;
        }
        zero_walls(n, &mut self.zeta);
        let viscous = self.rkh != 0.0 || self.rkh2 != 0.0;
        if viscous {
            laplacian(n, h, &self.zeta, &mut self.zeta2);
        }
        let flux = &mut self.stages[stage];
        let beta_h = self.beta / (2.0 * h);
        let (r, rkb, rkh, rkh2) = (self.r, self.rkb, self.rkh, self.rkh2);
        let (jac, zeta4) = (&mut self.jac_row, &mut self.zeta4_row);
        zero_walls(n, flux);
        for j in 1..n - 1 {
            arakawa_row(n, h, &self.psi, q, j, jac);
            let (zeta, curl) = (shifted(&self.zeta, n, j, 0, 0), shifted(&self.curl, n, j, 0, 0));
            let (psi_e, psi_w) = (shifted(&self.psi, n, j, 0, 1), shifted(&self.psi, n, j, 0, -1));
            let out = &mut flux[j * n + 1..(j + 1) * n - 1];
            for ((((o, &jac), &zeta), &curl), (&e, &w)) in out.iter_mut().zip(&*jac).zip(zeta).zip(curl).zip(psi_e.iter().zip(psi_w)) {
                *o = -r * jac - rkb * zeta + curl - beta_h * (e - w);
            }
            if viscous {
                laplacian_row(n, h, &self.zeta2, j, zeta4);
                let zeta2 = shifted(&self.zeta2, n, j, 0, 0);
                for ((o, &z2), &z4) in out.iter_mut().zip(zeta2).zip(&*zeta4) {
                    *o += rkh * z2 - rkh2 * z4;
                }
            }
        }
    }

    /// One RK4 step of length `dt` of `self.q`.
    #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
    fn rk4(&mut self, dt: f64) {
        let q0 = std::mem::take(&mut self.q);
        let mut qs = std::mem::take(&mut self.q_stage);
        self.flux(&q0, 0);
        for (stage, weight) in [(1, 0.5), (2, 0.5), (3, 1.0)] {
            for ((s, &q), &k) in qs.iter_mut().zip(&q0).zip(&self.stages[stage - 1]) {
                *s = q + weight * dt * k;
            }
            self.flux(&qs, stage);
        }
        let mut q = q0;
        let [k1, k2, k3, k4] = &self.stages;
        for ((((q, &k1), &k2), &k3), &k4) in q.iter_mut().zip(k1).zip(k2).zip(k3).zip(k4) {
            *q += dt / 6.0 * (k1 + 2.0 * (k2 + k3) + k4);
        }
        self.q = q;
        self.q_stage = qs;
    }
}

impl ForwardModel for Qg {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["refinement", "F", "r", "beta", "rkb", "rkh", "rkh2", "forcing", "max_dt"])?;
        let refinement = config.usize_or("refinement", 7)?;
        if !(3..=9).contains(&refinement) {
            return Err(format!("config key `refinement` must be between 3 (9 × 9 points) and 9 (513 × 513), got {refinement}"));
        }
        let n = (1 << refinement) + 1;
        let h = 1.0 / (n - 1) as f64;
        let get = |key: &str, default: f64, positive: bool| -> Result<f64, String> {
            let v = config.f64_or(key, default)?;
            if !v.is_finite() || v < 0.0 || (positive && v == 0.0) {
                return Err(format!("config key `{key}` must be finite and {}, got {v}", if positive { "positive" } else { "not negative" }));
            }
            Ok(v)
        };
        let (f, r, beta) = (get("F", 1600.0, false)?, get("r", 1e-5, false)?, get("beta", 1.0, false)?);
        let (rkb, rkh, rkh2) = (get("rkb", 0.0, false)?, get("rkh", 0.0, false)?, get("rkh2", 2e-12, false)?);
        let (forcing, max_dt) = (get("forcing", 1.0, false)?, get("max_dt", 1.25, true)?);
        let curl = (0..n * n).map(|p| -forcing * 2.0 * PI * (2.0 * PI * (p / n) as f64 * h).sin()).collect();
        let field = || vec![0.0; n * n];
        Ok(Qg {
            n,
            h,
            f,
            r,
            beta,
            rkb,
            rkh,
            rkh2,
            forcing,
            max_dt,
            curl,
            solver: Helmholtz::new(n, h, f),
            psi: field(),
            zeta: field(),
            zeta2: field(),
            jac_row: vec![0.0; n - 2],
            zeta4_row: vec![0.0; n - 2],
            stages: [field(), field(), field(), field()],
            q: field(),
            q_stage: field(),
        })
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            parameters: vec![
                Parameter::new("points_per_side", self.n as f64, "1"),
                Parameter::new("F", self.f, "1"),
                Parameter::new("r", self.r, "1"),
                Parameter::new("beta", self.beta, "1"),
                Parameter::new("rkb", self.rkb, "1"),
                Parameter::new("rkh", self.rkh, "1"),
                Parameter::new("rkh2", self.rkh2, "1"),
                Parameter::new("forcing", self.forcing, "1"),
                Parameter::new("max_dt", self.max_dt, "1"),
            ],
            ..ModelInfo::new("qg", env!("CARGO_PKG_VERSION"), self.n * self.n, self.max_dt)
        }
    }

    fn layout(&self) -> Option<Layout> {
        Some(Layout::cartesian(&["y", "x"], &[self.n, self.n]))
    }

    /// Advance ψ by `dt` in RK4 steps of at most `max_dt`.
    fn step(&mut self, x: &mut [f64], _t: f64, dt: f64) -> Result<(), String> {
        if !(dt.is_finite() && dt > 0.0) {
            return Err(format!("time step must be positive and finite, got {dt}"));
        }
        let steps = (dt / self.max_dt - 1e-9).ceil().max(1.0) as usize;
        let (n, f) = (self.n, self.f);
        let mut q = std::mem::take(&mut self.q);
        laplacian(n, self.h, x, &mut q);
        for (q, &psi) in q.iter_mut().zip(x.iter()) {
            *q -= f * psi;
        }
        self.q = q;
        for _ in 0..steps {
            self.rk4(dt / steps as f64);
        }
        let q = std::mem::take(&mut self.q);
        self.solver.solve(&q, x);
        self.q = q;
        if let Some(p) = x.iter().position(|v| !v.is_finite()) {
            return Err(format!("ψ became {} at point (y {}, x {}): the integration diverged; reduce `max_dt` or raise `rkh2`", x[p], p / n, p % n));
        }
        Ok(())
    }
}

geohost_sdk::export_forward_model!(Qg);

//! Time integrators for plugin authors.

/// One classic fourth-order Runge–Kutta step of dx/dt = f(x), in place.
///
/// `f(x, dxdt)` writes the tendency of `x` into `dxdt`. `scratch` holds
/// the stage buffers (resized as needed, so reuse it across calls to avoid
/// allocating). The arithmetic is written out in a fixed order so that the
/// same step compiled natively and to wasm gives identical bits.
pub fn rk4_step(x: &mut [f64], dt: f64, scratch: &mut Rk4Scratch, mut f: impl FnMut(&[f64], &mut [f64])) {
    let n = x.len();
    scratch.resize(n);
    let Rk4Scratch { k1, k2, k3, k4, tmp } = scratch;
    f(x, k1);
    for i in 0..n {
        tmp[i] = x[i] + 0.5 * dt * k1[i];
    }
    f(tmp, k2);
    for i in 0..n {
        tmp[i] = x[i] + 0.5 * dt * k2[i];
    }
    f(tmp, k3);
    for i in 0..n {
        tmp[i] = x[i] + dt * k3[i];
    }
    f(tmp, k4);
    for i in 0..n {
        x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    }
}

/// Stage buffers for [`rk4_step`].
#[derive(Default, Clone, Debug)]
pub struct Rk4Scratch {
    k1: Vec<f64>,
    k2: Vec<f64>,
    k3: Vec<f64>,
    k4: Vec<f64>,
    tmp: Vec<f64>,
}

impl Rk4Scratch {
    fn resize(&mut self, n: usize) {
        for v in [&mut self.k1, &mut self.k2, &mut self.k3, &mut self.k4, &mut self.tmp] {
            v.resize(n, 0.0);
        }
    }
}

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
    // Plain slices, not the Vecs: a store through a Vec's buffer may alias
    // its length field as far as the compiler knows, which kept these loops
    // scalar with a bounds check per element (wasm included).
    let Rk4Scratch { k1, k2, k3, k4, tmp } = scratch;
    let (k1, k2, k3, k4, tmp) = (&mut k1[..n], &mut k2[..n], &mut k3[..n], &mut k4[..n], &mut tmp[..n]);
    f(x, k1);
    stage(tmp, x, 0.5 * dt, k1);
    f(tmp, k2);
    stage(tmp, x, 0.5 * dt, k2);
    f(tmp, k3);
    stage(tmp, x, dt, k3);
    f(tmp, k4);
    for ((((xi, a), b), c), d) in x.iter_mut().zip(&*k1).zip(&*k2).zip(&*k3).zip(&*k4) {
        *xi += dt / 6.0 * (a + 2.0 * b + 2.0 * c + d);
    }
}

/// `out = x + h k`, element by element.
fn stage(out: &mut [f64], x: &[f64], h: f64, k: &[f64]) {
    for ((o, xi), ki) in out.iter_mut().zip(x).zip(k) {
        *o = xi + h * ki;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rk4_follows_a_known_trajectory_with_fourth_order_error() {
        // dx/dt = A x with A a rotation-plus-decay generator has the exact
        // solution x(t) = e^{−t/4} R(t) x0.
        let exact = |t: f64| {
            let s = (-t / 4.0).exp();
            [s * t.cos(), -s * t.sin()]
        };
        let error_at_2 = |dt: f64| {
            let mut x = [1.0, 0.0];
            let mut scratch = Rk4Scratch::default();
            let steps = (2.0 / dt).round() as usize;
            for _ in 0..steps {
                rk4_step(&mut x, dt, &mut scratch, |x, d| {
                    d[0] = -0.25 * x[0] + x[1];
                    d[1] = -x[0] - 0.25 * x[1];
                });
            }
            let e = exact(2.0);
            ((x[0] - e[0]).powi(2) + (x[1] - e[1]).powi(2)).sqrt()
        };
        let (coarse, fine) = (error_at_2(0.1), error_at_2(0.05));
        assert!(coarse < 1e-5, "RK4 error at dt=0.1 is {coarse}");
        let order = (coarse / fine).log2();
        assert!((order - 4.0).abs() < 0.2, "observed order {order}, expected 4");
    }
}

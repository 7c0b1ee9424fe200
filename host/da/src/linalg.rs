//! Small dense linear-algebra helpers for the ensemble methods, on top of
//! nalgebra. Ensembles are `size × members` (one column per member).

use crate::pool::{threads_for, Pool};
use nalgebra::{DMatrix, DMatrixViewMut, DVector, Dyn, Matrix, Storage, StorageMut};
use rand::Rng;
use rand_distr::StandardNormal;

/// Ensemble mean (over members, i.e. columns).
pub fn mean(e: &DMatrix<f64>) -> DVector<f64> {
    e.column_mean()
}

/// [`mean`] with the rows split over up to `threads` threads of `pool`
/// ([`threads_for`]): the same bits, each row summed member by member as
/// nalgebra's `column_mean` sums it (out ← (1/N)·x + out).
pub fn mean_on(e: &DMatrix<f64>, pool: &mut Pool, threads: usize) -> DVector<f64> {
    let (m, n) = e.shape();
    let mut mu = DVector::zeros(m);
    if m == 0 {
        return mu;
    }
    let d = 1.0 / n as f64;
    pool.split_mut(threads_for(m * n, threads), mu.as_mut_slice(), 1, &|first, part| {
        let rows = first..first + part.len();
        for member in e.as_slice().chunks_exact(m) {
            for (o, &x) in part.iter_mut().zip(&member[rows.clone()]) {
                *o += d * x;
            }
        }
    });
    mu
}

/// Split an ensemble into its mean and anomalies `E − x̄ 1ᵀ`.
pub fn center(e: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let mu = mean(e);
    let mut a = e.clone();
    for mut col in a.column_iter_mut() {
        col -= &mu;
    }
    (mu, a)
}

/// `mu 1ᵀ + A`: rebuild an ensemble from its mean and anomalies.
pub fn add_mean(mu: &DVector<f64>, mut a: DMatrix<f64>) -> DMatrix<f64> {
    for mut col in a.column_iter_mut() {
        col += mu;
    }
    a
}

/// A matrix of independent standard normal draws.
pub fn randn<R: Rng + ?Sized>(rows: usize, cols: usize, rng: &mut R) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.sample(StandardNormal))
}

/// A uniformly random orthogonal matrix (QR of a Gaussian matrix with the
/// sign of R's diagonal folded into Q, so the distribution is Haar).
pub fn random_orthogonal<R: Rng + ?Sized>(n: usize, rng: &mut R) -> DMatrix<f64> {
    let qr = randn(n, n, rng).qr();
    let mut q = qr.q();
    let r = qr.r();
    for (j, mut col) in q.column_iter_mut().enumerate() {
        if r[(j, j)] < 0.0 {
            col.neg_mut();
        }
    }
    q
}

/// A random orthogonal N×N matrix that maps the ones-vector to itself, so
/// applying it to ensemble anomalies keeps their mean at zero (DAPPER's
/// `genOG_1`). Built as `V diag(1, Q) Vᵀ` where V is a Householder
/// reflection whose first column is 1/√N.
pub fn random_mean_preserving_orthogonal<R: Rng + ?Sized>(n: usize, rng: &mut R) -> DMatrix<f64> {
    if n < 2 {
        return DMatrix::identity(n, n);
    }
    let u = DVector::from_element(n, 1.0 / (n as f64).sqrt());
    let mut v = -u;
    v[0] += 1.0; // v = e₁ − u
    let v_norm2 = v.norm_squared();
    let householder = DMatrix::identity(n, n) - (&v * v.transpose()) * (2.0 / v_norm2);
    let mut block = DMatrix::identity(n, n);
    block.view_mut((1, 1), (n - 1, n - 1)).copy_from(&random_orthogonal(n - 1, rng));
    &householder * block * &householder
}

/// Inverse of a symmetric positive-definite matrix (via Cholesky), or an
/// error naming `what`.
pub fn spd_inverse(m: DMatrix<f64>, what: &str) -> anyhow::Result<DMatrix<f64>> {
    match m.cholesky() {
        Some(chol) => Ok(chol.inverse()),
        None => anyhow::bail!("{what} is not positive definite"),
    }
}

/// `A^{-1/2}` of a symmetric positive-definite `a` whose eigenvalues are
/// all at least `lower` (> 0), e.g. `I + G` with G positive semi-definite
/// (then `lower` = 1).
///
/// When the spectrum is narrow — the usual case for the ensemble transform,
/// where A = I + SᵀS/(N−1) and the ensemble is close to the observations —
/// this evaluates the Chebyshev interpolant of x^{-1/2} on a guaranteed
/// eigenvalue interval [λ₋, λ₊] at A ([`chebyshev_inverse_sqrt`]): a
/// polynomial of degree about 15, which costs about seven 40×40 matrix
/// products (a few µs each) where a 40×40 symmetric eigendecomposition
/// takes about a hundred. Small matrices (below 12×12: timed on matrices
/// recorded from Lorenz-96 ETKF runs, the eigendecomposition took 4 µs
/// against 7 at 7×7, and 20 against 13 at 16×16) and a
/// spectrum too wide for a polynomial of moderate degree go to the
/// eigendecomposition instead, so the result is always accurate to rounding.
pub fn spd_inverse_sqrt(a: &DMatrix<f64>, lower: f64) -> DMatrix<f64> {
    let mut out = DMatrix::zeros(a.nrows(), a.ncols());
    spd_inverse_sqrt_into(a, lower, &mut InverseSqrtWork::default(), &mut out);
    out
}

/// The vector instructions the kernels below may use: the widest the
/// processor has, or fewer by `GEOHOST_VECTORS` (`avx512`, `avx2`,
/// `baseline`). Every level gives the same bits (see
/// [`widest_vectors`]); the variable is there to check that, and to time
/// the levels against each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VectorLevel {
    Baseline,
    Avx2,
    Avx512,
}

/// `GEOHOST_VECTORS` read: `None` when unset, an error naming the
/// variable and its values when it is not one of them.
pub fn requested_vectors() -> Result<Option<VectorLevel>, String> {
    match std::env::var("GEOHOST_VECTORS") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) if v == "avx512" => Ok(Some(VectorLevel::Avx512)),
        Ok(v) if v == "avx2" => Ok(Some(VectorLevel::Avx2)),
        Ok(v) if v == "baseline" => Ok(Some(VectorLevel::Baseline)),
        Ok(v) => Err(format!("GEOHOST_VECTORS is `{v}`: use avx512, avx2 or baseline (or leave it unset for the widest the processor has)")),
        Err(e) => Err(format!("GEOHOST_VECTORS: {e}")),
    }
}

/// The level the kernels run at: the widest the processor has (with
/// fused multiply-add), no wider than `GEOHOST_VECTORS` asks (an invalid
/// value is refused by the CLI before anything runs; here it is ignored).
pub fn vector_level() -> VectorLevel {
    static LEVEL: std::sync::OnceLock<VectorLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let has = if !std::arch::is_x86_feature_detected!("fma") {
            VectorLevel::Baseline
        } else if std::arch::is_x86_feature_detected!("avx512f") {
            VectorLevel::Avx512
        } else if std::arch::is_x86_feature_detected!("avx2") {
            VectorLevel::Avx2
        } else {
            VectorLevel::Baseline
        };
        #[cfg(not(target_arch = "x86_64"))]
        let has = VectorLevel::Baseline;
        requested_vectors().ok().flatten().map_or(has, |asked| asked.min(has))
    })
}

/// Define a function whose body is compiled three times, for AVX-512,
/// for AVX2 (both with fused multiply-add) and for the baseline, and
/// called at [`vector_level`]. The bodies here do element-wise products
/// and sums in an order the source fixes (multiply-adds as `mul_add`,
/// one rounding on every path, the baseline's in the C library; nothing
/// reassociated), so every path gives the same bits; only the vector
/// width differs.
macro_rules! widest_vectors {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::linalg::vector_level() {
                    // SAFETY: vector_level is at most what the processor has.
                    $crate::linalg::VectorLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::linalg::VectorLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::linalg::VectorLevel::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}

/// The first `rows × cols` values of `buffer` as a column-major matrix,
/// the buffer grown first when it is shorter (so a buffer reused for
/// matrices of varying size stops allocating once it has held the largest).
pub fn buffer_matrix(buffer: &mut Vec<f64>, rows: usize, cols: usize) -> DMatrixViewMut<'_, f64> {
    DMatrixViewMut::from_slice(buffer_slice(buffer, rows * cols), rows, cols)
}

/// The first `len` values of `buffer`, grown first when it is shorter.
pub fn buffer_slice(buffer: &mut Vec<f64>, len: usize) -> &mut [f64] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// `out ← a b` by nalgebra's GEMM, which hands every product whose sides
/// all exceed 5 to matrixmultiply's kernels. Those allocate a packing
/// buffer on each call: the one allocation left per local domain in the
/// LETKF, for its Gram matrix (kept because the kernels are about 3× faster at N = 20–45 than
/// nalgebra's allocation-free column loop). Test builds count them.
pub fn product_into<SA, SB, SO>(a: &Matrix<f64, Dyn, Dyn, SA>, b: &Matrix<f64, Dyn, Dyn, SB>, out: &mut Matrix<f64, Dyn, Dyn, SO>)
where
    SA: Storage<f64, Dyn, Dyn>,
    SB: Storage<f64, Dyn, Dyn>,
    SO: StorageMut<f64, Dyn, Dyn>,
{
    #[cfg(test)]
    if a.nrows() > 5 && a.ncols() > 5 && b.ncols() > 5 {
        LIBRARY_PRODUCTS.with(|count| count.set(count.get() + 1));
    }
    a.mul_to(b, out);
}

#[cfg(test)]
thread_local! {
    /// Products [`product_into`] made on this thread that allocate.
    pub static LIBRARY_PRODUCTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The buffers [`spd_inverse_sqrt_into`] reuses from call to call: the
/// powers of the polynomial's argument and one product. Once they have
/// held the largest size, the polynomial branch allocates nothing (the
/// LETKF calls it once per local domain).
#[derive(Default)]
pub struct InverseSqrtWork {
    powers: Vec<DMatrix<f64>>,
    product: DMatrix<f64>,
}

/// [`spd_inverse_sqrt`] into `out` (reshaped to `a`'s shape), with
/// buffers from `work`. The eigendecomposition branch (below 12 × 12, or a
/// spectrum too wide for the polynomial) allocates inside nalgebra.
pub fn spd_inverse_sqrt_into(a: &DMatrix<f64>, lower: f64, work: &mut InverseSqrtWork, out: &mut DMatrix<f64>) {
    if !chebyshev_inverse_sqrt_into(a, lower, work, out) {
        *out = eigen_inverse_sqrt(a);
    }
}

/// `A^{-1/2}` through the symmetric eigendecomposition `A = V diag(d) Vᵀ`.
pub fn eigen_inverse_sqrt(a: &DMatrix<f64>) -> DMatrix<f64> {
    let nalgebra::SymmetricEigen { eigenvalues: d, eigenvectors: v } = nalgebra::SymmetricEigen::new(a.clone());
    let mut vd = v.clone();
    for (j, mut col) in vd.column_iter_mut().enumerate() {
        col /= d[j].sqrt();
    }
    vd * v.transpose()
}

/// The polynomial branch of [`spd_inverse_sqrt`], or `None` where the
/// spectrum is too wide for it (or the bounds are not finite).
///
/// The eigenvalues lie in [λ₋, λ₊] with λ₋ = `lower` (the caller's
/// guarantee) and λ₊ = min(Gershgorin row bound, λ₋ + ‖A − λ₋I‖_F), both
/// rigorous. With X = (A − mI)/h, m = (λ₊ + λ₋)/2, h = (λ₊ − λ₋)/2, the
/// spectrum of X is in [−1, 1], and x^{-1/2} = Σₖ cₖ Tₖ(t) there with
/// coefficients that decay geometrically (the singularity at x = 0 is far
/// from the interval when λ₊/λ₋ is small). The series is cut before the
/// first coefficient below 1e-15 λ₋^{-1/2}, so the error on every
/// eigenvalue is of that order, and evaluated in X by Paterson–Stockmeyer:
/// powers X², …, Xˢ, then Horner in Xˢ over blocks of s terms.
pub fn chebyshev_inverse_sqrt(a: &DMatrix<f64>, lower: f64) -> Option<DMatrix<f64>> {
    let mut out = DMatrix::zeros(a.nrows(), a.ncols());
    chebyshev_inverse_sqrt_into(a, lower, &mut InverseSqrtWork::default(), &mut out).then_some(out)
}

/// The Chebyshev series of x^{-1/2} over rigorous bounds [λ₋, λ₊] of a
/// symmetric matrix's spectrum (see [`chebyshev_inverse_sqrt`]): A^{-1/2}
/// ≈ Σₖ cₖ Tₖ(X) with X = (A − mid I)/half, the error on every eigenvalue
/// of order 1e-15 λ₋^{-1/2}.
pub struct InverseSqrtSeries {
    mid: f64,
    half: f64,
    /// c₀ … c_degree (c₀ already halved: the sum starts with c₀ T₀).
    c: [f64; NODES],
    degree: usize,
}

const NODES: usize = 48;
const MAX_DEGREE: usize = 30;
/// Below this size the eigendecomposition is cheaper than the polynomial.
const MIN_POLYNOMIAL_SIZE: usize = 12;

widest_vectors! {
    /// The series of `a`'s inverse square root, given `lower` ≤ its smallest
    /// eigenvalue; `None` where the matrix is smaller than 12 × 12, the
    /// spectrum too wide for a series of degree 30, or an element not finite
    /// (the caller then takes the eigendecomposition).
    /// (Compiled for the widest vectors: the sums are element-wise, so
    /// the same bits on every path.)
    pub fn inverse_sqrt_series(a: &DMatrix<f64>, lower: f64) -> Option<InverseSqrtSeries> {
        let n = a.nrows();
        // Loops over the column-major slice: nalgebra's element iterators are
        // several times slower at these sizes (the same sums, in the same order).
        let elements = a.as_slice();
        // (NaN as `lower` fails the comparison too.)
        if n < MIN_POLYNOMIAL_SIZE || lower.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        // A is symmetric: column sums are row sums. A sum is finite when
        // every element in it is (or None: NaN, ∞, or beyond 1e308).
        let mut gershgorin = 0.0f64;
        for col in elements.chunks_exact(n) {
            let sum = col.iter().map(|x| x.abs()).sum::<f64>();
            if !sum.is_finite() {
                return None;
            }
            gershgorin = gershgorin.max(sum);
        }
        // The diagonal as a strided view (`diagonal()` would copy it).
        let diagonal = nalgebra::DMatrixView::from_slice_with_strides(elements, n, 1, n + 1, n);
        let shifted_frobenius =
            (a.norm_squared() - diagonal.norm_squared() + elements.iter().step_by(n + 1).map(|d| (d - lower) * (d - lower)).sum::<f64>()).sqrt();
        let upper = gershgorin.min(lower + shifted_frobenius).max(lower * (1.0 + 1e-12));
        let (mid, half) = (0.5 * (upper + lower), 0.5 * (upper - lower));

        // Chebyshev interpolation coefficients on NODES points (a discrete
        // cosine transform with a table of cos kθⱼ computed once).
        static COSINES: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
        let cosines = COSINES.get_or_init(|| {
            let theta = |j: usize| std::f64::consts::PI * (j as f64 + 0.5) / NODES as f64;
            (0..NODES).flat_map(|k| (0..NODES).map(move |j| (k as f64 * theta(j)).cos())).collect()
        });
        // The same table with k along rows (cos kθⱼ at j·NODES + k).
        static TRANSPOSED_COSINES: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
        let transposed_cosines = TRANSPOSED_COSINES.get_or_init(|| (0..NODES * NODES).map(|i| cosines[(i % NODES) * NODES + i / NODES]).collect());
        let f = |t: f64| 1.0 / (mid + half * t).sqrt();
        let mut values = [0.0; NODES];
        for (v, &t) in values.iter_mut().zip(&cosines[NODES..2 * NODES]) {
            *v = f(t) * 2.0 / NODES as f64;
        }
        // The coefficients of x^{-1/2} decrease in size geometrically: cut
        // before the first one below the tolerance (the dropped tail is of its
        // order; the rounding noise of the coefficients is about 1e-16). They
        // are computed one by one, up to that one (or until the degree is
        // past MAX_DEGREE): most of the 48 are never needed.
        // Eight at a time, node after node: eight independent sums (each in
        // the nodes' order, so the same numbers as one sum after another) that
        // the processor can run side by side.
        let tolerance = 1e-15 * f(-1.0);
        let mut c = [0.0; NODES];
        let mut first_small = NODES;
        const BATCH: usize = 8;
        for start in (0..MAX_DEGREE + 2).step_by(BATCH) {
            let mut sums = [0.0; BATCH];
            for (row, v) in transposed_cosines.chunks_exact(NODES).zip(&values) {
                for (sum, &cos) in sums.iter_mut().zip(&row[start..start + BATCH]) {
                    *sum += cos * v;
                }
            }
            sums[0] *= if start == 0 { 0.5 } else { 1.0 };
            c[start..start + BATCH].copy_from_slice(&sums);
            if let Some(b) = sums.iter().position(|ck| ck.abs() <= tolerance) {
                first_small = start + b;
                break;
            }
        }
        let degree = first_small.saturating_sub(1);
        (degree <= MAX_DEGREE).then_some(InverseSqrtSeries { mid, half, c, degree })
    }
}

/// The buffers of [`apply_inverse_sqrt`]: A and the block with their
/// columns padded to whole vectors, and the recurrence's two blocks.
#[derive(Default)]
pub struct ApplyWork {
    a: Vec<f64>,
    b: Vec<f64>,
    next: Vec<f64>,
    after: Vec<f64>,
}

/// Rows per vector register in [`clenshaw`]'s products (AVX-512's eight
/// doubles; two or four registers on narrower machines).
const LANES: usize = 8;

/// `b ← A^{-1/2} b` for a block `b` of vectors (`A`'s size × any number,
/// column-major), by Clenshaw's recurrence on `series` in the matrix
/// argument X = (A − mid I)/half:
///
///   bₖ = cₖ b + 2X bₖ₊₁ − bₖ₊₂  (k = degree … 1),   result = c₀ b + X b₁ − b₂.
///
/// Each step is one product of A with the block: degree · n² · columns
/// multiply-adds, against (degree-dependent, about 7) n × n × n products
/// for forming A^{-1/2} itself. Allocates nothing once `work` has held
/// the block's size.
pub fn apply_inverse_sqrt(a: &DMatrix<f64>, series: &InverseSqrtSeries, b: &mut [f64], work: &mut ApplyWork) {
    let n = a.nrows();
    assert_eq!(b.len() % n, 0, "a block of {n}-vectors");
    let columns = b.len() / n;
    // Columns padded with zeros to whole registers: the products then run
    // on whole registers only (the padding stays 0 through the recurrence).
    let padded = padded_len(n);
    let pad = |from: &[f64], to: &mut Vec<f64>, count: usize| {
        let to = buffer_slice(to, padded * count);
        to.fill(0.0);
        for (to, from) in to.chunks_exact_mut(padded).zip(from.chunks_exact(n)) {
            to[..n].copy_from_slice(from);
        }
    };
    pad(a.as_slice(), &mut work.a, n);
    pad(b, &mut work.b, columns);
    let ApplyWork { a: a_padded, b: b_padded, next, after } = work;
    let (a_padded, b_padded) = (&a_padded[..padded * n], &mut b_padded[..padded * columns]);
    let (next, after) = (buffer_slice(next, padded * columns), buffer_slice(after, padded * columns));
    clenshaw(a_padded, n, series, b_padded, next, after);
    for (to, from) in b.chunks_exact_mut(n).zip(b_padded.chunks_exact(padded)) {
        to.copy_from_slice(&from[..n]);
    }
}

widest_vectors! {
    /// [`apply_inverse_sqrt`]'s recurrence on padded columns: `a` is A's
    /// elements (n columns of `b`'s padded length), `next` and `after`
    /// buffers as long as `b`; the result is left in `b`.
    fn clenshaw(a: &[f64], n: usize, series: &InverseSqrtSeries, b: &mut [f64], next: &mut [f64], after: &mut [f64]) {
        let InverseSqrtSeries { mid, half, c, degree } = series;
        let padded = a.len() / n;
        next.fill(0.0);
        after.fill(0.0);
        // bₖ₊₁ and bₖ₊₂, swapped after each step.
        let (mut next, mut after) = (&mut *next, &mut *after);
        for &ck in c[1..=*degree].iter().rev() {
            clenshaw_step(a, padded, ck, 2.0 / half, *mid, next, after, b);
            std::mem::swap(&mut next, &mut after);
        }
        clenshaw_step(a, padded, c[0], 1.0 / half, *mid, next, after, b);
        b.copy_from_slice(after);
    }
}

/// `after` ← ck b − after + α(A − mid I) next. A plain function, not a
/// closure: it must be inlined into the functions compiled for wider
/// vectors to be compiled with them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn clenshaw_step(a: &[f64], padded: usize, ck: f64, alpha: f64, mid: f64, next: &[f64], after: &mut [f64], b: &[f64]) {
    for ((x, &u), &v) in after.iter_mut().zip(next).zip(b) {
        *x = ck * v - *x - alpha * mid * u;
    }
    add_products(a, padded, alpha, next, (padded, 1), after);
}

/// `out` += A (α U): A has `padded` rows and one column per row of U;
/// U's element (column c, row i) is `u[c·stride.0 + i·stride.1]`
/// (column-major U, or a padded Uᵀ), `out`'s columns are `padded` apart.
/// Each element is summed over A's columns in order; up to four of
/// `out`'s columns and four registers of rows at a time (up to 16
/// independent sums, each reusing the loads of A).
#[inline(always)]
fn add_products(a: &[f64], padded: usize, alpha: f64, u: &[f64], stride: (usize, usize), out: &mut [f64]) {
    let columns = out.len() / padded;
    let mut column = 0;
    while column < columns {
        let block = &mut out[column * padded..];
        let u = &u[column * stride.0..];
        match columns - column {
            1 => add_products_rows::<1>(a, padded, alpha, u, stride, block),
            2 => add_products_rows::<2>(a, padded, alpha, u, stride, block),
            3 => add_products_rows::<3>(a, padded, alpha, u, stride, block),
            _ => add_products_rows::<4>(a, padded, alpha, u, stride, block),
        }
        column += 4;
    }
}

/// [`add_products`] for C columns, in groups of up to four registers of rows.
#[inline(always)]
fn add_products_rows<const C: usize>(a: &[f64], padded: usize, alpha: f64, u: &[f64], stride: (usize, usize), out: &mut [f64]) {
    let mut row = 0;
    while row < padded {
        match (padded - row) / LANES {
            1 => add_products_block::<C, 1>(a, padded, row, alpha, u, stride, out),
            2 => add_products_block::<C, 2>(a, padded, row, alpha, u, stride, out),
            3 => add_products_block::<C, 3>(a, padded, row, alpha, u, stride, out),
            _ => add_products_block::<C, 4>(a, padded, row, alpha, u, stride, out),
        }
        row += LANES * 4;
    }
}

/// [`add_products`] for C columns and rows `row .. row + R·LANES`, held
/// in C·R registers.
#[inline(always)]
fn add_products_block<const C: usize, const R: usize>(a: &[f64], padded: usize, row: usize, alpha: f64, u: &[f64], stride: (usize, usize), out: &mut [f64]) {
    let mut acc = [[[0.0; LANES]; R]; C];
    for (c, acc) in acc.iter_mut().enumerate() {
        for (q, acc) in acc.iter_mut().enumerate() {
            let at = c * padded + row + q * LANES;
            acc.copy_from_slice(&out[at..at + LANES]);
        }
    }
    for (i, a_col) in a.chunks_exact(padded).enumerate() {
        let a_rows = &a_col[row..row + R * LANES];
        for (c, acc) in acc.iter_mut().enumerate() {
            let s = alpha * u[c * stride.0 + i * stride.1];
            for (acc, a_rows) in acc.iter_mut().zip(a_rows.chunks_exact(LANES)) {
                for (x, &ai) in acc.iter_mut().zip(a_rows) {
                    *x = ai.mul_add(s, *x);
                }
            }
        }
    }
    for (c, acc) in acc.iter().enumerate() {
        for (q, acc) in acc.iter().enumerate() {
            let at = c * padded + row + q * LANES;
            out[at..at + LANES].copy_from_slice(acc);
        }
    }
}

/// `n` rounded up to whole vector registers ([`LANES`]): the row length
/// of the padded Sᵀ that [`gram_into`] and the ETKF's transform take.
pub fn padded_len(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// Sᵀ with its rows padded with zeros to [`padded_len`]`(N)`, for S
/// `p × N`: observation l's N values at `l·padded ..`.
pub fn padded_transpose(s: &DMatrix<f64>) -> Vec<f64> {
    padded_transpose_with(s, |_, x| x)
}

/// [`padded_transpose`] of `f(l, S[l, k])`, element by element: a
/// transformed S (the LETKF's whitening) without an intermediate copy.
pub fn padded_transpose_with(s: &DMatrix<f64>, f: impl Fn(usize, f64) -> f64 + Sync) -> Vec<f64> {
    padded_transpose_on(s, f, &mut Pool::default(), 1)
}

/// [`padded_transpose_with`] with the rows of `s` split over up to
/// `threads` threads of `pool` ([`threads_for`]).
pub fn padded_transpose_on(s: &DMatrix<f64>, f: impl Fn(usize, f64) -> f64 + Sync, pool: &mut Pool, threads: usize) -> Vec<f64> {
    let (p, n) = s.shape();
    let padded = padded_len(n);
    let mut st = vec![0.0; p * padded];
    pool.split_mut(threads_for(p * n, threads), &mut st, padded, &|first, part| {
        let rows = part.len() / padded;
        for (k, column) in s.as_slice().chunks_exact(p.max(1)).enumerate() {
            for (l, &x) in column[first..first + rows].iter().enumerate() {
                part[l * padded + k] = f(first + l, x);
            }
        }
    });
    st
}

/// The buffer of [`gram_into`]: SᵀS with its columns padded.
#[derive(Default)]
pub struct GramWork {
    g: Vec<f64>,
}

/// `out` ← I + SᵀS/(N−1) for S `p × N`, given as its padded transpose
/// `st` ([`padded_transpose`]): the ETKF's Gram matrix, column by column
/// as Sᵀ times S's columns with [`add_products`]' kernel (each element
/// summed over the p observations in order). No allocation once `work`
/// and `out` have held the size: the GEMM library would allocate a
/// packing buffer on every call, once per LETKF domain.
pub fn gram_into(st: &[f64], p: usize, n: usize, work: &mut GramWork, out: &mut DMatrix<f64>) {
    let padded = padded_len(n);
    assert_eq!(st.len(), p * padded, "Sᵀ is p × padded N");
    if out.shape() != (n, n) {
        *out = DMatrix::zeros(n, n);
    }
    if p == 0 {
        // No observations: G = 0.
        out.fill_with_identity();
        return;
    }
    let g = buffer_slice(&mut work.g, padded * n);
    g.fill(0.0);
    gram_columns(st, padded, g, out.as_mut_slice());
}

widest_vectors! {
    /// SᵀS into `g` (padded columns, zero on entry) from the padded Sᵀ
    /// `st`, then I + SᵀS/(N−1) into `out` (n × n, column-major).
    fn gram_columns(st: &[f64], padded: usize, g: &mut [f64], out: &mut [f64]) {
        add_products(st, padded, 1.0, st, (1, padded), g);
        let n = g.len() / padded;
        // Times 1/(N−1), not divided: N² divisions were a third of the
        // Gram's time (the two differ by at most an ulp).
        let inv_n1 = 1.0 / (n - 1) as f64;
        for (j, (to, from)) in out.chunks_exact_mut(n).zip(g.chunks_exact(padded)).enumerate() {
            for (x, &y) in to.iter_mut().zip(from) {
                *x = y * inv_n1;
            }
            to[j] += 1.0;
        }
    }
}

/// [`chebyshev_inverse_sqrt`] into `out`, with buffers from `work`;
/// `false` (and `out` unspecified) where there is no series.
fn chebyshev_inverse_sqrt_into(a: &DMatrix<f64>, lower: f64, work: &mut InverseSqrtWork, out: &mut DMatrix<f64>) -> bool {
    let Some(InverseSqrtSeries { mid, half, c, degree }) = inverse_sqrt_series(a, lower) else {
        return false;
    };
    let (n, elements) = (a.nrows(), a.as_slice());

    // Monomial coefficients in t of Σ cₖ Tₖ(t), with T₀ = 1, T₁ = t,
    // Tₖ₊₁ = 2t Tₖ − Tₖ₋₁.
    let terms = degree + 1;
    let mut coef_buffer = [0.0; MAX_DEGREE + 1];
    let coef = &mut coef_buffer[..terms];
    let (mut t_prev, mut t_cur) = ([0.0; MAX_DEGREE + 1], [0.0; MAX_DEGREE + 1]);
    t_prev[0] = 1.0;
    if degree >= 1 {
        t_cur[1] = 1.0;
    }
    for (k, ck) in c.iter().enumerate().take(degree + 1) {
        let tk = if k == 0 { &t_prev } else { &t_cur };
        for (a, t) in coef.iter_mut().zip(&tk[..terms]) {
            *a += ck * t;
        }
        if k >= 1 && k < degree {
            let mut next = [0.0; MAX_DEGREE + 1];
            for (x, p) in next[..terms].iter_mut().zip(&t_prev[..terms]) {
                *x = -p;
            }
            for i in 0..degree {
                next[i + 1] += 2.0 * t_cur[i];
            }
            (t_prev, t_cur) = (t_cur, next);
        }
    }

    // Paterson–Stockmeyer: the block size s minimising (s − 1) + (blocks − 1) products.
    let s = (1..=terms).min_by_key(|&s| (s - 1) + terms.div_ceil(s) - 1).unwrap_or(1);
    let square = |m: &mut DMatrix<f64>| {
        if m.shape() != (n, n) {
            *m = DMatrix::zeros(n, n);
        }
    };
    while work.powers.len() <= s {
        work.powers.push(DMatrix::zeros(n, n));
    }
    let powers = &mut work.powers[..=s];
    powers.iter_mut().for_each(square);
    // powers[0] would be I, which is never formed (see below).
    // X = (A − mI)/h: the shift on the diagonal, then one division of
    // every element (a loop the compiler vectorises; the same numbers).
    powers[1].as_mut_slice().copy_from_slice(elements);
    for i in 0..n {
        powers[1][(i, i)] -= mid;
    }
    powers[1].as_mut_slice().iter_mut().for_each(|x| *x /= half);
    for k in 2..=s {
        let (done, rest) = powers.split_at_mut(k);
        product_into(&done[k - 1], &done[1], &mut rest[0]);
    }
    // result ← result · Xˢ + Σⱼ a_{is+j} Xʲ, from the last block down.
    let blocks = terms.div_ceil(s);
    square(out);
    square(&mut work.product);
    out.as_mut_slice().fill(0.0);
    for i in (0..blocks).rev() {
        if i + 1 < blocks {
            product_into(out, &powers[s], &mut work.product);
            std::mem::swap(out, &mut work.product);
        }
        // X⁰ = I: its term touches only the diagonal (adding 0 elsewhere
        // would change nothing).
        if let Some(&ai0) = coef.get(i * s) {
            for r in 0..n {
                out[(r, r)] += ai0;
            }
        }
        for (j, power) in powers.iter().enumerate().take(s).skip(1) {
            if let Some(&aij) = coef.get(i * s + j) {
                for (r, p) in out.as_mut_slice().iter_mut().zip(power.as_slice()) {
                    *r += aij * p;
                }
            }
        }
    }
    true
}

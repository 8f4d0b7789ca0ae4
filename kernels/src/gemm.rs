//! The one GEMM entry point of the host kernels.

/// Who multiplies: chosen per call site, because the right choice depends on the sizes a caller
/// sees, and each choice fixes the summation order (so the numbers a caller has published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only, through `matrixmultiply` (the agents' `[256, 32]` products, which
    /// run inside an env-stepping loop; splitting them would cost more than it saves).
    One,
    /// The `gemm` crate (what burn flex calls), on its rayon pool once m·n·k reaches burn flex's
    /// threshold for a multi-threaded product, single-threaded below it (the IV networks).
    Pool,
}

/// burn flex's threshold for a multi-threaded GEMM (m·n·k), kept so both paths split work alike.
const PARALLEL_OPS: usize = 192 * 192 * 192;

/// The element types the host kernels compute in: f64 (every published number) and f32 (an
/// opt-in for steps whose result is itself approximate, such as FuncID's adjoint steps).
pub trait Real:
    num_traits::Float
    + std::iter::Sum
    + for<'a> std::iter::Sum<&'a Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// `x` rounded to this type.
    fn of(x: f64) -> Self;
    /// `self` as f64 (exact).
    fn widen(self) -> f64;
    /// This type's single-threaded product from `matrixmultiply` (`dgemm` or `sgemm`).
    const MM: Mm<Self>;
}

/// `matrixmultiply`'s strided product c = alpha·a·b + beta·c, arguments (m, k, n, alpha, a, rsa,
/// csa, b, rsb, csb, beta, c, rsc, csc). Unsafe: the strides must keep every access inside the
/// three buffers, and `c` must not alias `a` or `b`.
pub type Mm<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

macro_rules! real {
    ($t:ty, $mm:path) => {
        impl Real for $t {
            fn of(x: f64) -> Self {
                x as $t
            }
            fn widen(self) -> f64 {
                self as f64
            }
            const MM: Mm<$t> = $mm;
        }
    };
}
real!(f64, matrixmultiply::dgemm);
real!(f32, matrixmultiply::sgemm);

/// c `[m, n]` = beta·c + a·b, all row-major in one [`Real`] type; `ta`/`tb` read a (stored `[k, m]`) or b (stored
/// `[n, k]`) transposed. `beta` is 0 (overwrite) or 1 (accumulate).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    ta: bool,
    b: &[T],
    tb: bool,
    c: &mut [T],
    beta: T,
    threads: Threads,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    match threads {
        Threads::One => {
            let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
            let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
            // SAFETY: the assert above bounds every index matrixmultiply reads or writes through
            // these strides; `c` does not alias `a` or `b` (distinct borrows).
            unsafe {
                (T::MM)(
                    m,
                    k,
                    n,
                    T::one(),
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    beta,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        Threads::Pool => {
            let (a_cs, a_rs) = if ta { (m as isize, 1) } else { (1, k as isize) };
            let (b_cs, b_rs) = if tb { (k as isize, 1) } else { (1, n as isize) };
            let par = if m * n * k >= PARALLEL_OPS {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: as above; gemm's dst = alpha·dst + beta·a·b, with dst read only when
            // `read_dst` (so an uninitialised-looking c is never read when beta = 0).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    beta != T::zero(),
                    a.as_ptr(),
                    a_cs,
                    a_rs,
                    b.as_ptr(),
                    b_cs,
                    b_rs,
                    beta,
                    T::one(),
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths give the naive triple loop's product for every transpose combination, in
    /// overwrite and accumulate mode, below and above the threading threshold.
    #[test]
    fn both_paths_equal_the_naive_product() {
        let mut s = 1u64;
        let mut draw = |len: usize| -> Vec<f64> {
            (0..len)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect()
        };
        for (m, k, n) in [(3, 4, 5), (7, 1, 2), (200, 190, 200)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (a, b, c0) = (draw(m * k), draw(k * n), draw(m * n));
                let at = |r: usize, j: usize| if ta { a[j * m + r] } else { a[r * k + j] };
                let bt = |j: usize, col: usize| if tb { b[col * k + j] } else { b[j * n + col] };
                for beta in [0.0, 1.0] {
                    let want: Vec<f64> = (0..m * n)
                        .map(|i| {
                            let (r, col) = (i / n, i % n);
                            beta * c0[i] + (0..k).map(|j| at(r, j) * bt(j, col)).sum::<f64>()
                        })
                        .collect();
                    for threads in [Threads::One, Threads::Pool] {
                        let mut c = c0.clone();
                        gemm(m, k, n, &a, ta, &b, tb, &mut c, beta, threads);
                        let err = c
                            .iter()
                            .zip(&want)
                            .fold(0.0_f64, |e, (x, y)| e.max((x - y).abs()));
                        assert!(
                            err < 1e-11,
                            "{m}x{k}x{n} {ta} {tb} {beta} {threads:?}: {err}"
                        );
                    }
                }
            }
        }
    }
}

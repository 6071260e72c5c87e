//! Dramatiq 2.x's exponential backoff with jitter.

use rand::Rng;

/// Dramatiq's hard cap on any backoff: 7 days in ms.
pub const MAX_BACKOFF_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Dramatiq 2.x `compute_backoff(attempts, factor, max_backoff)`:
/// `b = factor * 2^min(attempts, 32)`, then `b = int(b * U[1,2))`, and when `b > max`,
/// `b = int(max * U[0.5,1))`. The first retry (attempts 0, factor 15 s) lands in [15 s, 30 s).
///
/// ```
/// let b = dq_core::compute_backoff(0, 15_000, dq_core::MAX_BACKOFF_MS);
/// assert!((15_000..30_000).contains(&b));
/// ```
pub fn compute_backoff(attempts: u32, factor: u64, max_backoff: u64) -> u64 {
    compute_backoff_with(attempts, factor, max_backoff, &mut rand::thread_rng())
}

/// [`compute_backoff`] with a caller-chosen random source (for tests).
pub fn compute_backoff_with<R: Rng + ?Sized>(
    attempts: u32,
    factor: u64,
    max_backoff: u64,
    rng: &mut R,
) -> u64 {
    let exp = 2f64.powi(attempts.min(32) as i32);
    let base = factor as f64 * exp;
    let b = (base * rng.gen_range(1.0..2.0)) as u64;
    if b > max_backoff {
        (max_backoff as f64 * rng.gen_range(0.5..1.0)) as u64
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_dramatiq() {
        for _ in 0..1000 {
            let b = compute_backoff(0, 15_000, MAX_BACKOFF_MS);
            assert!((15_000..30_000).contains(&b), "{b}");
            let b = compute_backoff(3, 100, MAX_BACKOFF_MS);
            assert!((800..1600).contains(&b), "{b}");
            let b = compute_backoff(40, 15_000, MAX_BACKOFF_MS);
            assert!((MAX_BACKOFF_MS / 2..MAX_BACKOFF_MS).contains(&b), "{b}");
            let b = compute_backoff(5, 1000, 10_000);
            assert!((5_000..10_000).contains(&b), "{b}");
        }
    }
}

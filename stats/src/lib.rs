//! Aggregate metrics over seeds with the conventions of `rliable` (Agarwal et al., "Deep
//! Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021), so that a
//! comparison over a handful of seeds reports its uncertainty:
//!
//! - [`iqm`]: the interquartile mean, scipy's `trim_mean(x, 0.25)` over every (run, task) score
//!   (⌊n/4⌋ scores cut at each end), robust to an outlier seed yet using half the runs;
//! - [`interval`]: a point estimate and its 95 % **stratified bootstrap** percentile interval —
//!   runs are resampled with replacement within each task;
//! - [`probability_of_improvement`]: P(X > Y) = the Mann–Whitney U statistic over all pairs of
//!   runs (ties count ½), averaged over tasks, with an interval from resampling X's and Y's runs
//!   independently;
//! - [`performance_profile`]: the fraction of scores above each threshold τ, with intervals.
//!
//! Scores are `[task][run]`: every task has its own runs (a study on one environment has one
//! task). The bootstrap is seeded, so reruns are identical. `tests/rliable_fixture.rs` checks the
//! figures against the Python package on a committed fixture.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::Serialize;

/// Scores of one agent: `scores[task][run]`.
pub type Scores = [Vec<f64>];

/// A point estimate and its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub point: f64,
    pub lo: f64,
    pub hi: f64,
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(1);
        write!(
            f,
            "{:.p$} [{:.p$}, {:.p$}]",
            self.point,
            self.lo,
            self.hi,
            p = p
        )
    }
}

/// Bootstrap settings: rliable's defaults are 50,000 resamples and a 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub reps: usize,
    pub size: f64,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            reps: 50_000,
            size: 0.95,
            seed: 0,
        }
    }
}

fn flat(scores: &Scores) -> Vec<f64> {
    scores.iter().flatten().copied().collect()
}

/// Each task's mean over its runs.
fn task_means(scores: &Scores) -> Vec<f64> {
    scores
        .iter()
        .map(|t| t.iter().sum::<f64>() / t.len() as f64)
        .collect()
}

/// The mean over tasks of each task's mean score (rliable's `aggregate_mean`; with one task, the
/// mean over runs).
pub fn mean(scores: &Scores) -> f64 {
    let m = task_means(scores);
    m.iter().sum::<f64>() / m.len() as f64
}

/// The median over tasks of each task's mean score (rliable's `aggregate_median`; with one task
/// it equals the mean — use [`median_of_runs`] for the median seed).
pub fn median(scores: &Scores) -> f64 {
    middle(task_means(scores))
}

/// The median of every (run, task) score.
pub fn median_of_runs(scores: &Scores) -> f64 {
    middle(flat(scores))
}

fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Interquartile mean: the mean of the scores left after cutting ⌊n/4⌋ from each end (scipy's
/// `trim_mean(·, 0.25)` on all (run, task) scores, as rliable's `aggregate_iqm`).
pub fn iqm(scores: &Scores) -> f64 {
    let mut v = flat(scores);
    v.sort_by(f64::total_cmp);
    let cut = v.len() / 4;
    let kept = &v[cut..v.len() - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// Mean and (population) standard deviation of every score.
pub fn mean_std(scores: &Scores) -> (f64, f64) {
    let v = flat(scores);
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt())
}

/// numpy's default percentile (linear interpolation between order statistics) of sorted `v`.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 >= sorted.len() {
        sorted[sorted.len() - 1]
    } else {
        sorted[i] + (sorted[i + 1] - sorted[i]) * frac
    }
}

/// One stratified resample: within each task, as many runs as it has, drawn with replacement.
fn resample(scores: &Scores, rng: &mut StdRng, out: &mut Vec<Vec<f64>>) {
    out.resize(scores.len(), Vec::new());
    for (task, o) in scores.iter().zip(out.iter_mut()) {
        o.clear();
        o.extend((0..task.len()).map(|_| task[rng.random_range(0..task.len())]));
    }
}

/// The percentile interval of `stats` around `point`.
fn percentile_interval(point: f64, mut stats: Vec<f64>, size: f64) -> Interval {
    stats.sort_by(f64::total_cmp);
    let tail = 100.0 * (1.0 - size) / 2.0;
    Interval {
        point,
        lo: percentile(&stats, tail),
        hi: percentile(&stats, 100.0 - tail),
    }
}

fn check(scores: &Scores) {
    assert!(
        !scores.is_empty() && scores.iter().all(|t| !t.is_empty()),
        "every task needs at least one run"
    );
}

/// `metric` on the scores and its stratified-bootstrap percentile interval.
pub fn interval(scores: &Scores, metric: impl Fn(&Scores) -> f64, b: Bootstrap) -> Interval {
    check(scores);
    let mut rng = StdRng::seed_from_u64(b.seed);
    let mut buf = Vec::new();
    let stats = (0..b.reps)
        .map(|_| {
            resample(scores, &mut rng, &mut buf);
            metric(&buf)
        })
        .collect();
    percentile_interval(metric(scores), stats, b.size)
}

/// P(X > Y): for each task the fraction of (x, y) run pairs with x > y, ties counting ½
/// (Mann–Whitney U / (n·m)), averaged over tasks (which `x` and `y` must share).
pub fn prob_improvement_point(x: &Scores, y: &Scores) -> f64 {
    assert_eq!(x.len(), y.len(), "both agents need the same tasks");
    let per_task = x.iter().zip(y).map(|(xt, yt)| {
        let wins: f64 = xt
            .iter()
            .flat_map(|a| {
                yt.iter().map(move |b| {
                    if a > b {
                        1.0
                    } else if a == b {
                        0.5
                    } else {
                        0.0
                    }
                })
            })
            .sum();
        wins / (xt.len() * yt.len()) as f64
    });
    per_task.sum::<f64>() / x.len() as f64
}

/// P(X > Y) with the interval of resampling X's and Y's runs independently (stratified by task).
pub fn probability_of_improvement(x: &Scores, y: &Scores, b: Bootstrap) -> Interval {
    check(x);
    check(y);
    let mut rng = StdRng::seed_from_u64(b.seed);
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    let stats = (0..b.reps)
        .map(|_| {
            resample(x, &mut rng, &mut bx);
            resample(y, &mut rng, &mut by);
            prob_improvement_point(&bx, &by)
        })
        .collect();
    percentile_interval(prob_improvement_point(x, y), stats, b.size)
}

/// Fraction of all (run, task) scores strictly above `tau`.
pub fn fraction_above(scores: &Scores, tau: f64) -> f64 {
    let v = flat(scores);
    v.iter().filter(|&&s| s > tau).count() as f64 / v.len() as f64
}

/// The score distribution's performance profile: for each τ, the fraction of scores above it,
/// with a stratified-bootstrap interval (one resample serves every τ).
pub fn performance_profile(scores: &Scores, taus: &[f64], b: Bootstrap) -> Vec<Interval> {
    check(scores);
    let mut rng = StdRng::seed_from_u64(b.seed);
    let mut buf = Vec::new();
    let mut stats = vec![Vec::with_capacity(b.reps); taus.len()];
    for _ in 0..b.reps {
        resample(scores, &mut rng, &mut buf);
        for (s, &t) in stats.iter_mut().zip(taus) {
            s.push(fraction_above(&buf, t));
        }
    }
    stats
        .into_iter()
        .zip(taus)
        .map(|(s, &t)| percentile_interval(fraction_above(scores, t), s, b.size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iqm_cuts_a_quarter_from_each_end() {
        // n = 8: cut 2 each side → mean(3, 4, 5, 6).
        let s = [vec![8.0, 1.0, 3.0, 100.0, 4.0, 5.0, 6.0, -50.0]];
        assert_eq!(iqm(&s), 4.5);
        // n = 5: cut 1 each side (⌊5/4⌋).
        assert_eq!(iqm(&[vec![10.0, 0.0, 2.0, 4.0, 6.0]]), 4.0);
        // n = 3: nothing cut.
        assert_eq!(iqm(&[vec![1.0, 2.0, 6.0]]), 3.0);
        // Two tasks pool their scores.
        assert_eq!(iqm(&[vec![1.0, 2.0], vec![3.0, 40.0]]), 2.5);
    }

    #[test]
    fn mean_and_median_are_over_task_means() {
        let s = [vec![1.0, 3.0], vec![10.0, 20.0, 30.0], vec![0.0]];
        assert_eq!(mean(&s), (2.0 + 20.0 + 0.0) / 3.0);
        assert_eq!(median(&s), 2.0);
        assert_eq!(median_of_runs(&s), 6.5);
    }

    #[test]
    fn prob_improvement_counts_pairs_and_halves_ties() {
        let x = [vec![1.0, 3.0]];
        let y = [vec![0.0, 3.0, 5.0]];
        // pairs: (1,0) win, (1,3) loss, (1,5) loss, (3,0) win, (3,3) tie, (3,5) loss.
        assert_eq!(prob_improvement_point(&x, &y), 2.5 / 6.0);
        assert_eq!(
            prob_improvement_point(&x, &y) + prob_improvement_point(&y, &x),
            1.0
        );
    }

    #[test]
    fn percentile_is_numpys_linear_rule() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 8.0);
        // position 0.5·3 = 1.5 → 2 + 0.5·2
        assert_eq!(percentile(&v, 50.0), 3.0);
    }

    /// Constant scores have a degenerate interval; the interval brackets the point otherwise and
    /// narrows as runs are added (the bootstrap's √n law, loosely).
    #[test]
    fn bootstrap_intervals_behave() {
        let b = Bootstrap {
            reps: 4000,
            ..Bootstrap::default()
        };
        let c = interval(&[vec![2.0; 6]], iqm, b);
        assert_eq!((c.lo, c.point, c.hi), (2.0, 2.0, 2.0));
        let few: Vec<f64> = (0..8).map(|i| ((i * 37) % 11) as f64).collect();
        let many: Vec<f64> = (0..128).map(|i| ((i * 37) % 11) as f64).collect();
        let (a, z) = (interval(&[few], mean, b), interval(&[many], mean, b));
        assert!(a.lo <= a.point && a.point <= a.hi);
        assert!((z.hi - z.lo) < 0.5 * (a.hi - a.lo), "{a:?} {z:?}");
        // Same seed, same interval.
        assert_eq!(
            interval(&[vec![1.0, 5.0, 2.0]], mean, b),
            interval(&[vec![1.0, 5.0, 2.0]], mean, b)
        );
    }
}

//! Replay buffer: ring storage of (obs, action, reward, next_obs, ending), uniform sampling
//! without replacement, optional prioritized replay (sum tree, α, β annealing), HDF5 save/load.

use std::path::Path;

use rand::{RngExt, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::h5io::{self, H5Result};
use crate::targets::Ending;

/// One transition as the environment produced it. `ending` keeps termination and truncation apart.
#[derive(Clone, Copy, Debug)]
pub struct Transition<'a> {
    pub obs: &'a [f32],
    pub action: &'a [f32],
    pub reward: f64,
    pub next_obs: &'a [f32],
    pub ending: Ending,
}

/// A sampled batch, row-major, in f64 (the precision of the networks' inputs).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub indices: Vec<usize>,
    pub obs: Vec<f64>,
    pub action: Vec<f64>,
    pub reward: Vec<f64>,
    pub next_obs: Vec<f64>,
    /// Bootstrap masks m (0 after termination, 1 otherwise).
    pub mask: Vec<f64>,
    /// Importance weights (all 1 for uniform sampling).
    pub weight: Vec<f64>,
    /// Per dimension, the lowest and highest next state ever stored in the buffer (empty when
    /// the batch was not sampled from one): the range `model.clip_next_state` clips to.
    pub next_lo: Vec<f64>,
    pub next_hi: Vec<f64>,
    /// The lowest and highest reward ever stored in the buffer (`None` when the batch was not
    /// sampled from one): the range `model.clip_reward` clips to.
    pub reward_range: Option<(f64, f64)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Prioritized replay options (Schaul et al. 2016): P(i) ∝ p_i^α, weights (N·P(i))^−β / max,
/// β annealed linearly from `beta0` to 1 over the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerConfig {
    pub alpha: f64,
    pub beta0: f64,
    #[serde(default = "default_per_eps")]
    pub eps: f64,
}

fn default_per_eps() -> f64 {
    1e-6
}

/// A sum tree over `capacity` leaves: O(log n) update and prefix-sum search.
#[derive(Clone, Debug)]
pub struct SumTree {
    size: usize,
    tree: Vec<f64>,
}

impl SumTree {
    pub fn new(capacity: usize) -> Self {
        let size = capacity.next_power_of_two();
        Self {
            size,
            tree: vec![0.0; 2 * size],
        }
    }

    pub fn total(&self) -> f64 {
        self.tree[1]
    }

    pub fn get(&self, i: usize) -> f64 {
        self.tree[self.size + i]
    }

    pub fn set(&mut self, i: usize, value: f64) {
        let mut k = self.size + i;
        self.tree[k] = value;
        while k > 1 {
            k /= 2;
            self.tree[k] = self.tree[2 * k] + self.tree[2 * k + 1];
        }
    }

    /// The leaf whose cumulative range contains `mass` ∈ [0, total).
    pub fn find(&self, mut mass: f64) -> usize {
        let mut k = 1;
        while k < self.size {
            let left = self.tree[2 * k];
            if mass < left {
                k *= 2;
            } else {
                mass -= left;
                k = 2 * k + 1;
            }
        }
        k - self.size
    }

    pub fn leaves(&self) -> &[f64] {
        &self.tree[self.size..]
    }
}

#[derive(Clone, Debug)]
struct Prioritized {
    cfg: PerConfig,
    tree: SumTree,
    max_priority: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "replay buffer holds {len} transitions, cannot sample a batch of {batch} without replacement"
    )]
    TooFew { len: usize, batch: usize },
    #[error("replay buffer file: {0}")]
    Hdf5(#[from] hdf5::Error),
    #[error("replay buffer file {0}: {1}")]
    Format(String, String),
}

/// Widens the per-dimension range [lo, hi] to cover `x`.
fn widen(lo: &mut [f32], hi: &mut [f32], x: &[f32]) {
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(x) {
        *l = l.min(v);
        *h = h.max(v);
    }
}

/// Widens the reward range (lo, hi) to cover `r`.
fn widen_reward(range: &mut (f64, f64), r: f64) {
    *range = (range.0.min(r), range.1.max(r));
}

/// Ring storage: when full, the oldest transition is overwritten.
#[derive(Clone, Debug)]
pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    act_dim: usize,
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    action: Vec<f32>,
    reward: Vec<f64>,
    ending: Vec<u8>,
    len: usize,
    next: usize,
    per: Option<Prioritized>,
    /// Running min and max of every next state pushed (kept through evictions, saved).
    next_lo: Vec<f32>,
    next_hi: Vec<f32>,
    /// Running min and max of every reward pushed (kept through evictions, saved).
    reward_range: (f64, f64),
}

impl ReplayBuffer {
    pub fn new(capacity: usize, obs_dim: usize, act_dim: usize, per: Option<PerConfig>) -> Self {
        assert!(capacity > 0, "replay capacity must be positive");
        Self {
            capacity,
            obs_dim,
            act_dim,
            obs: vec![0.0; capacity * obs_dim],
            next_obs: vec![0.0; capacity * obs_dim],
            action: vec![0.0; capacity * act_dim],
            reward: vec![0.0; capacity],
            ending: vec![0; capacity],
            len: 0,
            next: 0,
            next_lo: vec![f32::INFINITY; obs_dim],
            next_hi: vec![f32::NEG_INFINITY; obs_dim],
            reward_range: (f64::INFINITY, f64::NEG_INFINITY),
            per: per.map(|cfg| Prioritized {
                cfg,
                tree: SumTree::new(capacity),
                max_priority: 1.0,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn is_prioritized(&self) -> bool {
        self.per.is_some()
    }

    pub fn push(&mut self, t: Transition<'_>) {
        assert_eq!(t.obs.len(), self.obs_dim, "observation width");
        assert_eq!(t.next_obs.len(), self.obs_dim, "next observation width");
        assert_eq!(t.action.len(), self.act_dim, "action width");
        let i = self.next;
        let (o, a) = (self.obs_dim, self.act_dim);
        self.obs[i * o..(i + 1) * o].copy_from_slice(t.obs);
        self.next_obs[i * o..(i + 1) * o].copy_from_slice(t.next_obs);
        widen(&mut self.next_lo, &mut self.next_hi, t.next_obs);
        self.action[i * a..(i + 1) * a].copy_from_slice(t.action);
        self.reward[i] = t.reward;
        widen_reward(&mut self.reward_range, t.reward);
        self.ending[i] = t.ending as u8;
        if let Some(p) = &mut self.per {
            // New transitions get the largest priority seen, so each is replayed at least once soon.
            let v = p.max_priority.powf(p.cfg.alpha);
            p.tree.set(i, v);
        }
        self.next = (self.next + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// The lowest and highest next state ever pushed, per dimension (±∞ while empty).
    pub fn next_range(&self) -> (&[f32], &[f32]) {
        (&self.next_lo, &self.next_hi)
    }

    /// The lowest and highest reward ever pushed (+∞, −∞ while empty).
    pub fn reward_range(&self) -> (f64, f64) {
        self.reward_range
    }

    /// The transition stored in slot `i`.
    pub fn get(&self, i: usize) -> (Vec<f32>, Vec<f32>, f64, Vec<f32>, Ending) {
        let (o, a) = (self.obs_dim, self.act_dim);
        (
            self.obs[i * o..(i + 1) * o].to_vec(),
            self.action[i * a..(i + 1) * a].to_vec(),
            self.reward[i],
            self.next_obs[i * o..(i + 1) * o].to_vec(),
            Ending::from_u8(self.ending[i]).expect("valid ending"),
        )
    }

    /// A batch of `batch` distinct slots (uniform), or stratified prioritized draws with
    /// importance weights at annealing fraction `progress` ∈ [0, 1].
    pub fn sample(
        &self,
        batch: usize,
        progress: f64,
        rng: &mut StdRng,
    ) -> Result<Batch, ReplayError> {
        if self.len < batch {
            return Err(ReplayError::TooFew {
                len: self.len,
                batch,
            });
        }
        let (indices, weight) = match &self.per {
            None => (
                rand::seq::index::sample(rng, self.len, batch).into_vec(),
                vec![1.0; batch],
            ),
            Some(p) => {
                let total = p.tree.total();
                let seg = total / batch as f64;
                let beta = p.cfg.beta0 + (1.0 - p.cfg.beta0) * progress.clamp(0.0, 1.0);
                let idx: Vec<usize> = (0..batch)
                    .map(|k| {
                        let m = seg * (k as f64 + rng.random::<f64>());
                        p.tree.find(m.min(total * (1.0 - 1e-12))).min(self.len - 1)
                    })
                    .collect();
                let w: Vec<f64> = idx
                    .iter()
                    .map(|&i| (self.len as f64 * p.tree.get(i) / total).powf(-beta))
                    .collect();
                let wmax = w.iter().copied().fold(0.0, f64::max);
                (idx, w.into_iter().map(|x| x / wmax).collect())
            }
        };
        Ok(self.gather(indices, weight))
    }

    fn gather(&self, indices: Vec<usize>, weight: Vec<f64>) -> Batch {
        let (o, a) = (self.obs_dim, self.act_dim);
        let mut b = Batch {
            weight,
            next_lo: self.next_lo.iter().map(|&x| x as f64).collect(),
            next_hi: self.next_hi.iter().map(|&x| x as f64).collect(),
            reward_range: Some(self.reward_range),
            ..Batch::default()
        };
        for &i in &indices {
            b.obs
                .extend(self.obs[i * o..(i + 1) * o].iter().map(|&x| x as f64));
            b.next_obs
                .extend(self.next_obs[i * o..(i + 1) * o].iter().map(|&x| x as f64));
            b.action
                .extend(self.action[i * a..(i + 1) * a].iter().map(|&x| x as f64));
            b.reward.push(self.reward[i]);
            b.mask.push(
                Ending::from_u8(self.ending[i])
                    .expect("valid ending")
                    .bootstrap_mask(),
            );
        }
        b.indices = indices;
        b
    }

    /// Sets the priorities of sampled slots from their TD errors (no-op without PER).
    pub fn update_priorities(&mut self, indices: &[usize], td_errors: &[f64]) {
        if let Some(p) = &mut self.per {
            for (&i, &e) in indices.iter().zip(td_errors) {
                let pr = e.abs() + p.cfg.eps;
                if pr.is_finite() {
                    p.max_priority = p.max_priority.max(pr);
                    p.tree.set(i, pr.powf(p.cfg.alpha));
                }
            }
        }
    }

    /// Writes the buffer into group `g` (datasets named after the fields).
    pub fn save_group(&self, g: &hdf5::Group) -> H5Result<()> {
        h5io::put(
            g,
            "shape",
            &[
                self.capacity as u64,
                self.obs_dim as u64,
                self.act_dim as u64,
                self.len as u64,
                self.next as u64,
            ],
        )?;
        let n = self.len;
        // Only the filled part is written; a full ring is stored as is (slot order kept).
        h5io::put(g, "obs", &self.obs[..n * self.obs_dim])?;
        h5io::put(g, "next_obs", &self.next_obs[..n * self.obs_dim])?;
        h5io::put(g, "action", &self.action[..n * self.act_dim])?;
        h5io::put(g, "reward", &self.reward[..n])?;
        h5io::put(g, "ending", &self.ending[..n])?;
        h5io::put(
            g,
            "next_range",
            &[&self.next_lo[..], &self.next_hi[..]].concat(),
        )?;
        h5io::put(
            g,
            "reward_range",
            &[self.reward_range.0, self.reward_range.1],
        )?;
        if let Some(p) = &self.per {
            h5io::put(g, "priority", &p.tree.leaves()[..n])?;
            h5io::put(
                g,
                "per",
                &[p.cfg.alpha, p.cfg.beta0, p.cfg.eps, p.max_priority],
            )?;
        }
        Ok(())
    }

    pub fn load_group(g: &hdf5::Group, source: &str) -> Result<Self, ReplayError> {
        let shape = h5io::get::<u64>(g, "shape")?;
        let bad = |why: &str| ReplayError::Format(source.to_string(), why.to_string());
        let [cap, od, ad, len, next] = shape[..] else {
            return Err(bad("shape must hold 5 values"));
        };
        let per = if g.link_exists("per") {
            let v = h5io::get::<f64>(g, "per")?;
            Some(PerConfig {
                alpha: v[0],
                beta0: v[1],
                eps: v[2],
            })
        } else {
            None
        };
        let (cap, od, ad, len, next) = (
            cap as usize,
            od as usize,
            ad as usize,
            len as usize,
            next as usize,
        );
        if len > cap || next >= cap.max(1) {
            return Err(bad("len/next out of range"));
        }
        let mut b = ReplayBuffer::new(cap, od, ad, per);
        let fill = |dst: &mut [f32], src: Vec<f32>| -> Result<(), ReplayError> {
            if src.len() != dst.len() {
                return Err(bad("dataset length does not match the shape"));
            }
            dst.copy_from_slice(&src);
            Ok(())
        };
        fill(&mut b.obs[..len * od], h5io::get(g, "obs")?)?;
        fill(&mut b.next_obs[..len * od], h5io::get(g, "next_obs")?)?;
        fill(&mut b.action[..len * ad], h5io::get(g, "action")?)?;
        let r = h5io::get::<f64>(g, "reward")?;
        let e = h5io::get::<u8>(g, "ending")?;
        if r.len() != len || e.len() != len || e.iter().any(|&x| Ending::from_u8(x).is_none()) {
            return Err(bad("reward/ending datasets invalid"));
        }
        b.reward[..len].copy_from_slice(&r);
        b.ending[..len].copy_from_slice(&e);
        b.len = len;
        b.next = next;
        if g.link_exists("next_range") {
            let r = h5io::get::<f32>(g, "next_range")?;
            if r.len() != 2 * od {
                return Err(bad(
                    "next_range must hold 2 values per observation dimension",
                ));
            }
            b.next_lo.copy_from_slice(&r[..od]);
            b.next_hi.copy_from_slice(&r[od..]);
        } else {
            // Written before the range was kept: the stored transitions' range (exact unless the
            // ring had already evicted some).
            for row in b.next_obs[..len * od].chunks_exact(od.max(1)) {
                widen(&mut b.next_lo, &mut b.next_hi, row);
            }
        }
        if g.link_exists("reward_range") {
            let r = h5io::get::<f64>(g, "reward_range")?;
            let [lo, hi] = r[..] else {
                return Err(bad("reward_range must hold 2 values"));
            };
            b.reward_range = (lo, hi);
        } else {
            // Written before the range was kept: the stored rewards' range.
            for &r in &b.reward[..len] {
                widen_reward(&mut b.reward_range, r);
            }
        }
        if let Some(p) = &mut b.per {
            let pr = h5io::get::<f64>(g, "priority")?;
            for (i, v) in pr.into_iter().enumerate() {
                p.tree.set(i, v);
            }
            p.max_priority = h5io::get::<f64>(g, "per")?[3];
        }
        Ok(b)
    }

    /// Saves to an HDF5 file of its own.
    pub fn save(&self, path: &Path) -> Result<(), ReplayError> {
        let f = hdf5::File::create(path)?;
        self.save_group(&f)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, ReplayError> {
        let f = hdf5::File::open(path)?;
        Self::load_group(&f, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn push_n(b: &mut ReplayBuffer, from: usize, n: usize) {
        for k in from..from + n {
            let o = [k as f32, 0.5];
            let o2 = [k as f32 + 1.0, 0.5];
            b.push(Transition {
                obs: &o,
                action: &[(k % 2) as f32],
                reward: k as f64,
                next_obs: &o2,
                ending: if k % 3 == 0 {
                    Ending::Terminated
                } else {
                    Ending::Truncated
                },
            });
        }
    }

    #[test]
    fn batches_have_no_duplicates_and_consistent_rows() {
        let mut b = ReplayBuffer::new(100, 2, 1, None);
        push_n(&mut b, 0, 64);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let s = b.sample(64, 0.0, &mut rng).unwrap();
            let mut seen = s.indices.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 64, "duplicate slot in a batch");
            for (j, &i) in s.indices.iter().enumerate() {
                assert_eq!(s.obs[2 * j], i as f64);
                assert_eq!(s.reward[j], i as f64);
                assert_eq!(s.next_obs[2 * j], i as f64 + 1.0);
                assert_eq!(s.mask[j], if i % 3 == 0 { 0.0 } else { 1.0 });
            }
        }
        assert!(matches!(
            b.sample(65, 0.0, &mut rng),
            Err(ReplayError::TooFew { len: 64, batch: 65 })
        ));
    }

    #[test]
    fn ring_wraps_around_and_keeps_the_newest() {
        let mut b = ReplayBuffer::new(5, 2, 1, None);
        push_n(&mut b, 0, 7); // transitions 0..7; 0 and 1 overwritten by 5 and 6
        assert_eq!(b.len(), 5);
        assert_eq!(b.get(0).2, 5.0);
        assert_eq!(b.get(1).2, 6.0);
        assert_eq!(b.get(2).2, 2.0);
        let mut rng = StdRng::seed_from_u64(0);
        let s = b.sample(5, 0.0, &mut rng).unwrap();
        let mut r = s.reward.clone();
        r.sort_by(f64::total_cmp);
        assert_eq!(r, vec![2.0, 3.0, 4.0, 5.0, 6.0]);
        // The next-state range covers every push, the evicted ones (next states 1 and 2) too.
        assert_eq!(b.next_range(), (&[1.0, 0.5][..], &[7.0, 0.5][..]));
        assert_eq!((s.next_lo, s.next_hi), (vec![1.0, 0.5], vec![7.0, 0.5]));
        // Rewards 0..7 were pushed; the evicted 0 and 1 still bound the reward range.
        assert_eq!(b.reward_range(), (0.0, 6.0));
        assert_eq!(s.reward_range, Some((0.0, 6.0)));
    }

    #[test]
    fn hdf5_round_trip() {
        let dir = std::env::temp_dir().join(format!("funcrl-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for per in [
            None,
            Some(PerConfig {
                alpha: 0.6,
                beta0: 0.4,
                eps: 1e-6,
            }),
        ] {
            let mut b = ReplayBuffer::new(8, 2, 1, per);
            push_n(&mut b, 0, 11);
            b.update_priorities(&[1, 2], &[3.0, 0.5]);
            let path = dir.join("buf.h5");
            b.save(&path).unwrap();
            let c = ReplayBuffer::load(&path).unwrap();
            assert_eq!((c.len(), c.next, c.capacity()), (b.len(), b.next, 8));
            // Saved, not recomputed: the ring has evicted next states 1–3.
            assert_eq!(c.next_range(), b.next_range());
            assert_eq!(c.next_range().0[0], 1.0);
            assert_eq!(c.reward_range(), b.reward_range());
            assert_eq!(c.reward_range(), (0.0, 10.0));
            for i in 0..8 {
                assert_eq!(c.get(i), b.get(i));
            }
            let (mut r1, mut r2) = (StdRng::seed_from_u64(3), StdRng::seed_from_u64(3));
            let (x, y) = (
                b.sample(4, 0.5, &mut r1).unwrap(),
                c.sample(4, 0.5, &mut r2).unwrap(),
            );
            assert_eq!((x.indices, x.weight), (y.indices, y.weight));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sum_tree_sums_and_sampling_frequencies() {
        let mut t = SumTree::new(5);
        for (i, p) in [1.0, 2.0, 3.0, 4.0, 0.0].iter().enumerate() {
            t.set(i, *p);
        }
        assert_eq!(t.total(), 10.0);
        assert_eq!(t.find(0.5), 0);
        assert_eq!(t.find(1.0), 1);
        assert_eq!(t.find(5.9), 2);
        assert_eq!(t.find(9.99), 3);
        t.set(3, 0.0);
        assert_eq!(t.total(), 6.0);
        // Frequencies of prioritized draws follow p^α / Σ p^α (α = 1 here).
        let mut b = ReplayBuffer::new(
            4,
            2,
            1,
            Some(PerConfig {
                alpha: 1.0,
                beta0: 0.5,
                eps: 0.0,
            }),
        );
        push_n(&mut b, 0, 4);
        b.update_priorities(&[0, 1, 2, 3], &[1.0, 2.0, 3.0, 4.0]);
        let mut rng = StdRng::seed_from_u64(5);
        let mut count = [0usize; 4];
        let n = 20_000;
        for _ in 0..n / 4 {
            let s = b.sample(4, 0.0, &mut rng).unwrap();
            for i in s.indices {
                count[i] += 1;
            }
        }
        for (i, c) in count.iter().enumerate() {
            let f = *c as f64 / n as f64;
            assert!((f - (i + 1) as f64 / 10.0).abs() < 0.01, "slot {i}: {f}");
        }
        // Importance weights: (N P(i))^-β normalised by the batch max (its rarest slot gets 1).
        let s = b.sample(4, 0.0, &mut rng).unwrap();
        let rarest = *s.indices.iter().min().unwrap();
        for (j, &i) in s.indices.iter().enumerate() {
            let want = ((i + 1) as f64 / (rarest + 1) as f64).powf(-0.5);
            assert!((s.weight[j] - want).abs() < 1e-12, "{:?}", s.weight);
        }
    }
}

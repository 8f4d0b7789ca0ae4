//! NumPy-compatible seeding, so that `reset(Some(seed))` starts exactly where Python gymnasium's
//! `env.reset(seed=seed)` starts.
//!
//! gymnasium seeds each environment with `np.random.Generator(np.random.PCG64(SeedSequence(seed)))`
//! and draws initial states with `Generator.uniform`. This module reproduces the three pieces:
//! NumPy's `SeedSequence` hashing of the seed into 128-bit PCG64 state and increment, the PCG64
//! generator itself (`rand_pcg::Pcg64`, the same XSL-RR 128/64 LCG), and `uniform` as
//! `low + (high − low) · (u64 >> 11) · 2⁻⁵³`.

use rand::Rng;
use rand_pcg::Pcg64;

/// The generator behind `reset`: NumPy's default bit generator.
pub type EnvRng = Pcg64;

const MASK32: u64 = 0xFFFF_FFFF;
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// `SeedSequence(seed).generate_state(4, np.uint64)`.
pub fn seed_sequence_state(seed: u64) -> [u64; 4] {
    // The entropy as little-endian 32-bit words (0 is one word, as in NumPy).
    let entropy: Vec<u32> = if seed >> 32 == 0 {
        vec![seed as u32]
    } else {
        vec![(seed & MASK32) as u32, (seed >> 32) as u32]
    };
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| -> u32 {
        let mut v = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash_const);
        v ^ (v >> XSHIFT)
    };
    let mix = |x: u32, y: u32| -> u32 {
        let r = MIX_MULT_L
            .wrapping_mul(x)
            .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
        r ^ (r >> XSHIFT)
    };
    let mut pool = [0u32; POOL_SIZE];
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    // Seeds fit in two words, so no entropy is left over for a third mixing pass.
    let mut hash_const = INIT_B;
    let words: Vec<u32> = (0..2 * POOL_SIZE)
        .map(|i| {
            let mut v = pool[i % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash_const);
            v ^ (v >> XSHIFT)
        })
        .collect();
    std::array::from_fn(|i| u64::from(words[2 * i]) | (u64::from(words[2 * i + 1]) << 32))
}

/// gymnasium's `np_random(seed)`: PCG64 seeded through `SeedSequence`.
pub fn np_random(seed: u64) -> EnvRng {
    let s = seed_sequence_state(seed);
    let state = (u128::from(s[0]) << 64) | u128::from(s[1]);
    let stream = (u128::from(s[2]) << 64) | u128::from(s[3]);
    Pcg64::new(state, stream)
}

/// An unseeded environment's generator: seeded from the OS, as gymnasium does.
pub fn np_random_from_entropy() -> EnvRng {
    use rand::RngExt;
    np_random(rand::rng().random())
}

/// NumPy's `Generator.random()`: 53 random bits as a double in [0, 1).
#[inline]
pub fn next_double<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// NumPy's `Generator.uniform(low, high)`.
#[inline]
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, low: f64, high: f64) -> f64 {
    low + (high - low) * next_double(rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by NumPy 2.4:
    // np.random.SeedSequence(42).generate_state(4, np.uint64),
    // np.random.Generator(np.random.PCG64(42)).bit_generator.random_raw(2).
    #[test]
    fn matches_numpy_seed_sequence_and_pcg64() {
        assert_eq!(
            seed_sequence_state(42),
            [
                11465652750463011511,
                15382171918060459190,
                9018504550953525431,
                3703499796004394495
            ]
        );
        let mut rng = np_random(42);
        assert_eq!(
            [rng.next_u64(), rng.next_u64()],
            [14276969152011380360, 8095878257575067585]
        );
        let cases: [(u64, [u64; 4], [u64; 2]); 3] = [
            (
                0,
                [
                    15793235383387715774,
                    12390638538380655177,
                    2361836109651742017,
                    3188717715514472916,
                ],
                [11749869230777074271, 4976686463289251617],
            ),
            (
                7,
                [
                    16920295385781661272,
                    610735763742393210,
                    7078124019849193311,
                    12917519645081627820,
                ],
                [11530976094092348043, 16550673365885938325],
            ),
            (
                (1 << 40) + 3,
                [
                    6059815089232835828,
                    7748354339778573394,
                    7469072271128384145,
                    3873464148347455775,
                ],
                [14271435802380633900, 18370326226487632705],
            ),
        ];
        for (seed, state, raw) in cases {
            assert_eq!(seed_sequence_state(seed), state, "seed {seed}");
            let mut rng = np_random(seed);
            assert_eq!([rng.next_u64(), rng.next_u64()], raw, "seed {seed}");
        }
    }

    // np.random.Generator(np.random.PCG64(7)).uniform(-0.05, 0.05, size=3)
    #[test]
    fn uniform_matches_numpy() {
        let mut rng = np_random(7);
        let got: Vec<f64> = (0..3).map(|_| uniform(&mut rng, -0.05, 0.05)).collect();
        assert_eq!(
            got,
            [
                0.012509546660466692,
                0.039721380096957554,
                0.02756856902451936
            ]
        );
    }
}

//! The breaker of one model: state and cooldown end in one atomic word, so every
//! transition is a single compare-and-swap and no reader ever sees a state with the
//! cooldown of another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// State of a model's circuit breaker (serialized as `closed`, `open`, `half_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// The model tripped and is cooling down; once the cooldown is over the next request
    /// becomes the probe.
    Open,
    /// The cooldown is over and one probe request is in flight; its outcome closes the
    /// breaker or opens it again.
    HalfOpen,
}

const STATE_BITS: u32 = 2;
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

/// A decoded breaker word: state and cooldown end (nanos since the tracker's epoch; 0
/// when the model never cooled down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) state: BreakerState,
    pub(crate) until: u64,
}

impl Word {
    pub(crate) fn new(state: BreakerState, until: u64) -> Self {
        Word { state, until }
    }

    fn encode(self) -> u64 {
        let s = match self.state {
            BreakerState::Closed => CLOSED,
            BreakerState::Open => OPEN,
            BreakerState::HalfOpen => HALF_OPEN,
        };
        (self.until.min(u64::MAX >> STATE_BITS) << STATE_BITS) | s
    }

    fn decode(w: u64) -> Self {
        let state = match w & ((1 << STATE_BITS) - 1) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        };
        Word {
            state,
            until: w >> STATE_BITS,
        }
    }
}

pub(crate) struct Breaker {
    word: AtomicU64,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        Breaker {
            word: AtomicU64::new(0),
        }
    }

    pub(crate) fn load(&self) -> Word {
        Word::decode(self.word.load(Ordering::Acquire))
    }

    /// Moves from `current` to `new`; on failure returns the word found instead.
    pub(crate) fn transition(&self, current: Word, new: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(
                current.encode(),
                new.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Word::decode)
    }
}

/// The cooldown after the `trips`th trip in a row: `base x trips`, capped at `max`, then
/// shortened by `jitter x unit` (`unit` in `[0, 1)`).
pub(crate) fn cooldown(
    base: Duration,
    max: Duration,
    trips: u32,
    jitter: f64,
    unit: f64,
) -> Duration {
    let nominal = base.saturating_mul(trips.max(1)).min(max);
    if jitter <= 0.0 {
        return nominal;
    }
    nominal.mul_f64((1.0 - jitter * unit).clamp(0.0, 1.0))
}

/// A small, lock-free pseudo-random source for jitter (splitmix64 over an atomic
/// counter). Not for anything that needs to be unpredictable.
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    /// A source starting from `seed`, or from a random seed when `None`.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            // RandomState is seeded randomly per process: a seed without a dependency.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    /// A number in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips() {
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            for until in [0, 1, 123_456_789_000, u64::MAX >> STATE_BITS] {
                let w = Word::new(state, until);
                assert_eq!(Word::decode(w.encode()), w);
            }
        }
    }

    #[test]
    fn transition_is_compare_and_swap() {
        let b = Breaker::new();
        let closed = b.load();
        assert_eq!(closed, Word::new(BreakerState::Closed, 0));
        let open = Word::new(BreakerState::Open, 42);
        assert_eq!(b.transition(closed, open), Ok(()));
        assert_eq!(b.transition(closed, closed), Err(open));
        assert_eq!(b.load(), open);
    }

    #[test]
    fn cooldown_grows_per_trip_and_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(cooldown(s(15), s(300), 1, 0.0, 0.5), s(15));
        assert_eq!(cooldown(s(15), s(300), 2, 0.0, 0.5), s(30));
        assert_eq!(cooldown(s(15), s(300), 20, 0.0, 0.5), s(300));
        assert_eq!(cooldown(s(15), s(300), 1000, 0.0, 0.5), s(300));
        // Jitter only shortens, by at most the fraction.
        assert_eq!(
            cooldown(s(10), s(300), 1, 0.1, 0.5),
            Duration::from_millis(9500)
        );
        assert_eq!(cooldown(s(300), s(300), 3, 0.1, 0.0), s(300));
    }

    #[test]
    fn jitter_is_in_unit_range() {
        let j = Jitter::new(None);
        for _ in 0..10_000 {
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn seeded_jitter_is_splitmix64() {
        // Reference outputs of splitmix64 seeded with 1234567 (Vigna's test vector), as
        // 53-bit fractions.
        let j = Jitter::new(Some(1_234_567));
        for expected in [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
        ] {
            assert_eq!(j.unit(), (expected >> 11) as f64 / (1u64 << 53) as f64);
        }
        // Same seed, same sequence; another seed, another one.
        let (a, b, c) = (
            Jitter::new(Some(7)),
            Jitter::new(Some(7)),
            Jitter::new(Some(8)),
        );
        let draw = |j: &Jitter| (0..8).map(|_| j.unit()).collect::<Vec<_>>();
        let first = draw(&a);
        assert_eq!(first, draw(&b));
        assert_ne!(first, draw(&c));
    }
}

use std::time::Duration;

/// Randomness added to a backoff delay, so clients that failed together do not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// "Full jitter": a uniform delay between zero and the exponential ceiling.
    Full,
    /// The exponential ceiling plus a uniform extra between zero and this much
    /// (the Databricks drivers add up to 100 ms).
    Up(Duration),
    /// Exactly the exponential ceiling.
    None,
}

/// Exponential backoff: `base * 2^retry`, capped at `max`, then jittered.
///
/// Sans-IO: [`delay_with`](Self::delay_with) takes the random draw as an argument.
///
/// ```
/// use std::time::Duration;
/// use kasal_classify::{Backoff, Jitter};
///
/// let backoff = Backoff::default().jitter(Jitter::None);
/// assert_eq!(backoff.delay(0), Duration::from_millis(100));
/// assert_eq!(backoff.delay(2), Duration::from_millis(400));
/// assert_eq!(backoff.delay(9), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// 100 ms base, 1 s cap, full jitter.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// The delay before the first retry, doubled for each further one (default 100 ms).
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The cap on the exponential ceiling, before jitter (default 1 s).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The jitter (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The exponential ceiling before retry number `retry` (0 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(31);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `retry` (0 for the first retry), jittered with `fastrand`.
    pub fn delay(&self, retry: u32) -> Duration {
        let unit = match self.jitter {
            Jitter::None => 0.0,
            _ => fastrand::f64(),
        };
        self.delay_with(retry, unit)
    }

    /// The delay before retry `retry` for a random draw `unit` in `[0, 1)` (clamped to `[0, 1]`;
    /// NaN counts as 1). Never panics, whatever the durations.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let ceiling = self.ceiling(retry);
        match self.jitter {
            Jitter::Full => fraction(ceiling, unit),
            Jitter::Up(extra) => ceiling.saturating_add(fraction(extra, unit)),
            Jitter::None => ceiling,
        }
    }
}

/// `span * unit` for `unit` in `[0, 1]`, never above `span`. `Duration::mul_f64` would panic on
/// NaN, or when f64 rounding lifts a span near `Duration::MAX` past it; both give `span` here.
fn fraction(span: Duration, unit: f64) -> Duration {
    Duration::try_from_secs_f64(span.as_secs_f64() * unit).map_or(span, |part| part.min(span))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_ceiling_is_capped() {
        let b = Backoff::default();
        let ceilings: Vec<_> = (0..6).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        let huge = Backoff::default()
            .base(Duration::from_secs(u64::MAX / 2))
            .max(Duration::MAX);
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay_with(1, 0.0), Duration::ZERO);
        assert_eq!(b.delay_with(1, 0.5), 100 * MS);
        let samples: Vec<_> = (0..2000).map(|_| b.delay(2)).collect();
        assert!(samples.iter().all(|d| *d <= 400 * MS));
        // Spread over the range, not stuck at one end.
        assert!(samples.iter().any(|d| *d < 100 * MS));
        assert!(samples.iter().any(|d| *d > 300 * MS));
    }

    #[test]
    fn additive_jitter_adds_up_to_the_extra() {
        let b = Backoff::default().jitter(Jitter::Up(100 * MS));
        assert_eq!(b.delay_with(0, 0.0), 100 * MS);
        assert_eq!(b.delay_with(0, 1.0), 200 * MS);
        for retry in 0..5 {
            let ceiling = b.ceiling(retry);
            for _ in 0..500 {
                let d = b.delay(retry);
                assert!(d >= ceiling && d <= ceiling + 100 * MS, "{d:?} for {retry}");
            }
        }
    }

    #[test]
    fn any_draw_and_any_duration_give_a_delay_without_panicking() {
        let huge = Backoff::default().base(Duration::MAX).max(Duration::MAX);
        assert_eq!(huge.delay_with(0, 1.0), Duration::MAX);
        assert_eq!(huge.delay_with(0, f64::NAN), Duration::MAX);
        let extra = Backoff::default().jitter(Jitter::Up(Duration::MAX));
        assert_eq!(extra.delay_with(0, 1.0), Duration::MAX);
        assert_eq!(extra.delay_with(0, f64::NAN), Duration::MAX);
        assert_eq!(Backoff::default().delay_with(1, -3.0), Duration::ZERO);
    }

    #[test]
    fn no_jitter_is_exact() {
        let b = Backoff::default().jitter(Jitter::None);
        for retry in 0..5 {
            assert_eq!(b.delay(retry), b.ceiling(retry));
        }
    }
}

//! A rate with a burst: governor's direct limiter on the monotonic clock, as the node's publish
//! rates ([`crate::publish`]) and each connection's event and listing rates ([`crate::socket`])
//! use it.

use std::num::NonZeroU32;

use governor::clock::{Clock, MonotonicClock};
use governor::{Quota, RateLimiter};

pub type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    MonotonicClock,
    governor::middleware::NoOpMiddleware<<MonotonicClock as Clock>::Instant>,
>;

/// A rate of `rate` a second with `burst` at once (the configuration refuses zeros; a zero here
/// counts as one).
pub fn limiter(rate: u32, burst: u32) -> Limiter {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), MonotonicClock)
}

/// When a refused call may try again.
pub fn wait_time(
    not_until: &governor::NotUntil<<MonotonicClock as Clock>::Instant>,
) -> std::time::Duration {
    not_until.wait_time_from(MonotonicClock.now())
}

/// A burst of `burst` calls, one more each `period` (for rates slower than one a second).
pub fn limiter_every(period: std::time::Duration, burst: u32) -> Limiter {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::direct_with_clock(quota, MonotonicClock)
}

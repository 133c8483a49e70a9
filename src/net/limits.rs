//! Per-address limit on failed sessions (R10: "also limit failed sessions per peer
//! address"). The per-device lockout stops guessing one device's string; this stops one
//! address from guessing across many devices or enumerating device names.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once; past it, expired windows are dropped first and, if
/// that is not enough, the table starts over (memory stays bounded under a flood of
/// spoofed-looking sources; real attackers come from few addresses).
const MAX_TRACKED: usize = 65_536;

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        FailureLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `addr` may open a session now.
    pub fn allows(&self, addr: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&addr) {
            Some((start, count)) => {
                now.duration_since(*start) >= self.window || *count < self.max_failures
            }
            None => true,
        }
    }

    /// Counts a failed session from `addr`.
    pub fn record_failure(&self, addr: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&addr) {
            failures.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_the_limit_until_its_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allows(a, t0));
            limiter.record_failure(a, t0);
        }
        assert!(!limiter.allows(a, t0 + Duration::from_secs(59)));
        assert!(limiter.allows(b, t0), "other addresses are not affected");
        assert!(limiter.allows(a, t0 + Duration::from_secs(60)));
        limiter.record_failure(a, t0 + Duration::from_secs(61));
        assert!(
            limiter.allows(a, t0 + Duration::from_secs(61)),
            "a new window starts at 1"
        );
    }
}

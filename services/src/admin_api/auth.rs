//! The token rule of the admin API (SPEC.md §7.6, fixed per §11.1.4): a weak token refuses every
//! request with 403 and the reason; the `X-API-Token` header is compared in constant time; a
//! client that keeps failing is throttled (429 with `Retry-After`), per IP address, with
//! exponential back-off and a bounded table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bus_schema::Secret;
use tokio::time::Instant;

/// Failures an address may make before it is throttled.
pub const FREE_FAILURES: u32 = 5;
/// Lock-out after the first throttled failure; doubles with each further failure.
pub const BASE_LOCKOUT: Duration = Duration::from_secs(1);
/// Longest lock-out.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(300);
/// Failures older than this are forgotten.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(900);
/// Most addresses remembered; past it, the stalest entry is forgotten.
pub const MAX_CLIENTS: usize = 4096;

/// The token the API checks, as loaded from the root's files.
#[derive(Debug, Clone, Default)]
pub struct TokenRule {
    /// SHA-256 of the token (the clear token is not kept past loading).
    digest: [u8; 32],
    /// Why the token is too weak; `Some` refuses every request with 403.
    pub weakness: Option<String>,
}

impl TokenRule {
    pub fn new(token: &Secret) -> TokenRule {
        TokenRule {
            digest: bus_schema::secret::digest(token.expose().as_bytes()),
            weakness: bus_schema::sections::token_weakness(token.expose()),
        }
    }

    /// Whether `presented` is the token ([`bus_schema::secret::digest_matches`]: constant
    /// time whatever the length and content of the presented value).
    pub fn matches(&self, presented: &[u8]) -> bool {
        // A weak (or empty) token never matches: the caller refuses before asking anyway.
        bus_schema::secret::digest_matches(&self.digest, presented) && self.weakness.is_none()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed attempts per client address.
#[derive(Debug, Default)]
pub struct Backoff {
    clients: HashMap<IpAddr, Entry>,
}

impl Backoff {
    /// `Some(wait)` while `ip` is locked out.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.clients.get(&ip)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Record a failed attempt; returns the lock-out it starts, if any.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if !self.clients.contains_key(&ip) && self.clients.len() >= MAX_CLIENTS {
            self.evict(now);
        }
        let entry = self.clients.entry(ip).or_insert(Entry {
            failures: 0,
            last: now,
            locked_until: None,
        });
        if now.duration_since(entry.last) > FAILURE_WINDOW {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        if entry.failures <= FREE_FAILURES {
            return None;
        }
        let exp = (entry.failures - FREE_FAILURES - 1).min(16);
        let lockout = BASE_LOCKOUT.saturating_mul(1 << exp).min(MAX_LOCKOUT);
        entry.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// A good token clears the address's record.
    pub fn succeed(&mut self, ip: IpAddr) {
        self.clients.remove(&ip);
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Forget expired records; if none expired, the stalest one.
    fn evict(&mut self, now: Instant) {
        self.clients.retain(|_, e| {
            now.duration_since(e.last) <= FAILURE_WINDOW || e.locked_until.is_some_and(|u| u > now)
        });
        if self.clients.len() >= MAX_CLIENTS {
            if let Some(stalest) = self
                .clients
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(ip, _)| *ip)
            {
                self.clients.remove(&stalest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!";

    #[test]
    fn only_the_exact_strong_token_matches() {
        let rule = TokenRule::new(&Secret::new(STRONG));
        assert!(rule.weakness.is_none());
        assert!(rule.matches(STRONG.as_bytes()));
        assert!(!rule.matches(b""));
        assert!(!rule.matches(&STRONG.as_bytes()[1..]));
        assert!(!rule.matches(format!("{STRONG}x").as_bytes()));
    }

    #[test]
    fn a_weak_token_never_matches_and_says_why() {
        let rule = TokenRule::new(&Secret::new("short"));
        assert!(!rule.matches(b"short"));
        assert!(rule.weakness.unwrap().contains("shorter than 32"));
        let empty = TokenRule::new(&Secret::new(""));
        assert!(!empty.matches(b""));
        assert_eq!(empty.weakness.as_deref(), Some("no token is set"));
    }

    #[test]
    fn failures_past_the_free_ones_lock_out_exponentially_up_to_the_cap() {
        let mut b = Backoff::default();
        let ip: IpAddr = [198, 18, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(b.fail(ip, t0), None);
        }
        assert_eq!(b.locked(ip, t0), None);
        assert_eq!(b.fail(ip, t0), Some(Duration::from_secs(1)));
        assert_eq!(b.fail(ip, t0), Some(Duration::from_secs(2)));
        assert_eq!(b.fail(ip, t0), Some(Duration::from_secs(4)));
        assert_eq!(b.locked(ip, t0), Some(Duration::from_secs(4)));
        assert_eq!(b.locked(ip, t0 + Duration::from_secs(5)), None);
        for _ in 0..40 {
            b.fail(ip, t0);
        }
        assert_eq!(b.locked(ip, t0), Some(MAX_LOCKOUT));
        // Another address is not affected; a success clears the record.
        assert_eq!(b.locked([198, 18, 0, 2].into(), t0), None);
        b.succeed(ip);
        assert_eq!(b.locked(ip, t0), None);
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut b = Backoff::default();
        let ip: IpAddr = [198, 18, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            b.fail(ip, t0);
        }
        let later = t0 + FAILURE_WINDOW + Duration::from_secs(1);
        assert_eq!(b.fail(ip, later), None);
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 100) {
            let ip: IpAddr = std::net::Ipv4Addr::from(0xC612_0000 + i).into();
            b.fail(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(b.len() <= MAX_CLIENTS);
    }
}

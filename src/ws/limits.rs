//! The clocks and counters a session uses to cut off a client: a token bucket on the messages
//! it sends, a liveness state machine for WebSocket Ping/Pong, and an idle clock for a
//! connection that holds no subscription. Pure state over [`Instant`]s, no I/O, so the session
//! decides what to do with their answers.

use std::time::Duration;

use tokio::time::Instant;

/// How many messages a client may send: `per_second` on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A token bucket: starts full (`burst` tokens) and refills at `per_second`.
#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, now: Instant) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            last: now,
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token; `false` when the bucket is empty (the client is over its rate).
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let burst = f64::from(self.limit.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(self.limit.per_second)).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Ping/pong settings: after `interval` without a frame from the client a Ping goes out, and
/// the client must send a frame (its Pong, or anything else) within `timeout` of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Whether the client has been heard from recently enough.
#[derive(Debug)]
pub enum Liveness {
    /// No keepalive configured.
    Off,
    /// Heard from the client; a Ping goes out at `ping_at` unless it speaks first.
    Quiet { ping_at: Instant },
    /// A Ping went out; the client must send a frame by `deadline`.
    Pinged { deadline: Instant },
}

/// What a liveness deadline asks of the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a Ping now.
    Ping,
    /// The client did not answer the Ping in time.
    TimedOut,
}

impl Liveness {
    pub fn new(keepalive: Option<Keepalive>, now: Instant) -> Liveness {
        match keepalive {
            None => Liveness::Off,
            Some(k) => Liveness::Quiet {
                ping_at: now + k.interval,
            },
        }
    }

    /// A frame arrived from the client: it is alive.
    pub fn heard(&mut self, keepalive: Option<Keepalive>, now: Instant) {
        if let Some(k) = keepalive {
            *self = Liveness::Quiet {
                ping_at: now + k.interval,
            };
        }
    }

    /// When [`Liveness::due`] next has something to say.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Liveness::Off => None,
            Liveness::Quiet { ping_at } => Some(*ping_at),
            Liveness::Pinged { deadline } => Some(*deadline),
        }
    }

    /// Advances the state to `now`.
    pub fn due(&mut self, keepalive: Option<Keepalive>, now: Instant) -> Due {
        match (&*self, keepalive) {
            (Liveness::Quiet { ping_at }, Some(k)) if now >= *ping_at => {
                *self = Liveness::Pinged {
                    deadline: now + k.timeout,
                };
                Due::Ping
            }
            (Liveness::Pinged { deadline }, _) if now >= *deadline => Due::TimedOut,
            _ => Due::Nothing,
        }
    }
}

/// How long a connection has held no subscription.
#[derive(Debug)]
pub struct IdleClock {
    timeout: Option<Duration>,
    /// When the connection last became empty; `None` while it holds a subscription.
    empty_since: Option<Instant>,
}

impl IdleClock {
    /// A connection starts with no subscription.
    pub fn new(timeout: Option<Duration>, now: Instant) -> IdleClock {
        IdleClock {
            timeout,
            empty_since: Some(now),
        }
    }

    /// Records whether the connection holds a subscription now.
    pub fn update(&mut self, subscribed: bool, now: Instant) {
        match (subscribed, self.empty_since) {
            (true, _) => self.empty_since = None,
            (false, None) => self.empty_since = Some(now),
            (false, Some(_)) => {}
        }
    }

    /// When the connection is cut off if it stays without a subscription.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.empty_since? + self.timeout?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                per_second: 2,
                burst: 3,
            },
            t0,
        );
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // Half a second refills one token, not more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // A long pause refills to the burst, no further.
        let t2 = t1 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(t2)));
        assert!(!b.take(t2));
    }

    #[test]
    fn liveness_pings_then_times_out_unless_heard() {
        let k = Some(Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        let mut l = Liveness::new(k, t0);
        assert_eq!(l.due(k, t0 + Duration::from_secs(9)), Due::Nothing);
        assert_eq!(l.due(k, t0 + Duration::from_secs(10)), Due::Ping);
        assert_eq!(l.deadline(), Some(t0 + Duration::from_secs(15)));
        assert_eq!(l.due(k, t0 + Duration::from_secs(14)), Due::Nothing);
        // An answer puts it back to quiet.
        l.heard(k, t0 + Duration::from_secs(14));
        assert_eq!(l.due(k, t0 + Duration::from_secs(20)), Due::Nothing);
        assert_eq!(l.due(k, t0 + Duration::from_secs(24)), Due::Ping);
        assert_eq!(l.due(k, t0 + Duration::from_secs(29)), Due::TimedOut);
        let mut off = Liveness::new(None, t0);
        assert_eq!(off.deadline(), None);
        assert_eq!(off.due(None, t0 + Duration::from_secs(1000)), Due::Nothing);
    }

    #[test]
    fn idle_clock_runs_only_without_subscriptions() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = IdleClock::new(Some(s * 30), t0);
        assert_eq!(c.deadline(), Some(t0 + s * 30));
        c.update(true, t0 + s);
        assert_eq!(c.deadline(), None);
        c.update(false, t0 + s * 5);
        c.update(false, t0 + s * 6);
        assert_eq!(c.deadline(), Some(t0 + s * 35));
        assert_eq!(IdleClock::new(None, t0).deadline(), None);
    }
}

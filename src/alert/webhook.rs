//! Alert delivery to HTTP webhooks, never blocking the dataflow.
//!
//! [`Webhooks::start`] spawns one delivery thread per endpoint, each fed by a bounded queue
//! ([`WebhookConfig::queue_capacity`]). [`Webhooks::send`] only serializes the alert and
//! `try_send`s it to every queue: when an endpoint's queue is full the alert goes straight to
//! the dead-letter callback (reason [`DeadReason::QueueFull`]), so a slow or hanging endpoint
//! never slows the dataflow nor the other endpoints.
//!
//! Each delivery is a `POST` of the alert's JSON with these headers:
//!
//! * `Content-Type: application/json`
//! * `X-Sideline-Signature: sha256=<hex>`: HMAC-SHA256 of the body with the endpoint's secret;
//!   receivers check it with [`verify`].
//! * `X-Sideline-Idempotency-Key: <alert.id>:<alert.seq>`: the same across retries and across
//!   replays of the same input, so receivers can drop duplicates.
//! * `X-Sideline-Attempt: N`, from 1.
//!
//! A 2xx answer is a success. Connection errors, timeouts, 429 and 5xx are retried with
//! exponential backoff and full jitter ([`backoff`]; a `Retry-After` in seconds is honoured up
//! to `max_backoff`), up to `max_attempts` attempts in all. Any other answer (4xx, 3xx: the
//! signed body is not sent to a redirect target) is final. A delivery that fails for good goes
//! to the dead-letter callback as a [`DeadWebhook`].
//!
//! Metrics, labelled `endpoint` (the configured name, not the URL, which may hold tokens):
//! `sideline_webhook_delivered_total`, `sideline_webhook_failures_total` (given up after
//! attempts), `sideline_webhook_dropped_total` (queue full) and the histogram
//! `sideline_webhook_attempt_seconds`.
//!
//! The HTTP client is built without TLS: endpoints are `http://` (an `https://` one fails
//! every delivery with a non-retryable error).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use sha2::Sha256;

use super::Alert;

/// HMAC-SHA256 of the body, as `sha256=<lowercase hex>`.
pub const SIGNATURE_HEADER: &str = "X-Sideline-Signature";
/// `<alert.id>:<alert.seq>`, stable across retries and replays.
pub const IDEMPOTENCY_HEADER: &str = "X-Sideline-Idempotency-Key";
/// The attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "X-Sideline-Attempt";

/// How much of an error answer's body is kept in [`DeadWebhook::last_error`].
const ERROR_BODY_BYTES: u64 = 512;

/// A shared secret. Its `Debug` does not print it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

/// One webhook endpoint.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Names the endpoint in metrics, logs and dead letters (the URL may hold tokens).
    pub name: String,
    /// Where alerts are POSTed (`http://host:port/path`).
    pub url: String,
    /// Key of the `X-Sideline-Signature` HMAC.
    pub secret: Secret,
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff ceiling before the second attempt; it doubles after each failure.
    pub initial_backoff: Duration,
    /// Cap of the backoff ceiling (and of an honoured `Retry-After`).
    pub max_backoff: Duration,
    /// Whole-attempt timeout: connect, send, answer.
    pub timeout: Duration,
    /// Alerts waiting for this endpoint; beyond, they are dead-lettered as `queue_full`.
    pub queue_capacity: usize,
}

impl WebhookConfig {
    /// An endpoint with the default policy: 5 attempts, backoff 250 ms doubling up to 10 s,
    /// 5 s timeout, 1024 queued alerts.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: url.into(),
            secret: secret.into(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            queue_capacity: 1024,
        }
    }
}

/// Why an alert was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The endpoint's queue was full when the alert was sent: never attempted.
    QueueFull,
    /// The endpoint gave a final answer (4xx other than 429, 3xx) or the request cannot be
    /// made (bad URL, TLS needed): retrying cannot help.
    Rejected,
    /// Every attempt failed with a retryable error.
    RetriesExhausted,
    /// [`Webhooks`] was shut down (or its delivery thread stopped) before delivery.
    Shutdown,
}

impl DeadReason {
    /// Stable code, for logs and dead-letter records.
    pub fn code(self) -> &'static str {
        match self {
            DeadReason::QueueFull => "queue_full",
            DeadReason::Rejected => "rejected",
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An alert that one endpoint did not get.
#[derive(Clone, Debug)]
pub struct DeadWebhook {
    /// [`WebhookConfig::name`].
    pub endpoint: String,
    pub alert: Alert,
    pub reason: DeadReason,
    /// Attempts made (0 when never attempted).
    pub attempts: u32,
    /// The last attempt's error (`HTTP 400 Bad Request: <body>`, a transport error), or why it
    /// was never attempted.
    pub last_error: String,
}

/// `<alert.id>:<alert.seq>`: the idempotency key of an alert.
pub fn idempotency_key(alert: &Alert) -> String {
    format!("{}:{}", alert.id, alert.seq)
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// `sha256=<hex HMAC-SHA256 of body>`: the `X-Sideline-Signature` value.
pub fn sign(secret: impl AsRef<[u8]>, body: &[u8]) -> String {
    let mut m = mac(secret.as_ref());
    m.update(body);
    let tag = m.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * tag.len());
    out.push_str("sha256=");
    for b in tag.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// For receivers: whether `header` (an `X-Sideline-Signature` value) signs `body` with
/// `secret`. The comparison is constant-time.
pub fn verify(secret: impl AsRef<[u8]>, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    let mut m = mac(secret.as_ref());
    m.update(body);
    m.verify_slice(&tag).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// The backoff ceiling before attempt `attempt + 1`: `initial * 2^(attempt-1)`, capped at `max`.
pub fn backoff_ceiling(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    initial.saturating_mul(1 << doublings).min(max)
}

/// Full jitter: a uniform wait in `[0, backoff_ceiling(attempt, initial, max)]`.
pub fn backoff<R: Rng + ?Sized>(
    attempt: u32,
    initial: Duration,
    max: Duration,
    rng: &mut R,
) -> Duration {
    let ceiling = backoff_ceiling(attempt, initial, max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// One alert, serialized once for every endpoint.
struct Job {
    alert: Alert,
    body: Vec<u8>,
    key: String,
}

/// The dead-letter callback of [`Webhooks::start`].
pub type DeadLetter = Box<dyn FnMut(DeadWebhook) + Send>;

/// What the handle and the delivery threads share.
struct Shared {
    /// Alerts queued or being delivered, over all endpoints.
    pending: AtomicUsize,
    idle: Mutex<()>,
    idle_cv: Condvar,
    stopping: Mutex<bool>,
    stop_cv: Condvar,
    dead_letter: Mutex<DeadLetter>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn dead(&self, dead: DeadWebhook) {
        (lock(&self.dead_letter))(dead)
    }

    /// One alert of one endpoint is done with (delivered or dead).
    fn done_one(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Taking the lock orders this wake-up after a `flush` that saw `pending > 0`.
            let _idle = lock(&self.idle);
            self.idle_cv.notify_all();
        }
    }

    fn is_stopping(&self) -> bool {
        *lock(&self.stopping)
    }

    /// Sleeps `d`, or less if shutting down; true if shutting down.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopping = lock(&self.stopping);
        while !*stopping {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopping = self
                .stop_cv
                .wait_timeout(stopping, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

struct Endpoint {
    name: String,
    tx: Option<SyncSender<Arc<Job>>>,
    thread: Option<JoinHandle<()>>,
}

/// Delivery of alerts to webhook endpoints. Dropping it (or [`Webhooks::shutdown`]) stops
/// the delivery threads: call [`Webhooks::flush`] first to deliver what is queued.
pub struct Webhooks {
    endpoints: Vec<Endpoint>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.endpoints.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Webhooks")
            .field("endpoints", &names)
            .field("pending", &self.shared.pending.load(Ordering::SeqCst))
            .finish()
    }
}

impl Webhooks {
    /// Starts one delivery thread per endpoint. `dead_letter` gets every alert an endpoint
    /// did not get; it runs on the delivery threads and, for [`DeadReason::QueueFull`], on the
    /// thread calling [`Webhooks::send`], so it must be quick (count, log, `try_send`).
    pub fn start(cfgs: Vec<WebhookConfig>, dead_letter: DeadLetter) -> Webhooks {
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            idle: Mutex::new(()),
            idle_cv: Condvar::new(),
            stopping: Mutex::new(false),
            stop_cv: Condvar::new(),
            dead_letter: Mutex::new(dead_letter),
        });
        let endpoints = cfgs
            .into_iter()
            .map(|cfg| {
                if !cfg.url.starts_with("http://") {
                    tracing::warn!(
                        endpoint = %cfg.name,
                        "webhook URL is not http:// (no TLS in this build): deliveries will fail"
                    );
                }
                let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity.max(1));
                let name = cfg.name.clone();
                let worker = Worker::new(cfg);
                let shared = Arc::clone(&shared);
                let thread = std::thread::Builder::new()
                    .name(format!("webhook-{name}"))
                    .spawn(move || worker.run(rx, &shared))
                    .expect("spawning a webhook delivery thread");
                Endpoint {
                    name,
                    tx: Some(tx),
                    thread: Some(thread),
                }
            })
            .collect();
        Webhooks { endpoints, shared }
    }

    /// Queues `alert` for every endpoint, without waiting: where a queue is full, the alert
    /// is dead-lettered as [`DeadReason::QueueFull`] for that endpoint.
    pub fn send(&self, alert: &Alert) {
        if self.endpoints.is_empty() {
            return;
        }
        // Plain data (no maps with non-string keys, no fallible Serialize): cannot fail.
        let body = serde_json::to_vec(alert).expect("an Alert serializes to JSON");
        let job = Arc::new(Job {
            alert: alert.clone(),
            body,
            key: idempotency_key(alert),
        });
        for ep in &self.endpoints {
            let Some(tx) = &ep.tx else { continue };
            self.shared.pending.fetch_add(1, Ordering::SeqCst);
            let (reason, error) = match tx.try_send(Arc::clone(&job)) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => {
                    let endpoint = ep.name.clone();
                    metrics::counter!("sideline_webhook_dropped_total", "endpoint" => endpoint)
                        .increment(1);
                    (DeadReason::QueueFull, "delivery queue full")
                }
                Err(TrySendError::Disconnected(_)) => {
                    (DeadReason::Shutdown, "delivery thread stopped")
                }
            };
            self.shared.done_one();
            self.shared.dead(DeadWebhook {
                endpoint: ep.name.clone(),
                alert: alert.clone(),
                reason,
                attempts: 0,
                last_error: error.to_string(),
            });
        }
    }

    /// Waits until every queue is empty and no delivery is in flight, at most `timeout`;
    /// true if it got there.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut idle = lock(&self.shared.idle);
        while self.shared.pending.load(Ordering::SeqCst) > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            idle = self
                .shared
                .idle_cv
                .wait_timeout(idle, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Stops the delivery threads: an attempt in flight finishes (within its timeout), then
    /// whatever is still queued or would be retried is dead-lettered as
    /// [`DeadReason::Shutdown`].
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        *lock(&self.shared.stopping) = true;
        self.shared.stop_cv.notify_all();
        for ep in &mut self.endpoints {
            ep.tx = None;
        }
        for ep in &mut self.endpoints {
            if let Some(thread) = ep.thread.take() {
                if thread.join().is_err() {
                    tracing::error!(endpoint = %ep.name, "webhook delivery thread panicked");
                }
            }
        }
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    /// Final: retrying cannot help.
    Rejected(String),
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// One endpoint's delivery loop.
struct Worker {
    cfg: WebhookConfig,
    agent: ureq::Agent,
    rng: ChaCha8Rng,
}

impl Worker {
    fn new(cfg: WebhookConfig) -> Worker {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("sideline/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Worker {
            cfg,
            agent,
            rng: ChaCha8Rng::from_os_rng(),
        }
    }

    fn run(mut self, rx: Receiver<Arc<Job>>, shared: &Shared) {
        // Ends when the handle drops its sender, after the queue is drained.
        while let Ok(job) = rx.recv() {
            let dead = if shared.is_stopping() {
                Some((
                    DeadReason::Shutdown,
                    0,
                    "shut down before delivery".to_string(),
                ))
            } else {
                self.deliver(&job, shared)
            };
            if let Some((reason, attempts, last_error)) = dead {
                if reason != DeadReason::Shutdown {
                    let endpoint = self.cfg.name.clone();
                    metrics::counter!("sideline_webhook_failures_total", "endpoint" => endpoint)
                        .increment(1);
                }
                tracing::warn!(
                    endpoint = %self.cfg.name,
                    key = %job.key,
                    %reason,
                    attempts,
                    error = %last_error,
                    "webhook not delivered"
                );
                shared.dead(DeadWebhook {
                    endpoint: self.cfg.name.clone(),
                    alert: job.alert.clone(),
                    reason,
                    attempts,
                    last_error,
                });
            }
            shared.done_one();
        }
    }

    /// Attempts until success, a final answer, the last attempt or shutdown; `None` when
    /// delivered, else why not, after how many attempts, and the last error.
    fn deliver(&mut self, job: &Job, shared: &Shared) -> Option<(DeadReason, u32, String)> {
        let signature = sign(self.cfg.secret.expose(), &job.body);
        let max_attempts = self.cfg.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let outcome = self.post(job, &signature, attempt);
            let endpoint = self.cfg.name.clone();
            metrics::histogram!("sideline_webhook_attempt_seconds", "endpoint" => endpoint)
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Outcome::Delivered => {
                    let endpoint = self.cfg.name.clone();
                    metrics::counter!("sideline_webhook_delivered_total", "endpoint" => endpoint)
                        .increment(1);
                    return None;
                }
                Outcome::Rejected(error) => return Some((DeadReason::Rejected, attempt, error)),
                Outcome::Retry { error, .. } if attempt >= max_attempts => {
                    return Some((DeadReason::RetriesExhausted, attempt, error));
                }
                Outcome::Retry { error, retry_after } => {
                    let jittered = backoff(
                        attempt,
                        self.cfg.initial_backoff,
                        self.cfg.max_backoff,
                        &mut self.rng,
                    );
                    let wait =
                        retry_after.map_or(jittered, |r| jittered.max(r.min(self.cfg.max_backoff)));
                    if shared.sleep(wait) {
                        return Some((DeadReason::Shutdown, attempt, error));
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn post(&self, job: &Job, signature: &str, attempt: u32) -> Outcome {
        let result = self
            .agent
            .post(&self.cfg.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(IDEMPOTENCY_HEADER, &job.key)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .send(&job.body[..]);
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) if retryable(&e) => {
                return Outcome::Retry {
                    error: e.to_string(),
                    retry_after: None,
                }
            }
            Err(e) => return Outcome::Rejected(e.to_string()),
        };
        let status = resp.status();
        if status.is_success() {
            // Read the (small) answer so the connection can be reused.
            let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
            return Outcome::Delivered;
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_BYTES)
            .read_to_vec()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let mut error = format!("HTTP {status}");
        if !text.is_empty() {
            error.push_str(": ");
            error.push_str(&text);
        }
        if retryable_status(status.as_u16()) {
            Outcome::Retry { error, retry_after }
        } else {
            Outcome::Rejected(error)
        }
    }
}

/// 429 and 5xx may pass; any other non-2xx answer is final.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// Transport errors worth another attempt: the endpoint may come back.
fn retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::ConnectProxyFailed(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_bad_headers() {
        let sig = sign("k", b"body");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify("k", b"body", &sig));
        assert!(verify(
            "k",
            b"body",
            &sig.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify("k", b"body", &sig[..sig.len() - 1]));
        assert!(!verify("k", b"body", "sha256=zz"));
        assert!(!verify("k", b"body", &sig.replace("sha256=", "sha1=")));
    }

    #[test]
    fn statuses() {
        assert!(retryable_status(429));
        assert!(retryable_status(500) && retryable_status(503));
        assert!(!retryable_status(400) && !retryable_status(404) && !retryable_status(302));
    }
}

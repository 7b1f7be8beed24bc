//! Webhook delivery (issue 5) against real HTTP receivers on 127.0.0.1:0: retries keep one
//! idempotency key, final answers are not retried, a hanging endpoint neither blocks `send`
//! nor hurts a healthy one, and the backoff grows up to its cap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sideline::alert::webhook::{
    backoff, backoff_ceiling, verify, DeadLetter, DeadReason, DeadWebhook, Secret, WebhookConfig,
    Webhooks, ATTEMPT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER,
};
use sideline::alert::{Alert, AlertState, Evidence, Severity};
use sideline::event::Sport;

/// Guard for anything that waits: generous, so a loaded machine does not fail the test.
const GUARD: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cret";

fn alert(seq: u64) -> Alert {
    Alert {
        seq,
        id: format!("nfl_wp/jump/nfl/2018090600/{}", 1000 + seq / 2),
        pipeline: "nfl_wp".into(),
        version: 1,
        detector: "jump".into(),
        kind: "prediction_jump".into(),
        sport: Sport::Nfl,
        game_id: "2018090600".into(),
        state: if seq.is_multiple_of(2) {
            AlertState::Open
        } else {
            AlertState::Resolved
        },
        severity: Severity::Warning,
        event_time_ms: 1_536_278_400_000 + seq * 1000,
        opened_at_ms: 1_536_278_400_000,
        message: format!("home win jumped ({seq})"),
        evidence: Evidence {
            value: 0.25 + seq as f64 / 1000.0,
            threshold: 0.1,
            score: Some(2.5),
            baseline: None,
            window: "last 5 plays".into(),
        },
    }
}

/// A request as the receiver saw it, with the status it answered.
#[derive(Clone, Debug)]
struct Seen {
    key: String,
    attempt: u32,
    signature_ok: bool,
    content_type: String,
    body: Bytes,
    status: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    /// Records the request; `answer` picks the status from the number of earlier requests
    /// with the same idempotency key.
    fn record(&self, headers: &HeaderMap, body: Bytes, answer: impl Fn(usize) -> u16) -> u16 {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let key = header(IDEMPOTENCY_HEADER);
        let mut seen = self.seen.lock().unwrap();
        let before = seen.iter().filter(|s| s.key == key).count();
        let status = answer(before);
        seen.push(Seen {
            attempt: header(ATTEMPT_HEADER).parse().unwrap_or(0),
            signature_ok: verify(SECRET, &body, &header(SIGNATURE_HEADER)),
            content_type: header("content-type"),
            key,
            body,
            status,
        });
        status
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves `app` on 127.0.0.1:0 on its own runtime.
fn serve(app: Router) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rt, addr)
}

/// A receiver answering `answer(earlier requests with this key)`.
fn receiver(answer: fn(usize) -> u16) -> (tokio::runtime::Runtime, SocketAddr, Receiver) {
    let rx = Receiver::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                move |State(rx): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                    StatusCode::from_u16(rx.record(&headers, body, answer)).unwrap()
                },
            ),
        )
        .with_state(rx.clone());
    let (rt, addr) = serve(app);
    (rt, addr, rx)
}

/// An endpoint with small backoffs, for tests.
fn endpoint(name: &str, addr: SocketAddr) -> WebhookConfig {
    let mut cfg = WebhookConfig::new(name, format!("http://{addr}/hook"), SECRET);
    cfg.initial_backoff = Duration::from_millis(2);
    cfg.max_backoff = Duration::from_millis(20);
    cfg.timeout = Duration::from_secs(20);
    cfg
}

/// A dead-letter callback collecting into a vector.
fn collector() -> (Arc<Mutex<Vec<DeadWebhook>>>, DeadLetter) {
    let dead = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&dead);
    (dead, Box::new(move |d| sink.lock().unwrap().push(d)))
}

#[test]
fn retries_deliver_each_alert_once_by_idempotency_key() {
    // 500 to the first 3 attempts of each alert, then 200.
    let (rt, addr, rx) = receiver(|before| if before < 3 { 500 } else { 200 });
    let (dead, dead_letter) = collector();
    let hooks = Webhooks::start(vec![endpoint("flaky", addr)], dead_letter);
    let alerts: Vec<Alert> = (1..=20).map(alert).collect();
    for a in &alerts {
        hooks.send(a);
    }
    assert!(hooks.flush(GUARD), "deliveries did not finish");
    drop(hooks);
    rt.shutdown_background();

    assert!(
        dead.lock().unwrap().is_empty(),
        "{:?}",
        dead.lock().unwrap()
    );
    let seen = rx.seen();
    let sent: HashMap<String, &Alert> = alerts
        .iter()
        .map(|a| (format!("{}:{}", a.id, a.seq), a))
        .collect();
    let mut attempts: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    let mut delivered: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seen {
        assert!(s.signature_ok, "bad signature on {s:?}");
        assert_eq!(s.content_type, "application/json");
        let back: Alert = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(&&back, sent.get(&s.key).expect("key of a sent alert"));
        attempts.entry(&s.key).or_default().push(s.attempt);
        if (200..300).contains(&s.status) {
            *delivered.entry(&s.key).or_default() += 1;
        }
    }
    assert_eq!(delivered.len(), alerts.len(), "distinct keys answered 2xx");
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
    for (key, mut a) in attempts {
        a.sort_unstable();
        assert_eq!(a, vec![1, 2, 3, 4], "attempts of {key}");
    }
    // Retries resend byte-identical bodies.
    let bodies: BTreeSet<&[u8]> = seen.iter().map(|s| &s.body[..]).collect();
    assert_eq!(bodies.len(), alerts.len());
}

#[test]
fn client_errors_are_not_retried() {
    let (rt, addr, rx) = receiver(|_| 400);
    let (dead, dead_letter) = collector();
    let hooks = Webhooks::start(vec![endpoint("strict", addr)], dead_letter);
    hooks.send(&alert(1));
    hooks.send(&alert(2));
    assert!(hooks.flush(GUARD), "deliveries did not finish");
    drop(hooks);
    rt.shutdown_background();

    assert_eq!(rx.seen().len(), 2, "one attempt per alert");
    let dead = dead.lock().unwrap();
    assert_eq!(dead.len(), 2);
    for d in dead.iter() {
        assert_eq!(d.endpoint, "strict");
        assert_eq!(d.reason, DeadReason::Rejected);
        assert_eq!(d.reason.code(), "rejected");
        assert_eq!(d.attempts, 1);
        assert!(d.last_error.contains("400"), "{}", d.last_error);
    }
    let seqs: BTreeSet<u64> = dead.iter().map(|d| d.alert.seq).collect();
    assert_eq!(seqs, BTreeSet::from([1, 2]));
}

#[test]
fn retryable_failures_give_up_after_max_attempts() {
    let (rt, addr, rx) = receiver(|_| 503);
    let (dead, dead_letter) = collector();
    let mut cfg = endpoint("down", addr);
    cfg.max_attempts = 3;
    let hooks = Webhooks::start(vec![cfg], dead_letter);
    hooks.send(&alert(7));
    assert!(hooks.flush(GUARD), "deliveries did not finish");
    drop(hooks);
    rt.shutdown_background();

    let attempts: Vec<u32> = rx.seen().iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let dead = dead.lock().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadReason::RetriesExhausted);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].last_error.contains("503"), "{}", dead[0].last_error);
}

#[test]
fn hanging_endpoint_blocks_neither_send_nor_other_endpoints() {
    const ALERTS: u64 = 5000;
    const HANG_QUEUE: usize = 8;

    let hang_app = Router::new().route(
        "/hook",
        post(|| async {
            std::future::pending::<()>().await;
            StatusCode::OK
        }),
    );
    let (hang_rt, hang_addr) = serve(hang_app);
    let (ok_rt, ok_addr, ok_rx) = receiver(|_| 200);

    let mut hang = endpoint("hang", hang_addr);
    hang.queue_capacity = HANG_QUEUE;
    hang.max_attempts = 1;
    hang.timeout = Duration::from_secs(1);
    let mut healthy = endpoint("healthy", ok_addr);
    healthy.queue_capacity = ALERTS as usize;
    let (dead, dead_letter) = collector();
    let hooks = Webhooks::start(vec![hang, healthy], dead_letter);

    // Send from another thread, so a blocking `send` fails the test instead of hanging it.
    let (done_tx, done_rx) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        for seq in 1..=ALERTS {
            hooks.send(&alert(seq));
        }
        done_tx.send(()).unwrap();
        hooks
    });
    done_rx
        .recv_timeout(GUARD)
        .expect("send blocked on a hanging endpoint");
    let hooks = sender.join().unwrap();

    // The healthy endpoint gets every alert.
    let deadline = std::time::Instant::now() + GUARD;
    while ok_rx.seen().len() < ALERTS as usize && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(hooks); // the hanging endpoint's queue is dead-lettered as shutdown
    hang_rt.shutdown_background();
    ok_rt.shutdown_background();

    let ok_keys: BTreeSet<String> = ok_rx.seen().into_iter().map(|s| s.key).collect();
    assert_eq!(
        ok_keys.len(),
        ALERTS as usize,
        "healthy endpoint missed alerts"
    );

    let dead = dead.lock().unwrap();
    assert!(
        dead.iter().all(|d| d.endpoint == "hang"),
        "healthy endpoint dead-lettered"
    );
    let count = |r: DeadReason| dead.iter().filter(|d| d.reason == r).count();
    let queue_full = count(DeadReason::QueueFull);
    let exhausted = count(DeadReason::RetriesExhausted);
    // Every alert for the hanging endpoint ends up dead, one way or another.
    assert_eq!(dead.len(), ALERTS as usize);
    // Accepted alerts are at most those it finished with, what its queue holds and one in
    // flight: the rest overflowed, without being attempted.
    assert!(queue_full > 0);
    assert!(
        queue_full + exhausted + HANG_QUEUE + 1 >= ALERTS as usize,
        "queue_full {queue_full}, exhausted {exhausted}"
    );
    for d in dead.iter().filter(|d| d.reason == DeadReason::QueueFull) {
        assert_eq!(d.attempts, 0);
        assert_eq!(d.reason.code(), "queue_full");
    }
}

#[test]
fn backoff_grows_and_is_capped() {
    let initial = Duration::from_millis(250);
    let max = Duration::from_secs(10);
    let ceilings: Vec<Duration> = (1..=10).map(|a| backoff_ceiling(a, initial, max)).collect();
    assert_eq!(ceilings[0], initial);
    assert_eq!(ceilings[1], Duration::from_millis(500));
    assert_eq!(ceilings[5], Duration::from_secs(8));
    assert!(ceilings.windows(2).all(|w| w[0] <= w[1]), "{ceilings:?}");
    assert!(ceilings[6..].iter().all(|&c| c == max), "{ceilings:?}");
    assert_eq!(backoff_ceiling(u32::MAX, initial, max), max, "no overflow");

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut means = Vec::new();
    for attempt in 1..=10 {
        let ceiling = backoff_ceiling(attempt, initial, max);
        let samples: Vec<Duration> = (0..2000)
            .map(|_| backoff(attempt, initial, max, &mut rng))
            .collect();
        assert!(samples.iter().all(|&s| s <= ceiling));
        // Full jitter: spread over [0, ceiling], not bunched at the top.
        assert!(samples.iter().any(|&s| s < ceiling / 4));
        assert!(samples.iter().any(|&s| s > ceiling * 3 / 4));
        means.push(samples.iter().sum::<Duration>() / 2000);
    }
    // Means grow with the ceiling until it is capped (seeded: deterministic).
    assert!(means[..6].windows(2).all(|w| w[0] < w[1]), "{means:?}");
    assert!(
        means[6..].iter().all(|&m| m <= max / 2 + max / 10),
        "{means:?}"
    );
}

#[test]
fn signatures_verify_only_the_signed_body_and_secret() {
    let body = serde_json::to_vec(&alert(3)).unwrap();
    let header = sideline::alert::webhook::sign(SECRET, &body);
    assert!(verify(SECRET, &body, &header));
    assert!(!verify("other", &body, &header));
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert!(!verify(SECRET, &tampered, &header));
    assert!(!verify(SECRET, &body, ""));
}

#[test]
fn secrets_do_not_print() {
    let cfg = WebhookConfig::new("x", "http://127.0.0.1:1/hook", Secret::new("hunter2"));
    assert!(!format!("{cfg:?}").contains("hunter2"));
    assert_eq!(cfg.max_attempts, 5);
    assert_eq!(cfg.queue_capacity, 1024);
}

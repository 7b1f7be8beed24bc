//! Alert webhooks end to end (issue 5): the real NFL games through librdkafka's mock cluster
//! and the engine, a `jump` detector on the prediction, and a `[[output]] kind = "webhook"`
//! pointing at a real HTTP receiver on 127.0.0.1:0.
//!
//! The receiver answers 500 to the first 3 attempts of the first [`FLAKY`] alert changes and
//! 200 to everything else. Only the first few fail because an endpoint delivers one alert at
//! a time (one delivery thread per endpoint, `src/alert/webhook.rs`) and a pipeline file
//! cannot shorten the default backoff (250 ms, doubling, full jitter): three failures cost up
//! to 1.75 s per alert, so failing every one of the ~180 alert changes would take minutes.
//! The retries still overlap the rest of the run, which queues behind them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use sideline::alert::webhook::{
    idempotency_key, verify, ATTEMPT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER,
};
use sideline::alert::{Alert, AlertState};
use sideline::delta::Delta;

/// The environment variable holding the signing secret. Not `SIDELINE_*`: those are engine
/// settings to `Config::load`, which rejects unknown ones.
const SECRET_ENV: &str = "E2E_WEBHOOK_SECRET";
const SECRET: &str = "e2e-webhook-s3cret";
/// Alert changes numbered up to this are answered 500 three times before a 200.
const FLAKY: u64 = 5;
/// Failed attempts before the 200, for those.
const FAILURES: usize = 3;

const SWING: &str = r#"
[[detector]]
name = "swing"
kind = "jump"
on = "prediction"
threshold = 0.2
window = "3m"
"#;

/// A request as the receiver saw it, with the status it answered.
#[derive(Clone, Debug)]
struct Seen {
    key: String,
    attempt: u32,
    signature_ok: bool,
    body: Bytes,
    status: u16,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Seen>>>);

/// The alert seq at the end of an idempotency key (`<id>:<seq>`).
fn key_seq(key: &str) -> Option<u64> {
    key.rsplit_once(':')?.1.parse().ok()
}

async fn hook(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let key = header(IDEMPOTENCY_HEADER);
    let mut seen = rx.0.lock().unwrap();
    let before = seen.iter().filter(|s| s.key == key).count();
    let flaky = key_seq(&key).is_some_and(|s| s <= FLAKY);
    let status = if flaky && before < FAILURES { 500 } else { 200 };
    seen.push(Seen {
        attempt: header(ATTEMPT_HEADER).parse().unwrap_or(0),
        signature_ok: verify(SECRET, &body, &header(SIGNATURE_HEADER)),
        key,
        body,
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// The receiver on 127.0.0.1:0, on its own runtime.
fn receiver() -> (tokio::runtime::Runtime, SocketAddr, Receiver) {
    let rx = Receiver::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(rx.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rt, addr, rx)
}

/// The fixture through the NFL pipeline with the swing detector and `outputs`; the deltas and
/// alert changes the engine published, once `run_engine_with` returned (webhooks flushed).
fn replay(name: &str, outputs: &str) -> (Vec<Delta>, Vec<Alert>) {
    let input = format!("nfl.webhooks.{name}");
    let cluster = Cluster::mock(&[(&input, 4), (&format!("{input}.dead-letters"), 1)]);
    produce_all(&cluster.brokers, &input, &fixture_lines());
    let text = format!("{}\n{SWING}\n{outputs}", nfl_pipeline(&[&input]));
    let cfg = config(&cluster.brokers, &input, 2);
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    app.run_engine_with(Box::new(capture.clone())).unwrap();
    app.shutdown();
    let out = capture.0.lock().unwrap().clone();
    out
}

#[test]
fn every_alert_reaches_the_webhook_once_signed_and_deltas_do_not_change() {
    // The only test of this binary: no other thread reads the environment meanwhile.
    std::env::set_var(SECRET_ENV, SECRET);
    let (rt, addr, rx) = receiver();
    let webhook = format!(
        "[[output]]\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret-env = \"{SECRET_ENV}\"\n"
    );
    let (deltas, alerts) = replay("hooked", &webhook);
    let seen = rx.0.lock().unwrap().clone();
    rt.shutdown_background();

    assert!(
        alerts.len() as u64 > FLAKY,
        "the real games swing more than {FLAKY} times: {} alert changes",
        alerts.len()
    );
    let by_key: BTreeMap<String, &Alert> = alerts.iter().map(|a| (idempotency_key(a), a)).collect();
    assert_eq!(by_key.len(), alerts.len(), "idempotency keys are distinct");

    let mut attempts: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    let mut delivered: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seen {
        assert!(s.signature_ok, "bad signature on {s:?}");
        let sent = by_key
            .get(&s.key)
            .unwrap_or_else(|| panic!("a request for an alert never raised: {}", s.key));
        let body: Alert = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(&&body, sent, "the body is the alert change of its key");
        attempts.entry(&s.key).or_default().push(s.attempt);
        if (200..300).contains(&s.status) {
            *delivered.entry(&s.key).or_default() += 1;
        }
    }
    let flaky = attempts
        .keys()
        .filter(|k| key_seq(k).is_some_and(|s| s <= FLAKY))
        .count();
    println!(
        "webhook: {} alert changes ({} opened) over {} deltas; {} requests, {} distinct keys answered 2xx; {flaky} alerts retried",
        alerts.len(),
        alerts.iter().filter(|a| a.state == AlertState::Open).count(),
        deltas.len(),
        seen.len(),
        delivered.len()
    );
    assert_eq!(
        delivered.len(),
        alerts.len(),
        "distinct keys answered 2xx == alert changes"
    );
    assert!(
        delivered.values().all(|&n| n == 1),
        "no alert delivered twice: {delivered:?}"
    );
    assert_eq!(flaky as u64, FLAKY);
    for (key, mut a) in attempts {
        a.sort_unstable();
        let want: Vec<u32> = match key_seq(key) {
            Some(s) if s <= FLAKY => (1..=FAILURES as u32 + 1).collect(),
            _ => vec![1],
        };
        assert_eq!(a, want, "attempts of {key}");
    }
    // Retries resend byte-identical bodies: one body per alert change.
    let bodies: BTreeSet<&[u8]> = seen.iter().map(|s| &s.body[..]).collect();
    assert_eq!(bodies.len(), alerts.len());

    // The webhook output changes nothing upstream of it.
    let (plain_deltas, plain_alerts) = replay("plain", "");
    assert_eq!(
        log_bytes(&deltas),
        log_bytes(&plain_deltas),
        "the delta log with the webhook is byte-identical to the one without"
    );
    assert_eq!(alerts, plain_alerts, "the same alert changes either way");
}

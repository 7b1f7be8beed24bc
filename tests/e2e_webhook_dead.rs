//! An alert no webhook endpoint takes is not lost (issue 5): after the endpoint refuses it, it
//! is a record in the dead-letter topic, with the reason, the endpoint and the last error.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use sideline::alert::webhook::{ATTEMPT_HEADER, IDEMPOTENCY_HEADER};
use sideline::alert::Alert;
use sideline::delta::Delta;
use sideline::pipeline::plan::Plan;
use sideline::publish::DeltaSink;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Alert>>>);

impl DeltaSink for Capture {
    fn deltas(&mut self, _: &Plan, _: &[Delta]) {}
    fn alerts(&mut self, _: &Plan, alerts: &[Alert]) {
        self.0.lock().unwrap().extend_from_slice(alerts);
    }
}

#[test]
fn alerts_a_webhook_refuses_are_dead_lettered_with_the_reason() {
    // A receiver that reads each request, as a real one must to check its signature, notes
    // its idempotency key and attempt number, and refuses it (400: not retried).
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let noted = seen.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let refuse = move |headers: HeaderMap, _body: Bytes| async move {
            let header = |name: &str| headers[name].to_str().unwrap().to_string();
            noted
                .lock()
                .unwrap()
                .push((header(IDEMPOTENCY_HEADER), header(ATTEMPT_HEADER)));
            StatusCode::BAD_REQUEST
        };
        let app = Router::new().route("/hook", post(refuse));
        axum::serve(listener, app).await.unwrap();
    });
    // Not a SIDELINE_ variable: those are engine configuration.
    std::env::set_var("E2E_DEAD_WEBHOOK_SECRET", "s3cret");

    let input = "nfl.deadhook";
    let dlq = "nfl.deadhook.dead-letters";
    let cluster = Cluster::mock(&[(input, 4), (dlq, 1)]);
    produce_all(&cluster.brokers, input, &fixture_lines()[..2000]);
    let text = format!(
        "{}\n[[detector]]\nname = \"swing\"\nkind = \"jump\"\non = \"prediction\"\nthreshold = 0.2\nwindow = \"3m\"\n\n[[output]]\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret-env = \"E2E_DEAD_WEBHOOK_SECRET\"\n",
        nfl_pipeline(&[input])
    );
    let cfg = config(&cluster.brokers, input, 2);
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    app.run_engine_with(Box::new(capture.clone())).unwrap();
    app.shutdown();
    let alerts = capture.0.lock().unwrap().clone();
    assert!(!alerts.is_empty(), "the games have swings");

    let mut dead: Vec<(Alert, BTreeMap<String, String>)> =
        read_topic(&cluster.brokers, dlq, 1, alerts.len())
            .into_iter()
            .map(|r| (serde_json::from_slice(&r.payload).unwrap(), r.headers))
            .collect();
    dead.sort_by_key(|(a, _)| a.seq);
    let got: Vec<&Alert> = dead.iter().map(|(a, _)| a).collect();
    let want: Vec<&Alert> = alerts.iter().collect();
    assert_eq!(got, want, "every refused alert is in the dead-letter topic");
    // A 400 is final: the receiver saw each alert once. The dead letter counts the attempts
    // the engine made, which is the attempt the receiver answered: an attempt lost in transport
    // before it (a pooled connection closed under load) counts, and is not a second answer.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), alerts.len(), "one request per alert: {seen:?}");
    for (_, attempt) in &seen {
        let n: u32 = attempt.parse().unwrap();
        assert!(
            (1..=5).contains(&n),
            "attempt {n} of at most 5 (the default)"
        );
    }
    let attempt_of: BTreeMap<String, String> = seen.into_iter().collect();
    assert_eq!(attempt_of.len(), alerts.len(), "no alert was sent twice");
    for (a, h) in &dead {
        assert_eq!(h["sideline.reason"], "webhook_rejected");
        assert!(h["sideline.detail"].contains("400"), "{h:?}");
        let key = sideline::alert::webhook::idempotency_key(a);
        assert_eq!(h["sideline.attempts"], attempt_of[&key], "{h:?}");
        assert_eq!(h["sideline.pipeline"], "nfl_win_probability");
    }
}

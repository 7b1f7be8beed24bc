//! Hot model swap (issue 4, item 5): while the NFL feed replays and a WebSocket subscriber
//! stays connected, the pipeline gets a shadow model, the shadow is promoted, and the pipeline
//! is rolled back, each through the admin endpoint. Nothing is lost or repeated, every delta
//! names the version and model that made it, the end state is the original pipeline's alone,
//! and the archive holds both models' values on the same rows.
//!
//! The shadow is `models/nfl_wp_gbt/v1`, gradient-boosted trees fitted by `sideline train
//! --kind gbt` on the same features as the logistic `nfl_wp/v1`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use common::*;
use serde_json::Value;
use sideline::app::App;
use sideline::delta::{Delta, DeltaCause};
use sideline::event::GameKey;
use sideline::model::Predictor;
use sideline::ws::protocol::ServerMessage;

const SUBSCRIBE: &str = r#"{"op":"subscribe","id":"s","channel":"nfl.win_probability"}"#;
const PIPELINE: &str = "nfl_win_probability";
const MODEL: &str = "nfl_wp/v1";
const SHADOW: &str = "nfl_wp_gbt/v1";

/// The registry: the committed models.
fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Version 1: the NFL pipeline archiving to `archive`, with an idle timeout longer than any
/// pause of this test (the feed comes in parts; a partition idle between them would release
/// event time past events still to come).
fn v1(topic: &str, archive: &Path) -> String {
    let text = nfl_pipeline(&[topic]);
    let out = text.replace("idle-timeout = \"2s\"", "idle-timeout = \"10m\"");
    assert_eq!(out.matches("10m").count(), 1);
    format!(
        "{out}\n[[output]]\nkind = \"archive\"\ndir = \"{}\"\n",
        archive.display()
    )
}

/// Version 2: version 1 with the GBT as its shadow.
fn v2(topic: &str, archive: &Path) -> String {
    let text = v1(topic, archive);
    let out = text.replacen("version = 1", "version = 2", 1).replace(
        "version = \"v1\"\noutput",
        "version = \"v1\"\nshadow = { name = \"nfl_wp_gbt\", version = \"v1\" }\noutput",
    );
    assert!(out.contains("shadow = {") && out.contains("version = 2"));
    out
}

fn cfg(brokers: &str, topic: &str) -> sideline::config::Config {
    let mut cfg = config(brokers, topic, 2);
    cfg.engine.models = models().display().to_string();
    cfg
}

fn finals(deltas: &[Delta]) -> BTreeMap<GameKey, f64> {
    deltas
        .iter()
        .map(|d| {
            (
                GameKey {
                    sport: d.sport,
                    game_id: d.game_id.clone(),
                },
                d.new,
            )
        })
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `POST /pipelines/{name}/{what}` or a `PUT` of `body`: status and JSON answer.
fn admin(app: &App, method: &str, path: &str, body: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", app.admin_addr.unwrap());
    let result = match method {
        "PUT" => agent().put(&url).send(body),
        "GET" => agent().get(&url).call(),
        _ => agent().post(&url).send_empty(),
    };
    let mut resp = result.unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// Waits until version `version` of the pipeline is live, nothing warming.
fn wait_live(app: &App, version: u32) {
    wait_until(&format!("version {version} live"), 120, || {
        let p = app.publisher.lock().unwrap();
        let live = p.pipelines().first().map(|(l, _)| l.version);
        (p.settled(PIPELINE) && live == Some(version)).then_some(())
    });
}

/// The archive's batches of one pipeline version, once its files are complete.
fn archived(dir: &Path, version: u32) -> Vec<RecordBatch> {
    let prefix = format!("{PIPELINE}-v{version}-");
    // Retired versions finish their files on a thread of their own.
    wait_until(&format!("version {version}'s archive"), 60, || {
        let all = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&prefix))
            .collect::<Vec<_>>();
        (!all.is_empty() && all.iter().all(|n| n.ends_with(".arrow"))).then_some(())
    });
    let paths: Vec<PathBuf> = sideline::archive::files(dir)
        .unwrap()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    sideline::archive::read(&paths).unwrap()
}

/// Each archived row's key (game, event time).
fn keys(batches: &[RecordBatch]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for b in batches {
        let games = b.column_by_name("game_id").unwrap().as_string::<i32>();
        let times = b
            .column_by_name("event_time_ms")
            .unwrap()
            .as_primitive::<UInt64Type>();
        for i in 0..b.num_rows() {
            out.push((games.value(i).to_string(), times.value(i)));
        }
    }
    out
}

/// Checks an archive of a version with a shadow: every row's `value` is what `model` scores
/// on the archived features and its `shadow_value` what `shadow` scores on them. Returns the
/// row count and how many rows the two models disagree on.
fn check_shadow_archive(batches: &[RecordBatch], model: &str, shadow: &str) -> (usize, usize) {
    let load = |m: &str| {
        let (name, version) = m.split_once('/').unwrap();
        Predictor::load(Some(&models()), name, version).unwrap()
    };
    let (model_p, shadow_p) = (load(model), load(shadow));
    let (mut rows, mut differ) = (0, 0);
    for b in batches {
        let meta = b.schema().metadata().clone();
        assert_eq!(
            meta.get("sideline.shadow_model").map(String::as_str),
            Some(shadow)
        );
        let column = |n: &str| {
            b.column_by_name(n)
                .unwrap_or_else(|| panic!("archive column {n}"))
                .as_primitive::<Float64Type>()
                .clone()
        };
        let inputs = |p: &Predictor| -> Vec<Vec<f64>> {
            let cols: Vec<_> = p.inputs().iter().map(|n| column(n)).collect();
            (0..b.num_rows())
                .map(|i| cols.iter().map(|c| c.value(i)).collect())
                .collect()
        };
        let versions = b
            .column_by_name("model_version")
            .unwrap()
            .as_string::<i32>();
        let (value, shadow_value) = (column("value"), column("shadow_value"));
        assert_eq!(shadow_value.null_count(), 0, "every row has a shadow value");
        let expected = model_p.score(&inputs(&model_p)).unwrap();
        let expected_shadow = shadow_p.score(&inputs(&shadow_p)).unwrap();
        for i in 0..b.num_rows() {
            assert_eq!(versions.value(i), model);
            assert_eq!(value.value(i).to_bits(), expected[i].to_bits(), "value");
            assert_eq!(
                shadow_value.value(i).to_bits(),
                expected_shadow[i].to_bits(),
                "shadow value: what {shadow} scores on the same row"
            );
            differ += usize::from(value.value(i) != shadow_value.value(i));
        }
        rows += b.num_rows();
    }
    (rows, differ)
}

#[test]
fn shadow_promote_and_rollback_during_a_live_replay_lose_nothing() {
    // Version 1 alone over the whole fixture: the expected end state, and its archive's rows.
    let alone_dir = tempfile::tempdir().unwrap();
    let (alone, alone_keys) = {
        let topic = "nfl.swap.alone";
        let cluster = Cluster::mock(&[(topic, 4), (&format!("{topic}.dead-letters"), 1)]);
        produce_all(&cluster.brokers, topic, &fixture_lines());
        let app = start(
            &cfg(&cluster.brokers, topic),
            &[v1(topic, alone_dir.path())],
        );
        let (_, log) = run_engine(&app);
        app.shutdown();
        (log, keys(&archived(alone_dir.path(), 1)))
    };

    let topic = "nfl.swap";
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::mock(&[(topic, 4), (&format!("{topic}.dead-letters"), 1)]);
    // Seven parts: the first before anything; per swap, one while the new version warms up
    // (the swap happens while events flow) and one after it.
    let lines = fixture_lines();
    let part = lines.len() / 7;
    let parts: Vec<&[String]> = (0..7)
        .map(|i| &lines[i * part..if i == 6 { lines.len() } else { (i + 1) * part }])
        .collect();
    produce_all(&cluster.brokers, topic, parts[0]);
    let mut cfg = cfg(&cluster.brokers, topic);
    cfg.kafka.stop_at_end = false;
    cfg.server.admin_listen = "127.0.0.1:0".into();
    let app: Arc<App> = start(&cfg, &[v1(topic, dir.path())]);
    let client = Client::connect(app.ws_addr, SUBSCRIBE);
    let deltas_of = |version: u32| {
        move |ms: &[ServerMessage]| {
            ms.iter().any(|m| {
                matches!(m, ServerMessage::Delta { delta, .. }
                    if delta.version == version && delta.cause == DeltaCause::Moved)
            })
        }
    };
    let log = std::thread::scope(|s| {
        let engine = s.spawn(|| run_engine(&app).1);
        client.wait_for("version 1's deltas", deltas_of(1));

        // A shadow: version 2 scores both models, publishes nfl_wp's.
        let (status, body) = admin(
            &app,
            "PUT",
            &format!("/pipelines/{PIPELINE}"),
            &v2(topic, dir.path()),
        );
        assert_eq!((status, &body["version"]), (200, &Value::from(2)), "{body}");
        produce_all(&cluster.brokers, topic, parts[1]);
        wait_live(&app, 2);
        let (_, list) = admin(&app, "GET", "/pipelines", "");
        assert_eq!(
            (&list[0]["model"], &list[0]["shadow"]),
            (&Value::from(MODEL), &Value::from(SHADOW))
        );
        produce_all(&cluster.brokers, topic, parts[2]);
        client.wait_for("version 2's deltas", deltas_of(2));

        // Promote: version 3 publishes the GBT's values, nfl_wp in the shadow.
        let (status, body) = admin(&app, "POST", &format!("/pipelines/{PIPELINE}/promote"), "");
        assert_eq!((status, &body["version"]), (200, &Value::from(3)), "{body}");
        produce_all(&cluster.brokers, topic, parts[3]);
        wait_live(&app, 3);
        let plan = app.publisher.lock().unwrap().pipelines()[0].0.clone();
        assert!(
            plan.source.contains("name = \"nfl_wp_gbt\""),
            "{}",
            plan.source
        );
        produce_all(&cluster.brokers, topic, parts[4]);
        client.wait_for("version 3's deltas", deltas_of(3));

        // Roll back: version 4 is version 2's definition again.
        let (status, body) = admin(&app, "POST", &format!("/pipelines/{PIPELINE}/rollback"), "");
        assert_eq!((status, &body["version"]), (200, &Value::from(4)), "{body}");
        produce_all(&cluster.brokers, topic, parts[5]);
        wait_live(&app, 4);
        produce_all(&cluster.brokers, topic, parts[6]);
        app.stop.drain();
        engine.join().unwrap()
    });
    drop(cluster);
    let history: Vec<u32> = app.history(PIPELINE).iter().map(|p| p.version).collect();
    assert_eq!(history, [1, 2, 3, 4]);

    // The subscriber: one connection, one snapshot, every delta once, in order.
    let last = log.last().unwrap().seq;
    client.wait_for_seq(last);
    assert!(client.is_open(), "the connection never closed");
    let messages = client.messages();
    assert!(!messages
        .iter()
        .any(|m| matches!(m, ServerMessage::Error { .. })));
    let snapshots = messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Snapshot { .. }))
        .count();
    assert_eq!(snapshots, 1, "the subscription was never reset");
    let (_, current, ws_deltas) = apply(&messages);
    assert_eq!(ws_deltas, log, "the subscriber saw the whole log");
    for (i, d) in log.iter().enumerate() {
        assert_eq!(d.seq, i as u64 + 1, "no gap, no repeat");
    }

    // Versions go 1, 2, 3, 4, each delta tagged with the model live then.
    let mut seen = Vec::new();
    for d in &log {
        if seen.last() != Some(&d.version) {
            assert!(
                seen.last().is_none_or(|v| *v < d.version),
                "versions only go up: {} after {seen:?}",
                d.version
            );
            seen.push(d.version);
        }
        let model = if d.version == 3 { SHADOW } else { MODEL };
        assert_eq!(
            d.model_version, model,
            "delta {} of version {}",
            d.seq, d.version
        );
    }
    assert_eq!(seen, [1, 2, 3, 4]);
    // The promotion and the rollback changed values (the models differ); a shadow alone did
    // not: version 2 publishes what version 1 did.
    let first_of = |v: u32| log.iter().position(|d| d.version == v).unwrap();
    assert_eq!(
        log[first_of(2)].cause,
        DeltaCause::Moved,
        "the shadow changed no value"
    );
    assert_eq!(log[first_of(3)].cause, DeltaCause::Version);
    assert_eq!(log[first_of(4)].cause, DeltaCause::Version);

    // After the rollback's swap: exactly what version 1 alone published, and its end state.
    let swap = first_of(4);
    let at = log[swap].event_time_ms;
    let after: Vec<_> = log[swap..]
        .iter()
        .filter(|d| d.cause == DeltaCause::Moved)
        .map(|d| (d.game_id.clone(), d.event_time_ms, d.new))
        .collect();
    let alone_after: Vec<_> = alone
        .iter()
        .filter(|d| d.event_time_ms > at)
        .map(|d| (d.game_id.clone(), d.event_time_ms, d.new))
        .collect();
    assert!(!after.is_empty());
    assert_eq!(after, alone_after);
    assert_eq!(finals(&log), finals(&alone));
    assert_eq!(current, finals(&alone));
    app.shutdown();

    // The archive: every completed time once, across the versions, as version 1 alone has it.
    let batches: Vec<Vec<RecordBatch>> = (1..=4).map(|v| archived(dir.path(), v)).collect();
    let mut all: Vec<(String, u64)> = batches.iter().flat_map(|b| keys(b)).collect();
    let mut expected = alone_keys.clone();
    all.sort();
    expected.sort();
    assert_eq!(all, expected, "the archive lost or repeated no row");
    assert!(batches[0][0].column_by_name("shadow_value").is_none());
    // Versions 2 and 4: nfl_wp's values and the GBT's beside them; version 3 the other way.
    for (version, model, shadow) in [(2, MODEL, SHADOW), (3, SHADOW, MODEL), (4, MODEL, SHADOW)] {
        let (rows, differ) = check_shadow_archive(&batches[version - 1], model, shadow);
        println!("version {version}: {rows} archived rows, the models differ on {differ}");
        assert!(
            rows > 0 && differ * 2 > rows,
            "version {version}: the models disagree"
        );
    }
}

/// Promote and rollback refused, over HTTP and from the command line: no shadow to promote,
/// no earlier version to roll back to, no such pipeline. A refusal changes nothing.
#[test]
fn promote_and_rollback_say_why_they_cannot() {
    let topic = "nfl.swap.refused";
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::mock(&[(topic, 1), (&format!("{topic}.dead-letters"), 1)]);
    let mut cfg = cfg(&cluster.brokers, topic);
    cfg.server.admin_listen = "127.0.0.1:0".into();
    let app = start(&cfg, &[v1(topic, dir.path())]);
    let url = format!("http://{}", app.admin_addr.unwrap());
    let sideline = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sideline"))
            .args(args)
            .args(["--admin", &url])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (status, body) = admin(&app, "POST", &format!("/pipelines/{PIPELINE}/promote"), "");
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("no shadow model"));
    let (ok, _, stderr) = sideline(&["promote", PIPELINE]);
    assert!(!ok && stderr.contains("no shadow model"), "{stderr}");

    let (status, body) = admin(&app, "POST", &format!("/pipelines/{PIPELINE}/rollback"), "");
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("no version before 1"));
    let (ok, _, stderr) = sideline(&["rollback", PIPELINE]);
    assert!(!ok && stderr.contains("no version before 1"), "{stderr}");

    let (status, body) = admin(&app, "POST", "/pipelines/nope/promote", "");
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert_eq!(app.history(PIPELINE).len(), 1, "nothing was deployed");

    // With a shadow, the command line promotes (and the list shows both models).
    let (status, _) = admin(
        &app,
        "PUT",
        &format!("/pipelines/{PIPELINE}"),
        &v2(topic, dir.path()),
    );
    assert_eq!(status, 200);
    let (ok, stdout, stderr) = sideline(&["pipelines"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("nfl_win_probability v1 (v2 warming)")
            && stdout.contains("model nfl_wp/v1"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = sideline(&["promote", PIPELINE]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("deployed nfl_win_probability v3: warming"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = sideline(&["rollback", PIPELINE]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("v4"), "{stdout}");
    let versions: Vec<(u32, String)> = app
        .history(PIPELINE)
        .iter()
        .map(|p| (p.version, sideline::deploy_cli::summary(p)))
        .collect();
    // v2 and then v3 were replaced while still warming up (nothing is fed here), so neither
    // stays in the history: the rollback went back to v1, the last version that went live.
    let numbers: Vec<u32> = versions.iter().map(|v| v.0).collect();
    assert_eq!(numbers, [1, 4], "{versions:?}");
    assert!(versions[1].1.contains("model nfl_wp/v1"), "{versions:?}");
    assert!(!versions[1].1.contains("shadow"), "{versions:?}");
    app.shutdown();
}

/// A promoted version survives a restart: the checkpoint holds the live version's definition,
/// and a restarted engine goes on with it rather than with the older file of the pipelines
/// directory. What it forgets is the history: nothing to roll back to.
#[test]
fn a_promoted_version_survives_a_restart() {
    let topic = "nfl.swap.restart";
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("nfl.toml"),
        v2(topic, &dir.path().join("archive")),
    )
    .unwrap();
    let cluster = Cluster::mock(&[(topic, 2), (&format!("{topic}.dead-letters"), 1)]);
    produce_all(&cluster.brokers, topic, &fixture_lines());
    let mut cfg = cfg(&cluster.brokers, topic);
    cfg.engine.pipelines = pipelines.display().to_string();
    cfg.engine.checkpoint_dir = dir.path().join("checkpoints").display().to_string();
    cfg.engine.checkpoint_interval_ms = 100;
    cfg.kafka.stop_at_end = false;

    let app = App::start(&cfg).unwrap();
    app.deploy_configured().unwrap();
    let log = std::thread::scope(|s| {
        let engine = s.spawn(|| run_engine(&app).1);
        wait_live(&app, 2);
        let d = app.promote(PIPELINE).unwrap();
        assert_eq!(d.version, 3);
        wait_live(&app, 3);
        app.stop.drain();
        engine.join().unwrap()
    });
    assert_eq!(log.last().unwrap().model_version, SHADOW);
    app.shutdown();

    let app = App::start(&cfg).unwrap();
    let deployed = app.deploy_configured().unwrap();
    assert_eq!(deployed[0].version, 3, "the checkpoint's version goes on");
    let live = app.publisher.lock().unwrap().pipelines()[0].0.clone();
    assert_eq!(
        sideline::deploy_cli::summary(&live)
            .split(", model ")
            .nth(1),
        Some(format!("{SHADOW} (shadow {MODEL})").as_str())
    );
    assert_eq!(
        live.shadow.as_ref().map(|s| s.name.as_str()),
        Some("nfl_wp")
    );
    match app.rollback(PIPELINE) {
        Err(sideline::app::DeployError::NotFound(e)) => assert!(e.contains("no version before 3")),
        other => panic!("expected no rollback after a restart, got {other:?}"),
    }
    app.shutdown();
}

//! The admin endpoint against a running engine (mock cluster): refused deploys say why, with
//! `file:line:column` for an invalid file; a new pipeline goes live next to the running one;
//! `sideline deploy`, `pipelines` and `remove` drive it from the command line.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const TOPIC: &str = "nfl.admin";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A request's status and JSON body.
fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut resp = result.unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

fn put(admin: &str, name: &str, file: &str, text: &str) -> (u16, Value) {
    answer(
        agent()
            .put(format!("{admin}/pipelines/{name}"))
            .header("X-Sideline-File", file)
            .send(text),
    )
}

/// The NFL pipeline as another pipeline, `nfl_copy`, with its own channel.
fn nfl_copy(version: u32) -> String {
    let text = nfl_pipeline(&[TOPIC]);
    let out = text
        .replace("name = \"nfl_win_probability\"", "name = \"nfl_copy\"")
        .replace(
            "channel = \"nfl.win_probability\"",
            "channel = \"nfl.copy\"",
        )
        .replace("version = 1", &format!("version = {version}"));
    assert_eq!(out.matches("nfl_copy").count(), 1);
    assert_eq!(out.matches("nfl.copy").count(), 1);
    out
}

fn sideline(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sideline"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn deploy_list_and_remove_over_http_and_from_the_command_line() {
    let cluster = Cluster::mock(&[(TOPIC, 2), (&format!("{TOPIC}.dead-letters"), 1)]);
    produce_all(&cluster.brokers, TOPIC, &fixture_lines()[..500]);
    let mut cfg = config(&cluster.brokers, TOPIC, 1);
    cfg.server.admin_listen = "127.0.0.1:0".into();
    cfg.kafka.stop_at_end = false;
    let app = start(&cfg, &[nfl_pipeline(&[TOPIC])]);
    let admin = format!(
        "http://{}",
        app.admin_addr.expect("the admin endpoint is up")
    );

    std::thread::scope(|s| {
        let engine = s.spawn(|| run_engine(&app));

        // An invalid file: 400 with every diagnostic, named as the header says.
        let broken = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/pipelines/invalid/unknown_event_field.toml");
        let text = std::fs::read_to_string(&broken).unwrap();
        let (status, body) = put(&admin, "broken", "my/broken.toml", &text);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "invalid_pipeline");
        let errors = body["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["file"] == "my/broken.toml"
                && e["line"] == 18
                && e["column"] == 11
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains("unknown event field `home_pionts`")
                && e["hint"] == "did you mean `home_points`?"),
            "{body}"
        );

        // The path must name the file's pipeline.
        let (status, body) = put(&admin, "other", "copy.toml", &nfl_copy(1));
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("conflict")),
            "{body}"
        );

        // A new pipeline goes live next to the running one.
        let (status, body) = put(&admin, "nfl_copy", "copy.toml", &nfl_copy(1));
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            serde_json::json!({"pipeline": "nfl_copy", "version": 1, "state": "live"})
        );
        let (status, body) = answer(agent().get(format!("{admin}/pipelines")).call());
        assert_eq!(status, 200);
        let mut names: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["nfl_copy", "nfl_win_probability"], "{body}");
        let copy = body
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "nfl_copy")
            .unwrap();
        assert_eq!(copy["channels"], serde_json::json!(["nfl.copy"]));

        // The same version again: refused, and what runs is unchanged.
        let (status, body) = put(&admin, "nfl_copy", "copy.toml", &nfl_copy(1));
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("conflict")),
            "{body}"
        );

        // The command line: a new version is validated locally, sent, and warms up.
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("nfl_copy.toml");
        std::fs::write(&v2, nfl_copy(2)).unwrap();
        let v2 = v2.to_str().unwrap();
        let (ok, stdout, stderr) = sideline(&["deploy", v2, "--admin", &admin]);
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.contains("deployed nfl_copy v2: warming"), "{stdout}");
        // Sent again, the server refuses it: non-zero, with the server's reason.
        let (ok, stdout, stderr) = sideline(&["deploy", v2, "--admin", &admin]);
        assert!(!ok, "{stdout}");
        assert!(stderr.contains("409 conflict"), "{stderr}");
        // An invalid file is never sent.
        let file = "tests/pipelines/invalid/derived_cycle.toml";
        let (ok, stdout, stderr) = sideline(&["deploy", file, "--admin", &admin]);
        assert!(!ok, "{stdout}");
        assert!(
            stderr.contains(&format!(
                "{file}:18:22: error: derived features form a cycle"
            )),
            "{stderr}"
        );
        assert!(stderr.contains("is invalid: not sent"), "{stderr}");

        let (ok, stdout, stderr) = sideline(&["pipelines", "--admin", &admin]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("nfl_win_probability v1 nfl"), "{stdout}");
        assert!(stdout.contains("nfl_copy v"), "{stdout}");

        // Removal: once, then there is nothing to remove.
        let (status, body) = answer(agent().delete(format!("{admin}/pipelines/nfl_copy")).call());
        assert_eq!(status, 200, "{body}");
        let (status, body) = answer(agent().delete(format!("{admin}/pipelines/nfl_copy")).call());
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{body}"
        );
        let (ok, _, stderr) = sideline(&["remove", "nfl_copy", "--admin", &admin]);
        assert!(!ok);
        assert!(stderr.contains("404 not_found"), "{stderr}");
        let (_, body) = answer(agent().get(format!("{admin}/pipelines")).call());
        assert_eq!(body.as_array().unwrap().len(), 1, "{body}");

        app.stop.stop();
        engine.join().unwrap();
    });
    app.shutdown();
}

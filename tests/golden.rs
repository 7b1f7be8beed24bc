//! Golden tests, one per pipeline file, discovered by glob: every `pipelines/*.toml` needs a
//! directory `tests/golden/<file stem>/` with
//!
//! - `input.jsonl`: game events (a few games of the sport's fixture), produced to the
//!   pipeline's first topic;
//! - `expected.jsonl`: the delta log the engine writes for them, one JSON delta per line.
//!
//! Each pipeline runs end to end, unchanged, through librdkafka's in-process mock cluster (its
//! own topics, 3 partitions each, plus a dead-letter topic) on 2 workers until the input is
//! consumed; the delta log must equal `expected.jsonl` byte for byte. Besides, the log is not
//! empty, names the pipeline in every delta, and a probability (a `[model] output` that says
//! "probability") stays within [0, 1].
//!
//! After a deliberate change, regenerate and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test --test golden
//! git diff tests/golden/
//! ```

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use sideline::delta::Delta;
use sideline::event::GameEvent;
use sideline::pipeline::plan::Plan;
use sideline::pipeline::spec::PipelineSpec;
use sideline::pipeline::Registry;

const PIPELINES: &str = "pipelines";
const GOLDEN: &str = "tests/golden";
/// Partitions of every input topic.
const PARTITIONS: i32 = 3;
const WORKERS: usize = 2;
/// Differing lines shown on a mismatch.
const SHOWN: usize = 10;

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0")
}

#[test]
fn every_pipeline_matches_its_golden_delta_log() {
    let files = sideline::pipeline::files_in(Path::new(PIPELINES)).unwrap();
    assert!(!files.is_empty(), "no pipeline files in {PIPELINES}/");
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = check(file) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden tests failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// Runs one pipeline over its golden input; `Err` says what is wrong.
fn check(file: &Path) -> Result<(), String> {
    let stem = file.file_stem().unwrap().to_string_lossy().to_string();
    let dir = Path::new(GOLDEN).join(&stem);
    let input_path = dir.join("input.jsonl");
    let expected_path = dir.join("expected.jsonl");
    if !input_path.is_file() {
        return Err(format!(
            "{}: no golden input: add {} (a few games of the sport's fixture), then run \
             UPDATE_GOLDEN=1 cargo test --test golden and review {}",
            file.display(),
            input_path.display(),
            expected_path.display()
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let plan = sideline::pipeline::plan::plan(
        &file.display().to_string(),
        &text,
        &Registry::new(Some("models".into())),
    )
    .map_err(|e| format!("{} is invalid:\n{e}", file.display()))?;
    let input = std::fs::read_to_string(&input_path).unwrap();
    let lines: Vec<String> = input
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();

    let started = std::time::Instant::now();
    let log = run(&plan, &text, &lines);
    let bytes = log_bytes(&log);
    println!(
        "golden {stem}: {} events -> {} deltas in {:.1?}",
        lines.len(),
        log.len(),
        started.elapsed()
    );
    summarise(&stem, &lines, &log);

    // Properties that hold whatever the expected file says.
    if log.is_empty() {
        return Err(format!("{stem}: the delta log is empty"));
    }
    if let Some(d) = log.iter().find(|d| d.pipeline != plan.name) {
        return Err(format!(
            "{stem}: delta {} names pipeline `{}`, not `{}`",
            d.seq, d.pipeline, plan.name
        ));
    }
    if is_probability(&text) {
        if let Some(d) = log.iter().find(|d| !(0.0..=1.0).contains(&d.new)) {
            return Err(format!(
                "{stem}: delta {} (game {}) has value {}, outside [0, 1]",
                d.seq, d.game_id, d.new
            ));
        }
    }

    if update() {
        std::fs::write(&expected_path, &bytes).unwrap();
        println!(
            "golden {stem}: UPDATE_GOLDEN set: wrote {} ({} deltas)",
            expected_path.display(),
            log.len()
        );
        return Ok(());
    }
    let expected = std::fs::read(&expected_path).map_err(|e| {
        format!(
            "{}: {e}: generate it with UPDATE_GOLDEN=1 cargo test --test golden",
            expected_path.display()
        )
    })?;
    if expected != bytes {
        return Err(diff(&expected_path, &expected, &bytes));
    }
    Ok(())
}

/// The pipeline, as written, over a fresh mock cluster holding `lines` in its first topic.
fn run(plan: &Plan, text: &str, lines: &[String]) -> Vec<Delta> {
    let first = plan.topics[0].clone();
    let dead_letters = format!("{first}.dead-letters");
    let mut topics: Vec<(&str, i32)> = plan
        .topics
        .iter()
        .map(|t| (t.as_str(), PARTITIONS))
        .collect();
    topics.push((&dead_letters, 1));
    let cluster = Cluster::mock(&topics);
    produce_all(&cluster.brokers, &first, lines);
    let cfg = config(&cluster.brokers, &first, WORKERS);
    let app = start(&cfg, &[text.to_string()]);
    let (stats, log) = run_engine(&app);
    app.shutdown();
    assert_eq!(
        (stats.accepted as usize, stats.rejected),
        (lines.len(), 0),
        "{}: every golden input event is accepted",
        plan.name
    );
    log
}

/// A probability pipeline says so in `[model] output`.
fn is_probability(text: &str) -> bool {
    let spec: PipelineSpec = toml::from_str(text).expect("a valid pipeline parses");
    let output = spec.model.get().output.clone().unwrap_or_default();
    output.to_lowercase().contains("probability")
}

/// The first differing lines (at most [`SHOWN`]), as `-expected` / `+actual` pairs.
fn diff(path: &Path, expected: &[u8], actual: &[u8]) -> String {
    let exp: Vec<&str> = std::str::from_utf8(expected)
        .unwrap_or("")
        .lines()
        .collect();
    let act: Vec<&str> = std::str::from_utf8(actual).unwrap_or("").lines().collect();
    let mut out = format!(
        "{} differs from the delta log ({} expected lines, {} actual); first differences:\n\
         --- {} (expected)\n+++ delta log (actual)",
        path.display(),
        exp.len(),
        act.len(),
        path.display()
    );
    let mut shown = 0;
    for i in 0..exp.len().max(act.len()) {
        let (e, a) = (exp.get(i), act.get(i));
        if e == a {
            continue;
        }
        out.push_str(&format!("\n@@ line {} @@", i + 1));
        if let Some(e) = e {
            out.push_str(&format!("\n-{e}"));
        }
        if let Some(a) = a {
            out.push_str(&format!("\n+{a}"));
        }
        shown += 1;
        if shown == SHOWN {
            break;
        }
    }
    out.push_str(
        "\nIf the change is intended: UPDATE_GOLDEN=1 cargo test --test golden, then review \
         git diff tests/golden/",
    );
    out
}

/// One line per game: its final value beside its final score, for a person to judge.
fn summarise(stem: &str, lines: &[String], log: &[Delta]) {
    let mut last_event: BTreeMap<String, GameEvent> = BTreeMap::new();
    for l in lines {
        let e: GameEvent = serde_json::from_str(l).unwrap();
        last_event.insert(e.game_id.clone(), e);
    }
    let mut last_value: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for d in log {
        let entry = last_value.entry(&d.game_id).or_insert((0.0, 0));
        *entry = (d.new, entry.1 + 1);
    }
    for (game, e) in &last_event {
        let (value, n) = last_value
            .get(game.as_str())
            .copied()
            .unwrap_or((f64::NAN, 0));
        println!(
            "  {stem} {game}: {} {}-{} {}: final {value:.3} ({n} deltas)",
            e.home, e.home_score, e.away_score, e.away
        );
    }
}

/// Every pipeline in one engine at once, each fed its golden input on its own topics: each
/// pipeline's deltas are exactly its golden log, as when it runs alone. Pipelines share the
/// workers, the hub and the sink, and nothing else.
#[test]
fn all_pipelines_in_one_engine_give_their_golden_logs() {
    if update() {
        return;
    }
    let files = sideline::pipeline::files_in(Path::new(PIPELINES)).unwrap();
    let mut pipelines = Vec::new();
    for file in &files {
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let plan = sideline::pipeline::plan::plan(
            &file.display().to_string(),
            &text,
            &Registry::new(Some("models".into())),
        )
        .unwrap();
        let dir = Path::new(GOLDEN).join(&stem);
        let Ok(input) = std::fs::read_to_string(dir.join("input.jsonl")) else {
            continue; // the per-pipeline test reports the missing golden files
        };
        let expected = std::fs::read(dir.join("expected.jsonl")).unwrap_or_default();
        pipelines.push((plan, text, input, expected));
    }
    let mut topics: Vec<(String, i32)> = pipelines
        .iter()
        .flat_map(|(p, ..)| p.topics.iter().map(|t| (t.clone(), PARTITIONS)))
        .collect();
    topics.sort();
    topics.dedup();
    topics.push(("all.dead-letters".into(), 1));
    let refs: Vec<(&str, i32)> = topics.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    let cluster = Cluster::mock(&refs);
    for (plan, _, input, _) in &pipelines {
        let lines: Vec<String> = input
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        produce_all(&cluster.brokers, &plan.topics[0], &lines);
    }
    let cfg = config(&cluster.brokers, "all", WORKERS);
    let texts: Vec<String> = pipelines.iter().map(|(_, t, ..)| t.clone()).collect();
    let app = start(&cfg, &texts);
    let (_, log) = run_engine(&app);
    app.shutdown();
    for (plan, _, _, expected) in &pipelines {
        let own: Vec<Delta> = log
            .iter()
            .filter(|d| d.pipeline == plan.name)
            .cloned()
            .collect();
        let bytes = log_bytes(&own);
        assert!(
            bytes == *expected,
            "{}",
            diff(
                &Path::new(GOLDEN).join(&plan.name).join("expected.jsonl"),
                expected,
                &bytes
            )
        );
    }
    println!(
        "{} pipelines in one engine: {} deltas, each pipeline's equal to its golden log",
        pipelines.len(),
        log.len()
    );
}

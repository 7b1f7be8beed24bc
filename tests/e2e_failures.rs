//! Failures end the engine with their cause instead of hanging it: a worker that panics stops
//! the others. (The refusal of a missing dead-letter topic is not tested here: librdkafka's
//! mock cluster creates any topic it is asked about.)

mod common;

use std::sync::Arc;

use common::*;
use sideline::dataflow::{Model, Scorer};

/// A model that fails the way a bug would: by panicking.
struct Panics;

impl Scorer for Panics {
    fn version(&self) -> &str {
        "panics/v0"
    }
    fn score(&self, _: &[Vec<f64>]) -> Result<Vec<f64>, String> {
        panic!("model exploded")
    }
}

#[test]
fn a_panicking_worker_stops_the_engine_with_its_message() {
    let topic = "nfl.panic";
    let cluster = Cluster::mock(&[(topic, 4), ("nfl.panic.dead-letters", 1)]);
    produce_all(&cluster.brokers, topic, &fixture_lines()[..200]);
    let cfg = config(&cluster.brokers, topic, 2);
    let server = start(&cfg, &[]);
    let plan = sideline::pipeline::plan::plan(
        "nfl.toml",
        &nfl_pipeline(&[topic]),
        &sideline::pipeline::Registry::new(None),
    )
    .unwrap();
    server
        .deploy_with(plan, Model::Custom(Arc::new(Panics)))
        .unwrap();
    let err = server
        .run_engine(|_| {})
        .expect_err("the engine must fail, not hang or succeed");
    assert!(err.to_string().contains("model exploded"), "{err}");
    server.shutdown();
}

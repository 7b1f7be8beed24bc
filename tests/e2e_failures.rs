//! Failures end the engine with their cause instead of hanging it: a worker that panics stops
//! the others. (The refusal of a missing dead-letter topic is not tested here: librdkafka's
//! mock cluster creates any topic it is asked about.)

mod common;

use std::sync::Arc;

use common::*;
use sideline::dataflow::Scorer;
use sideline::features::FeatureVec;

/// A model that fails the way a bug would: by panicking.
struct Panics;

impl Scorer for Panics {
    fn version(&self) -> &str {
        "panics/v0"
    }
    fn score(&self, _: &[FeatureVec]) -> Result<Vec<f64>, String> {
        panic!("model exploded")
    }
}

#[test]
fn a_panicking_worker_stops_the_engine_with_its_message() {
    let topic = "nfl.panic";
    let cluster = Cluster::mock(&[(topic, 4), ("nfl.panic.dead-letters", 1)]);
    produce_all(&cluster.brokers, topic, &fixture_lines()[..200]);
    let cfg = config(&cluster.brokers, topic, 2);
    let server = sideline::app::Server::start(&cfg).unwrap();
    let err = server
        .run_engine(&cfg, Arc::new(Panics), |_| {})
        .expect_err("the engine must fail, not hang or succeed");
    assert!(err.to_string().contains("model exploded"), "{err}");
    server.shutdown();
}

//! A pipeline's `kafka` output (issue 3): every delta, as the same JSON subscribers get, one
//! record per delta keyed by game, with the pipeline and seq in headers.

mod common;

use std::collections::BTreeMap;

use common::*;
use sideline::delta::Delta;

#[test]
fn the_kafka_output_carries_every_delta_keyed_by_game() {
    let (input, output) = ("nfl.out.in", "nfl.out.deltas");
    let cluster = Cluster::mock(&[(input, 3), (output, 2), ("nfl.out.in.dead-letters", 1)]);
    let lines = fixture_lines()[..1500].to_vec();
    produce_all(&cluster.brokers, input, &lines);
    let text = format!(
        "{}\n[[output]]\nkind = \"kafka\"\ntopic = \"{output}\"\n",
        nfl_pipeline(&[input])
    );
    let cfg = config(&cluster.brokers, input, 2);
    let app = start(&cfg, &[text]);
    let (_, log) = run_engine(&app);
    app.shutdown();
    assert!(log.len() > 100);

    let mut got: Vec<Delta> = Vec::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for r in read_topic(&cluster.brokers, output, 2, log.len()) {
        let d: Delta = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(d.game_id.as_bytes()),
            "keyed by game"
        );
        assert_eq!(r.headers["sideline.pipeline"], "nfl_win_probability");
        assert_eq!(r.headers["sideline.seq"], d.seq.to_string());
        assert_eq!(r.headers["sideline.id"], d.id);
        // A game's deltas all on one partition, in order.
        let p = *partition_of.entry(d.game_id.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "game {} moved partition", d.game_id);
        got.push(d);
    }
    got.sort_by_key(|d| d.seq);
    assert_eq!(got.len(), log.len(), "every delta reached the topic");
    assert!(got == log, "the topic holds exactly the delta log");
}

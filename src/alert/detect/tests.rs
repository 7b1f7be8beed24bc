use super::*;

#[test]
fn median_in_place_matches_sorting() {
    for v in [
        vec![3.0],
        vec![2.0, 1.0],
        vec![5.0, 1.0, 4.0, 1.0],
        vec![0.0, -0.0, 7.0],
    ] {
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let expected = match n % 2 {
            1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        assert_eq!(median_in_place(&mut v.clone()), expected, "{v:?}");
    }
}

#[test]
fn a_zero_spread_scores_zero_or_the_cap() {
    assert_eq!(capped_ratio(0.0, 0.0), 0.0);
    assert_eq!(capped_ratio(-2.0, 0.0), -SCORE_CAP);
    assert_eq!(capped_ratio(1.0, 1e-320), SCORE_CAP);
    assert_eq!(capped_ratio(3.0, 2.0), 1.5);
    let mut d = RobustScore::new(RobustParams {
        window: 5,
        warn: 3.0,
        crit: 5.0,
        min_samples: 3,
    })
    .unwrap();
    let decisions: Vec<_> = [2.0, 2.0, 2.0, 2.0, 2.5].map(|x| d.observe(0, x)).into();
    assert_eq!(decisions[3].severity(), None, "the median itself");
    assert_eq!(
        decisions[4].severity(),
        Some(Severity::Critical),
        "off a constant window"
    );
}

#[test]
fn evidence_names_the_threshold_crossed() {
    let threshold = |d: Decision| d.into_evidence().map(|e| e.threshold);
    assert_eq!(threshold(decide(2.0, 0.0, 3.0, 6.0, None, "w")), Some(3.0));
    assert_eq!(threshold(decide(-4.0, 0.0, 3.0, 6.0, None, "w")), Some(3.0));
    assert_eq!(threshold(decide(6.0, 0.0, 3.0, 6.0, None, "w")), Some(6.0));
}

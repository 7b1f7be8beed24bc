//! Observability: Prometheus counters and gauges through the `metrics` facade, and the
//! end-to-end latency (Kafka record timestamp to socket write) in an HDR histogram.

use std::sync::{Mutex, OnceLock};

use hdrhistogram::Histogram;

fn latency() -> &'static Mutex<Histogram<u64>> {
    static H: OnceLock<Mutex<Histogram<u64>>> = OnceLock::new();
    H.get_or_init(|| {
        // 1 µs .. 1 hour, 3 significant digits.
        Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"))
    })
}

/// Records one end-to-end latency: from the Kafka record timestamp (ms since the epoch) of the
/// event behind a delta to now, when the delta was written to a subscriber's socket.
pub fn observe_e2e_latency(ingest_ms: u64) {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let us = now_us.saturating_sub(ingest_ms.saturating_mul(1000)).max(1);
    metrics::histogram!("sideline_e2e_latency_seconds").record(us as f64 / 1e6);
    if let Ok(mut h) = latency().lock() {
        let _ = h.record(us.min(3_600_000_000));
    }
}

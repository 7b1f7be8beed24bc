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

/// Installs the Prometheus exporter on `listen` (`/metrics`). Only the first call in a
/// process installs; later ones (tests running several engines) keep the first.
pub fn install_prometheus(listen: &str) -> Result<(), String> {
    if listen.is_empty() {
        return Ok(());
    }
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| format!("server.metrics-listen {listen:?}: {e}"))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("metrics exporter on {listen}: {e}"))?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// Forgets the latencies recorded so far (benchmarks measure phases apart).
pub fn reset_latency() {
    latency().lock().unwrap_or_else(|e| e.into_inner()).reset();
}

/// End-to-end latency so far: count and p50/p99/p999/max in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn latency_summary() -> LatencySummary {
    let h = latency().lock().unwrap_or_else(|e| e.into_inner());
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(
                f,
                "end-to-end latency: no delta was written to a subscriber"
            );
        }
        write!(
            f,
            "end-to-end latency (Kafka timestamp to socket write) over {} deltas: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.count, self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

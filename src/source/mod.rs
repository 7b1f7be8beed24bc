//! Sources: records in, per-game feature updates out.
//!
//! [`ingest`] is transport-free: it decodes a record, checks it against its game, applies the
//! late policy and keeps the per-partition watermarks. [`kafka`] reads records from Kafka
//! partitions and writes rejects to the dead-letter topic; [`kafka_health`] keeps what its
//! clients see of the brokers, for metrics and `GET /health`. [`frontier`] lets the workers of a
//! process agree on how far event time has safely advanced.

pub mod frontier;
pub mod ingest;
pub mod kafka;
pub mod kafka_health;

//! Checkpoints: what a restarted engine needs to go on exactly where it stopped.
//!
//! Windows are bounded and every feature is per game, so the state at event time `T` depends
//! only on the events of the games still open at `T`. A checkpoint therefore holds no
//! arrangement, only, per pipeline: the time `done` through which every delta and alert was
//! delivered, the last delta and alert numbers, and per partition how far it was read and which
//! games were still open (with the offset of each one's first record). On restart each
//! partition is read again from the first record of its oldest open game; records of games
//! that were over are skipped, the open games are recomputed, and what they yield at or before
//! `done` is suppressed. Outputs are deterministic, so the deltas after `done` come out with
//! the same numbers and bytes as before the restart.
//!
//! A game is over when its last event (its `game_end`, or a correction after it) is
//! `retention` or more before `done`: no window outlives retention, the dataflow has released
//! the game by then, and its later events are refused, so it can yield nothing more.
//!
//! On disk: `checkpoint` and `checkpoint.prev` in the checkpoint directory, each a header line
//! `sideline-checkpoint/1 <length> <sha256 hex>` and a JSON body. A new one is written to a
//! temporary file, fsynced, and renamed over the current one (linked as the previous first),
//! so a crash leaves a whole `checkpoint` at every point. A file whose header, length or hash does not match
//! is refused with the reason, and the previous one is used.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::GameKey;
use crate::source::ingest::{PartitionMark, Resume};

const FORMAT: &str = "sideline-checkpoint/1";
const CURRENT: &str = "checkpoint";
const PREVIOUS: &str = "checkpoint.prev";
const TEMP: &str = "checkpoint.tmp";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub pipelines: BTreeMap<String, PipelineCheckpoint>,
}

/// One pipeline's live version, as far as it had delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineCheckpoint {
    pub version: u32,
    /// Fingerprint of the deployed file's text: a restart with another file is logged.
    pub source: u64,
    /// Every delta and alert at or before this event time was delivered (none: nothing yet).
    pub done: Option<u64>,
    pub seq: u64,
    pub alert_seq: u64,
    pub partitions: Vec<PartitionCheckpoint>,
    /// The live version's file text. A restart deploys it instead of the configured file when
    /// its version is higher (a version deployed while running: promote, rollback, deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// An online ensemble's finished games through `done`, with their per-member losses
    /// ([`crate::dataflow::reweight`]): a restart does not read the games that were over
    /// again, so their part in the member weights is kept here, one by one for those that
    /// ended after the earliest row a restart values (so the weights at any recomputed time
    /// are exact), folded for the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished_games: Vec<crate::dataflow::FinishedGame>,
    /// The finished games before those, folded into the member weights they lead to: no
    /// row a restart values is before them ([`crate::dataflow::FinishedGames::fold_before`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_games: Option<crate::dataflow::FoldedGames>,
    /// The wall-clock (staleness) alerts open when it was taken. They are judged outside the
    /// dataflow, so a restart does not recompute them: the workers take them up again, and
    /// the game's next new event resolves each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_staleness: Vec<OpenStaleness>,
}

/// An open staleness alert: its game, its detector (by name: a restart may run an edited
/// file), and the event time of the game's last event, which it opened at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpenStaleness {
    pub game: GameKey,
    pub detector: String,
    pub opened_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    pub topic: String,
    pub partition: i32,
    /// Offset after the last record read.
    pub below: i64,
    /// The games still open, each with the offset of its first record.
    pub open: Vec<(GameKey, i64)>,
    /// The highest event time read from it.
    #[serde(default)]
    pub max_time: Option<u64>,
    /// For how long it had been read to its end (none: it was not).
    #[serde(default)]
    pub caught_up_ms: Option<u64>,
}

impl PartitionCheckpoint {
    /// What `mark` says once everything through `done` was delivered: the games not over.
    pub fn from_mark(mark: &PartitionMark, done: Option<u64>, retention_ms: u64) -> Self {
        PartitionCheckpoint {
            topic: mark.topic.clone(),
            partition: mark.partition,
            below: mark.next_offset,
            open: mark
                .reread(done, retention_ms)
                .map(|(g, first, ..)| (g.clone(), *first))
                .collect(),
            max_time: mark.max_time,
            caught_up_ms: mark.caught_up_ms,
        }
    }

    pub fn resume(&self) -> Resume {
        Resume {
            below: self.below,
            open: self.open.iter().cloned().collect(),
            max_time: self.max_time,
            caught_up_ms: self.caught_up_ms,
        }
    }
}

/// Why a checkpoint file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{file}: cannot read: {error}")]
    Io {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{file}: not a sideline checkpoint (its first line should be `{FORMAT} <length> <sha256>`)"
    )]
    Header { file: PathBuf },
    #[error("{file}: truncated: its header says {expected} bytes of body, it holds {found}")]
    Truncated {
        file: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{file}: corrupt: the body's SHA-256 does not match its header")]
    Corrupt { file: PathBuf },
    #[error("{file}: unreadable body: {error}")]
    Body {
        file: PathBuf,
        error: serde_json::Error,
    },
    #[error("no usable checkpoint in {dir}: {reasons}; move the files away to start from the beginning of the topics")]
    NoneUsable { dir: PathBuf, reasons: String },
}

/// The checkpoint directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Store> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `cp` atomically; the one it replaces becomes the previous.
    pub fn write(&self, cp: &Checkpoint) -> std::io::Result<()> {
        let body = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
        let digest = hex(&Sha256::digest(&body));
        let tmp = self.dir.join(TEMP);
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{FORMAT} {} {digest}", body.len())?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        // The current one stays in place until the new one replaces it in one rename: a crash
        // at any point leaves a whole `checkpoint`.
        let current = self.dir.join(CURRENT);
        let previous = self.dir.join(PREVIOUS);
        if current.exists() {
            let _ = fs::remove_file(&previous);
            fs::hard_link(&current, &previous)?;
        }
        fs::rename(&tmp, &current)?;
        File::open(&self.dir)?.sync_all()
    }

    /// The newest usable checkpoint, and the file it came from; `None` when there is none
    /// at all. Each refused file is logged with its reason; if every file is refused, that is
    /// an error: starting over would deliver everything again.
    pub fn load(&self) -> Result<Option<(Checkpoint, PathBuf)>, CheckpointError> {
        let mut refused = Vec::new();
        for name in [CURRENT, PREVIOUS] {
            let file = self.dir.join(name);
            if !file.exists() {
                continue;
            }
            match read(&file) {
                Ok(cp) => {
                    if !refused.is_empty() {
                        tracing::warn!(file = %file.display(), "using the previous checkpoint");
                    }
                    return Ok(Some((cp, file)));
                }
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint refused");
                    metrics::counter!("sideline_checkpoints_refused_total").increment(1);
                    refused.push(e.to_string());
                }
            }
        }
        match refused.is_empty() {
            true => Ok(None),
            false => Err(CheckpointError::NoneUsable {
                dir: self.dir.clone(),
                reasons: refused.join("; "),
            }),
        }
    }
}

/// Reads and verifies one checkpoint file.
pub fn read(file: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = fs::read(file).map_err(|error| CheckpointError::Io {
        file: file.to_path_buf(),
        error,
    })?;
    let header_error = || CheckpointError::Header {
        file: file.to_path_buf(),
    };
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(header_error)?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| header_error())?;
    let mut parts = header.split(' ');
    let (Some(FORMAT), Some(len), Some(digest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(header_error());
    };
    let expected: usize = len.parse().map_err(|_| header_error())?;
    let body = &bytes[nl + 1..];
    if body.len() != expected {
        return Err(CheckpointError::Truncated {
            file: file.to_path_buf(),
            expected,
            found: body.len(),
        });
    }
    if hex(&Sha256::digest(body)) != digest {
        return Err(CheckpointError::Corrupt {
            file: file.to_path_buf(),
        });
    }
    serde_json::from_slice(body).map_err(|error| CheckpointError::Body {
        file: file.to_path_buf(),
        error,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Checkpoint {
        let mut cp = Checkpoint::default();
        cp.pipelines.insert(
            "p".into(),
            PipelineCheckpoint {
                version: 1,
                source: 7,
                done: Some(1_000),
                seq,
                alert_seq: 2,
                partitions: vec![PartitionCheckpoint {
                    topic: "t".into(),
                    partition: 0,
                    below: 40,
                    open: vec![],
                    max_time: Some(900),
                    caught_up_ms: None,
                }],
                definition: None,
                finished_games: vec![crate::dataflow::FinishedGame {
                    time: 800,
                    game: GameKey {
                        sport: crate::event::Sport::Nfl,
                        game_id: "2018090600".into(),
                    },
                    // Written and read back bit for bit: restarted weights are the same.
                    losses: vec![0.1 + 0.2, std::f64::consts::PI / 7.0],
                }],
                // Also bit for bit: the folded state's running sums and weights.
                folded_games: Some(crate::dataflow::FoldedGames {
                    through: (
                        700,
                        GameKey {
                            sport: crate::event::Sport::Nfl,
                            game_id: "2018090900".into(),
                        },
                    ),
                    state: {
                        let spec = crate::model::online::OnlineSpec {
                            method: crate::model::online::OnlineMethod::ExpLogLoss,
                            eta: 1.0,
                            half_life_games: 50.0,
                        };
                        let mut w = crate::model::online::OnlineWeights::new(&spec, vec![0.7, 0.3]);
                        w.update(&[0.1 + 0.2, std::f64::consts::E / 3.0]);
                        w
                    },
                }),
                open_staleness: vec![],
            },
        );
        cp
    }

    #[test]
    fn a_checkpoint_without_finished_games_still_loads() {
        let mut text = serde_json::to_value(sample(1)).unwrap();
        text["pipelines"]["p"]
            .as_object_mut()
            .unwrap()
            .remove("finished_games");
        let cp: Checkpoint = serde_json::from_value(text).unwrap();
        assert!(cp.pipelines["p"].finished_games.is_empty());
    }

    #[test]
    fn a_damaged_checkpoint_is_refused_and_the_previous_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.load().unwrap().is_none(), "nothing yet");
        store.write(&sample(1)).unwrap();
        store.write(&sample(2)).unwrap();
        assert_eq!(store.load().unwrap().unwrap().0, sample(2));

        let current = dir.path().join(CURRENT);
        let whole = fs::read(&current).unwrap();
        // Truncated.
        fs::write(&current, &whole[..whole.len() - 5]).unwrap();
        let e = read(&current).unwrap_err();
        assert!(matches!(e, CheckpointError::Truncated { .. }), "{e}");
        assert_eq!(store.load().unwrap().unwrap().0, sample(1));
        // One byte changed in the body.
        let mut flipped = whole.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        fs::write(&current, &flipped).unwrap();
        let e = read(&current).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        assert_eq!(store.load().unwrap().unwrap().0, sample(1));
        // Both damaged: an error naming both, not a silent start from scratch.
        fs::write(dir.path().join(PREVIOUS), b"garbage").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("truncated") || e.contains("corrupt"), "{e}");
        assert!(e.contains("not a sideline checkpoint"), "{e}");
    }

    #[test]
    fn games_over_by_more_than_retention_are_not_replayed() {
        let g = |id: &str| GameKey {
            sport: crate::event::Sport::Nfl,
            game_id: id.into(),
        };
        let mark = PartitionMark {
            topic: "t".into(),
            partition: 0,
            next_offset: 90,
            games: vec![
                (g("over"), 0, Some(1_000), 100),
                (g("just-ended"), 30, Some(9_500), 8_000),
                (g("live"), 60, None, 9_000),
            ],
            max_time: Some(9_900),
            fresh_from: 9_800,
            caught_up_ms: Some(5_000),
        };
        let cp = PartitionCheckpoint::from_mark(&mark, Some(10_000), 1_000);
        assert_eq!(cp.open, vec![(g("just-ended"), 30), (g("live"), 60)]);
        assert_eq!(cp.resume().start(), 30);
        assert_eq!(mark.earliest_row(Some(10_000), 1_000), 8_000);
        // Before anything was delivered, every game is open.
        let cp = PartitionCheckpoint::from_mark(&mark, None, 1_000);
        assert_eq!(cp.resume().start(), 0);
        assert_eq!(mark.earliest_row(None, 1_000), 100);
    }
}

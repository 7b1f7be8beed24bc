//! The raw NFL GameCenter document, parsed so that drives and plays keep the order of the file.
//!
//! `serde_json::Value` is not used here on purpose: without serde_json's `preserve_order` feature
//! its objects are `BTreeMap`s, which would sort plays by their id as a *string* ("1000" before
//! "37"), and play ids are out of time order in about a fifth of games anyway. The file order is
//! the game order, so the maps that matter are read into `Vec`s of `(key, value)` pairs.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// One game as GameCenter published it (`<eid>.json.gz`), with drives and plays in file order.
#[derive(Clone, Debug)]
pub struct GameDoc {
    /// GameCenter eid, the top-level key of the document (`YYYYMMDDgg`).
    pub eid: String,
    pub home: TeamDoc,
    pub away: TeamDoc,
    /// Drives ordered by drive number; plays within a drive in the order of the file.
    pub drives: Vec<DriveDoc>,
    /// Scoring summary, keyed by the id of the scoring play.
    pub scrsummary: BTreeMap<String, ScoreDoc>,
}

impl GameDoc {
    /// Parses one document: `{"<eid>": {home, away, drives, scrsummary, ...}, "nextupdate": n}`.
    pub fn from_slice(bytes: &[u8]) -> Result<GameDoc, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let doc = de.deserialize_map(FileVisitor)?;
        de.end()?;
        Ok(doc)
    }

    /// All plays in game order: by drive number, then by order of appearance in the file.
    pub fn plays(&self) -> impl Iterator<Item = &PlayDoc> {
        self.drives.iter().flat_map(|d| d.plays.iter())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct TeamDoc {
    /// Team code such as `GB`.
    pub abbr: String,
    #[serde(default)]
    pub score: ScoreLine,
}

/// Points per quarter; only the final (`T`) is used.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ScoreLine {
    #[serde(rename = "T", default)]
    pub total: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct DriveDoc {
    /// Drive number (the key in `drives`).
    pub number: u32,
    pub plays: Vec<PlayDoc>,
}

#[derive(Deserialize)]
struct RawDrive {
    #[serde(default, deserialize_with = "ordered_map")]
    plays: Vec<(String, RawPlay)>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawPlay {
    qtr: u32,
    time: Option<String>,
    down: Option<u32>,
    ydstogo: Option<u32>,
    yrdln: Option<String>,
    posteam: Option<String>,
    desc: Option<String>,
    note: Option<String>,
    players: BTreeMap<String, Vec<StatDoc>>,
}

/// One play (or pseudo-play: timeouts, "END QUARTER 1", "Two-Minute Warning", ...).
#[derive(Clone, Debug, Default)]
pub struct PlayDoc {
    /// The play id (key in the drive's `plays`).
    pub id: String,
    /// Quarter, 5 and up for overtime; 0 when missing.
    pub qtr: u32,
    /// Game clock at the snap, `MM:SS` left in the quarter; empty on some pseudo-plays.
    pub time: String,
    pub down: u32,
    pub ydstogo: u32,
    /// Line of scrimmage, `"GB 25"` or `"50"`; empty on pseudo-plays.
    pub yrdln: String,
    /// Team in possession (on kickoffs: the kicking team); empty on pseudo-plays.
    pub posteam: String,
    pub desc: String,
    /// `KICKOFF`, `PUNT`, `TD`, `TIMEOUT`, ... or empty.
    pub note: String,
    /// Per-player stat entries, keyed by player id (`"0"` for team entries).
    pub players: BTreeMap<String, Vec<StatDoc>>,
}

/// One per-player stat entry of a play.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StatDoc {
    pub sequence: u32,
    #[serde(rename = "playerName")]
    pub player_name: Option<String>,
    #[serde(rename = "statId")]
    pub stat_id: u32,
    pub yards: Option<f64>,
}

/// One entry of `scrsummary`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScoreDoc {
    /// `TD`, `FG`, `SAF`; unreliable (some 2018 preseason games say `XP` for everything).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub desc: String,
    pub qtr: u32,
    /// The scoring team.
    pub team: String,
}

#[derive(Deserialize)]
struct RawGame {
    home: TeamDoc,
    away: TeamDoc,
    #[serde(deserialize_with = "drives_in_order")]
    drives: Vec<DriveDoc>,
    #[serde(default)]
    scrsummary: BTreeMap<String, ScoreDoc>,
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = GameDoc;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a GameCenter document {\"<eid>\": {...}}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GameDoc, A::Error> {
        let mut game = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "nextupdate" || game.is_some() {
                map.next_value::<IgnoredAny>()?;
            } else {
                let raw: RawGame = map.next_value()?;
                game = Some(GameDoc {
                    eid: key,
                    home: raw.home,
                    away: raw.away,
                    drives: raw.drives,
                    scrsummary: raw.scrsummary,
                });
            }
        }
        game.ok_or_else(|| de::Error::custom("no game in document"))
    }
}

/// Reads a JSON object into `(key, value)` pairs in document order.
fn ordered_map<'de, D, V>(de: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Ordered<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Ordered<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    de.deserialize_map(Ordered(PhantomData))
}

/// Reads `drives` (`{"1": {...}, ..., "crntdrv": n}`): numbered drives, sorted by number (stable).
fn drives_in_order<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<DriveDoc>, D::Error> {
    struct Drives;
    impl<'de> Visitor<'de> for Drives {
        type Value = Vec<DriveDoc>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of drives")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                match key.parse::<u32>() {
                    Ok(number) => {
                        let raw: RawDrive = map.next_value()?;
                        let plays = raw.plays.into_iter().map(|(id, p)| p.into_play(id));
                        out.push(DriveDoc {
                            number,
                            plays: plays.collect(),
                        });
                    }
                    Err(_) => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            out.sort_by_key(|d| d.number);
            Ok(out)
        }
    }
    de.deserialize_map(Drives)
}

impl RawPlay {
    fn into_play(self, id: String) -> PlayDoc {
        PlayDoc {
            id,
            qtr: self.qtr,
            time: self.time.unwrap_or_default(),
            down: self.down.unwrap_or(0),
            ydstogo: self.ydstogo.unwrap_or(0),
            yrdln: self.yrdln.unwrap_or_default(),
            posteam: self.posteam.unwrap_or_default(),
            desc: self.desc.unwrap_or_default(),
            note: self.note.unwrap_or_default(),
            players: self.players,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_file_order() {
        let text = r#"{"2018090600": {"home": {"abbr": "PHI", "score": {"T": 18}},
            "away": {"abbr": "ATL", "score": {"T": 12}},
            "drives": {"2": {"plays": {"9": {"qtr": 1}, "10": {"qtr": 1}}},
                       "1": {"plays": {"37": {"qtr": 1}, "1000": {"qtr": 1}, "52": {"qtr": 1}}},
                       "crntdrv": 2},
            "scrsummary": {}}, "nextupdate": 1}"#;
        let doc = GameDoc::from_slice(text.as_bytes()).unwrap();
        assert_eq!(doc.eid, "2018090600");
        let ids: Vec<&str> = doc.plays().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["37", "1000", "52", "9", "10"]);
        assert_eq!(doc.home.score.total, Some(18));
    }
}

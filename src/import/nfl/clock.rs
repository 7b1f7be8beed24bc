//! Game clock, field position and kickoff time: the small parsers behind the event-time rule.
//! Each rule is stated in the `//!` page of [`super`].

use super::SeasonType;

/// One minute of game clock, in ms.
const MINUTE_MS: u64 = 60_000;
/// A regulation quarter, in ms.
pub const QUARTER_MS: u64 = 15 * MINUTE_MS;

/// Parses a game clock `MM:SS` (also `M:SS` and `:SS`) into milliseconds left in the period.
/// Returns `None` for anything else (empty, garbled, seconds over 59).
pub fn parse_clock(text: &str) -> Option<u64> {
    let (m, s) = text.trim().split_once(':')?;
    let minutes: u64 = if m.is_empty() { 0 } else { digits(m)? };
    let seconds: u64 = digits(s)?;
    if seconds > 59 || s.len() != 2 {
        return None;
    }
    Some((minutes * 60 + seconds) * 1000)
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Yards from the line of scrimmage to the end zone `team` attacks, from a `yrdln` such as
/// `"GB 25"` (25 yards from GB's own goal line) or `"50"`. `None` when unparseable or outside
/// 1..=99.
pub fn yards_to_goal(yrdln: &str, team: &str) -> Option<u32> {
    let yrdln = yrdln.trim();
    let ytg = match yrdln.split_once(' ') {
        None => {
            let n: u32 = yrdln.parse().ok()?;
            (n == 50).then_some(50)?
        }
        Some((side, n)) => {
            let n: u32 = n.trim().parse().ok()?;
            if n > 50 {
                return None;
            }
            if side == team {
                100 - n
            } else {
                n
            }
        }
    };
    (1..=99).contains(&ytg).then_some(ytg)
}

/// Length of an overtime period in ms: 10 minutes in the regular season from 2017 on, 15 minutes
/// otherwise (preseason, postseason, and regular seasons before 2017).
pub fn overtime_ms(season: u32, season_type: SeasonType) -> u64 {
    if season_type == SeasonType::Reg && season >= 2017 {
        10 * MINUTE_MS
    } else {
        QUARTER_MS
    }
}

/// Length of `period` in ms (1-4: 15 minutes; 5 and up: `overtime_ms`).
pub fn period_ms(period: u32, overtime_ms: u64) -> u64 {
    if period <= 4 {
        QUARTER_MS
    } else {
        overtime_ms
    }
}

/// Game time elapsed (ms) when `clock_ms` is left in `period`: quarters 1-4 run
/// `(q-1)*15min + (15min - clock)`; overtime period `p` runs
/// `60min + (p-5)*OT + (OT - clock)`. A clock longer than its period counts as the full period.
pub fn elapsed_ms(period: u32, clock_ms: u64, overtime_ms: u64) -> u64 {
    let period = period.max(1);
    let len = period_ms(period, overtime_ms);
    let before = if period <= 4 {
        u64::from(period - 1) * QUARTER_MS
    } else {
        4 * QUARTER_MS + u64::from(period - 5) * overtime_ms
    };
    before + len - clock_ms.min(len)
}

/// Kickoff as hours and minutes on a 24-hour US Eastern clock, from schedule.json's `time`
/// (`"8:20"`) and `meridiem`. The meridiem is unreliable (`null` for many evening games, `"AM"`
/// for 8 p.m. preseason games and for the 12:30 p.m. Thanksgiving game), so every time is read
/// as p.m., except `"9:30"` marked `"AM"`: the London games, kicked off at 9:30 a.m. Eastern.
pub fn kickoff_hm(time: &str, meridiem: Option<&str>) -> Option<(u32, u32)> {
    let (h, m) = time.trim().split_once(':')?;
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if !(1..=12).contains(&h) || m > 59 {
        return None;
    }
    let morning = h == 9 && m == 30 && meridiem == Some("AM");
    let h24 = match (morning, h) {
        (true, h) => h,
        (false, 12) => 12,
        (false, h) => h + 12,
    };
    Some((h24, m))
}

/// Milliseconds since the Unix epoch of a US Eastern wall-clock time on a calendar date.
/// Daylight saving (UTC-4) runs from the second Sunday of March to the first Sunday of November
/// (the rule since 2007); otherwise UTC-5. Kickoffs are never near 2 a.m., so the change-over
/// hour itself is not handled.
pub fn eastern_to_utc_ms(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> u64 {
    let days = days_from_civil(year, month, day);
    let dst_start = nth_sunday(year, 3, 2);
    let dst_end = nth_sunday(year, 11, 1);
    let offset_h = if days >= dst_start && days < dst_end {
        4
    } else {
        5
    };
    let secs = days * 86_400 + i64::from(hour + offset_h) * 3600 + i64::from(minute) * 60;
    u64::try_from(secs).unwrap_or(0) * 1000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Day number (as `days_from_civil`) of the `n`th Sunday of a month.
fn nth_sunday(year: i32, month: u32, n: u32) -> i64 {
    let first = days_from_civil(year, month, 1);
    // 1970-01-01 was a Thursday; weekday 0 = Sunday.
    let weekday = (first + 4).rem_euclid(7);
    first + (7 - weekday) % 7 + 7 * i64::from(n - 1)
}

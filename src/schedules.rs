//! Recurring jobs: cron expressions (seconds optional) in a time zone. The
//! leader works out which slots are due with these (it has a clock; the
//! machine does not) and proposes each one; the machine fires a slot once,
//! whoever proposes it and however often.

use std::str::FromStr;

use chrono::TimeZone;
use croner::Cron;

/// A late slot still runs within this long of its time (a failover, a
/// restart); older missed slots follow the schedule's `misfire`.
pub const GRACE_MS: u64 = 60_000;

/// A parsed schedule.
#[derive(Debug)]
pub struct Parsed {
    cron: Cron,
    tz: chrono_tz::Tz,
}

/// Parses a cron expression (`sec min hour day month weekday`, seconds
/// optional) and an IANA time zone; `Err` says which is wrong.
pub fn parse(cron: &str, timezone: &str) -> Result<Parsed, String> {
    let cron = Cron::from_str(cron).map_err(|e| format!("cron {cron:?} is not valid: {e}"))?;
    let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
        format!(
            "timezone {timezone:?} is not an IANA time zone such as \"UTC\" or \"Europe/Berlin\""
        )
    })?;
    Ok(Parsed { cron, tz })
}

impl Parsed {
    fn at(&self, ms: u64) -> Option<chrono::DateTime<chrono_tz::Tz>> {
        let ms = i64::try_from(ms).ok()?;
        self.tz.timestamp_millis_opt(ms).single()
    }

    /// The first slot after `after_ms` (ms since the epoch).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let t = self
            .cron
            .find_next_occurrence(&self.at(after_ms)?, false)
            .ok()?;
        u64::try_from(t.timestamp_millis()).ok()
    }

    /// The last slot at or before `now_ms`.
    pub fn latest_until(&self, now_ms: u64) -> Option<u64> {
        let t = self
            .cron
            .find_previous_occurrence(&self.at(now_ms)?, true)
            .ok()?;
        u64::try_from(t.timestamp_millis()).ok()
    }
}

/// What the leader proposes for a schedule at `now_ms`, given the last slot
/// the log fired (0: none yet): the slot to fire and whether it enqueues a
/// job, or None when nothing is due. Every missed slot collapses into the
/// latest one: it runs if it is within [`GRACE_MS`] or `run_once` is set,
/// and is only marked as passed otherwise.
pub fn due(parsed: &Parsed, last_slot_ms: u64, run_once: bool, now_ms: u64) -> Option<(u64, bool)> {
    let latest = parsed.latest_until(now_ms)?;
    if latest <= last_slot_ms {
        return None;
    }
    let late = now_ms.saturating_sub(latest) > GRACE_MS;
    Some((latest, !late || (run_once && last_slot_ms > 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_expression_and_the_zone() {
        let p = parse("0 30 2 * * *", "UTC").unwrap();
        let day = 86_400_000;
        let slot = 2 * 3_600_000 + 30 * 60_000;
        assert_eq!(p.next_after(0), Some(slot));
        assert_eq!(p.next_after(slot), Some(day + slot));
        assert_eq!(p.latest_until(day + slot), Some(day + slot));
        let berlin = parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            berlin.next_after(0),
            Some(slot - 3_600_000),
            "02:30 in Berlin is 01:30 UTC in January"
        );
        assert!(parse("61 * * * * *", "UTC").is_err());
        assert!(parse("* * * * *", "Mars/Olympus")
            .unwrap_err()
            .contains("timezone"));
    }

    #[test]
    fn due_fires_the_latest_slot_once_and_skips_stale_ones() {
        let p = parse("* * * * * *", "UTC").unwrap();
        assert_eq!(due(&p, 0, false, 10_500), Some((10_000, true)));
        assert_eq!(due(&p, 10_000, false, 10_900), None);
        assert_eq!(
            due(&p, 10_000, false, 13_200),
            Some((13_000, true)),
            "missed slots collapse"
        );
        let hourly = parse("0 0 * * * *", "UTC").unwrap();
        let hour = 3_600_000;
        assert_eq!(
            due(&hourly, hour, false, 2 * hour + GRACE_MS + 1),
            Some((2 * hour, false))
        );
        assert_eq!(
            due(&hourly, hour, true, 2 * hour + GRACE_MS + 1),
            Some((2 * hour, true))
        );
    }
}

//! A candidate version, and its taking over from the live one (see the parent module's page
//! for what a swap does to deltas, and `alerts.rs` for what it does to alerts).

use super::alerts::{deliver_swap_alerts, swap_changes, StaleSwap};
use super::*;

pub(super) struct Candidate {
    pub(super) version: Version,
    /// Completed times beyond the live version's, not applied yet: values and alert changes.
    pub(super) queue: VecDeque<(u64, Vec<Valued>, Vec<AlertChange>)>,
    /// Its wall-clock (staleness) alert changes beyond the live version's time: delivered if
    /// it takes over.
    pub(super) alerts: VecDeque<(u64, Vec<AlertChange>)>,
    /// Its wall-clock alerts open up to the live version's time, each with its latest change:
    /// compared with the live version's at the swap.
    pub(super) stale_open: StaleOpen,
}

impl Candidate {
    /// Applies what it completed up to the live version's time `live_done`: its values decide
    /// what it would have published, its alert changes what it has open. Nothing is delivered:
    /// up to that time, the live version's deltas and alerts are the ones delivered.
    pub(super) fn catch_up(&mut self, live_done: u64) {
        while self.queue.front().is_some_and(|(t, ..)| *t <= live_done) {
            let (_, values, alerts) = self.queue.pop_front().expect("front checked");
            self.version.decide(values);
            self.version.open_alerts.track(&self.version.plan, &alerts);
        }
        while self.alerts.front().is_some_and(|(t, _)| *t <= live_done) {
            let (_, alerts) = self.alerts.pop_front().expect("front checked");
            self.stale_open.track(&self.version.plan, alerts);
        }
    }

    /// What taking over from `old` at `time` does to the wall-clock alerts.
    fn stale_swap(&mut self, old: &Version, time: u64) -> StaleSwap {
        let pending = std::mem::take(&mut self.alerts);
        let stale_open = std::mem::take(&mut self.stale_open);
        // The games it reads: all the old version's when it reads the same sport from (at
        // least) the same topics; otherwise those it has valued, up to the swap or beyond.
        let (old_plan, new_plan) = (&old.plan, &self.version.plan);
        let same_feed = new_plan.sport == old_plan.sport
            && old_plan.topics.iter().all(|t| new_plan.topics.contains(t));
        let queued: HashSet<&GameKey> = self
            .queue
            .iter()
            .flat_map(|(_, values, _)| values.iter().map(|v| &v.game))
            .collect();
        let published = &self.version.published;
        let reads = |g: &GameKey| same_feed || published.contains_key(g) || queued.contains(g);
        stale_open.swap(old, new_plan, reads, pending, time)
    }
}

impl Publisher {
    /// Hands the pipeline over to its candidate once the candidate has completed every time
    /// the live version has.
    pub(super) fn try_swap(&mut self, name: &str) {
        let Some(p) = self.pipelines.get_mut(name) else {
            return;
        };
        let Some(c) = p.candidate.as_ref() else {
            return;
        };
        let live_done = p.live.done.unwrap_or(0);
        // Only once it has completed every time the live version has: a candidate whose
        // input closed early (the engine stopping while it warms up) never takes over.
        if c.version.done.is_none_or(|d| d < live_done) {
            return;
        }
        // Nor while the live version is still rebuilding to a restart's checkpoint: what it
        // recomputes up to there was delivered before the restart, with numbers a swap's
        // deltas and alerts would take again.
        if p.delivered_through.is_some_and(|t| live_done < t) {
            return;
        }
        let mut c = p.candidate.take().expect("checked above");
        c.catch_up(live_done);
        // The alerts only the old version has open end now, as its own last changes.
        let (ended, raised) = swap_changes(&p.live, &c.version, live_done);
        deliver_swap_alerts(&self.hub, p, self.sink.as_mut(), ended);
        // So do its wall-clock alerts the new version does not have open: its runtime stops
        // here, and nothing else would end them. Those both have open stay open.
        let stale = c.stale_swap(&p.live, live_done);
        deliver_staleness(&self.hub, p, self.sink.as_mut(), stale.ended);
        // Each game moves from what the old version published to what the new one would
        // have published had it run alone. A released game the old version no longer holds
        // (it forgot the earliest released first) is final: not announced again.
        let mut games: Vec<(&GameKey, &Published)> = c.version.published.iter().collect();
        games.sort_by(|a, b| a.0.cmp(b.0));
        let released: HashSet<&GameKey> = c.version.released.iter().collect();
        let mut deltas = Numbered::default();
        for (game, now) in games {
            let previous = p.live.published.get(game);
            if previous.is_none() && released.contains(game) {
                continue;
            }
            if previous.is_some_and(|prev| prev.value == now.value) {
                continue;
            }
            p.seq += 1;
            let v = Valued {
                time: live_done,
                game: game.clone(),
                value: now.value,
                shadow: None,
                vars: now.vars.clone(),
                event_seq: now.event_seq,
                ingest_ms: 0,
                event_at: 0,
                health: [0; 5],
                result: None,
                members: Vec::new(),
                weights: now.weights.clone(),
                closed: false,
            };
            let (d, _) = delta(p.seq, &c.version, &v, previous, DeltaCause::Version);
            deltas.deltas.push(d);
            deltas.ingest.push(None);
        }
        let mut old = std::mem::replace(&mut p.live, c.version);
        tracing::info!(
            pipeline = name,
            from = old.plan.version,
            to = p.live.plan.version,
            at = live_done,
            changed = deltas.deltas.len(),
            "new pipeline version is live"
        );
        emit(
            &self.hub,
            p.live.outputs.kafka.as_ref(),
            self.sink.as_mut(),
            &p.live.plan,
            &deltas,
        );
        // The alerts only the new version has open open now, as it opened them.
        deliver_swap_alerts(&self.hub, p, self.sink.as_mut(), raised);
        // The old version's open wall-clock alerts that did not end stay open, as the new
        // version's; then its own.
        p.live.open_staleness = std::mem::take(&mut old.open_staleness);
        p.live.ended_staleness = std::mem::take(&mut old.ended_staleness);
        p.live.inherited = stale.inherited;
        deliver_staleness(&self.hub, p, self.sink.as_mut(), stale.raised);
        // Its wall-clock alert changes after the swap, before its values after it: they end
        // or keep what they judged themselves before a value's arrival ends an inherited
        // alert ([`Version::resumed`]).
        deliver_staleness(&self.hub, p, self.sink.as_mut(), stale.after);
        self.control.stop(old.id);
        self.owners.remove(&old.id);
        old.outputs.retire();
        // What the new version completed beyond the swap follows as usual: each time's values
        // and alert changes (those up to the swap were the old version's to raise).
        let candidate_done = p.live.done;
        p.live.done = Some(live_done);
        while let Some((time, values, alerts)) = c.queue.pop_front() {
            p.live.done = p.live.done.max(Some(time));
            // Archived like the live version's values: the archive misses no completed time.
            if p.delivered_through.is_none_or(|t| time > t) {
                p.live.outputs.archive(&values, &p.live.model_version);
            }
            let resumed = p.live.resumed(&values);
            let deltas = number(p, time, DeltaCause::Moved, values);
            emit(
                &self.hub,
                p.live.outputs.kafka.as_ref(),
                self.sink.as_mut(),
                &p.live.plan,
                &deltas,
            );
            p.live.open_alerts.track(&p.live.plan, &alerts);
            deliver_alerts(&self.hub, p, self.sink.as_mut(), alerts);
            deliver_staleness(&self.hub, p, self.sink.as_mut(), resumed);
        }
        if let Some(done) = candidate_done.filter(|d| *d > live_done) {
            p.live.done = p.live.done.max(Some(done));
            progress(&self.hub, &p.live.plan, done);
        }
        // The games the new version released, whether before the swap or since: the hub
        // skips those it already knows.
        p.live.newly_released = p.live.released.iter().cloned().collect();
        release(&self.hub, &mut p.live);
    }
}

//! The virtual timeline: everything that will happen to the run, by due time.

use crate::error::WorkflowError;
use crate::ids::CommandSeq;
use crate::payload::Payload;
use std::collections::BTreeMap;

/// Something due at a virtual time.
#[derive(Debug)]
pub(crate) enum Due {
    /// An attempt of the activity scheduled by command `seq`.
    Attempt { seq: CommandSeq, attempt: u32 },
    /// The timer started by command `seq` fires.
    Timer { seq: CommandSeq },
    /// A signal arrives.
    Signal { name: String, payload: Payload },
    /// Somebody asks the run to cancel.
    Cancel { reason: String },
    /// The child run started by command `seq` is run (in an environment of its own).
    Child { seq: CommandSeq },
    /// The child run started by command `seq` finished with this outcome.
    ChildDone {
        seq: CommandSeq,
        outcome: Result<Payload, WorkflowError>,
    },
}

/// Items ordered by due time and, at equal times, by the order they were scheduled, so
/// a run in a test environment is the same every time it runs.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    items: BTreeMap<(i64, i64), Due>,
    scheduled: i64,
    /// Items pushed with [`Timeline::push_first`] so far.
    first: i64,
}

impl Timeline {
    pub(crate) fn push(&mut self, at_ms: i64, due: Due) {
        self.items.insert((at_ms, self.scheduled), due);
        self.scheduled += 1;
    }

    /// Pushes an item that comes before everything else due at the same time, after the
    /// items pushed this way before it.
    pub(crate) fn push_first(&mut self, at_ms: i64, due: Due) {
        self.items.insert((at_ms, i64::MIN + self.first), due);
        self.first += 1;
    }

    /// The time of the next item.
    pub(crate) fn next_at(&self) -> Option<i64> {
        self.items.keys().next().map(|(at, _)| *at)
    }

    /// Keeps only the items `keep` says yes to (a run that continued as new leaves its
    /// activities and timers behind).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Due) -> bool) {
        self.items.retain(|_, due| keep(due));
    }

    /// The cancel requests still to come, with their times.
    pub(crate) fn cancels(&self) -> Vec<(i64, String)> {
        self.items
            .iter()
            .filter_map(|((at, _), due)| match due {
                Due::Cancel { reason } => Some((*at, reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Takes, in order, the items due by `now_ms` that `take` says yes to, leaving the
    /// others where they are.
    pub(crate) fn take_due(
        &mut self,
        now_ms: i64,
        mut take: impl FnMut(&Due) -> bool,
    ) -> Vec<(i64, Due)> {
        let keys: Vec<(i64, i64)> = self
            .items
            .iter()
            .take_while(|((at, _), _)| *at <= now_ms)
            .filter(|(_, due)| take(due))
            .map(|(key, _)| *key)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.items.remove(&key).map(|due| (key.0, due)))
            .collect()
    }

    pub(crate) fn pop(&mut self) -> Option<(i64, Due)> {
        self.items.pop_first().map(|((at, _), due)| (at, due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_by_time_then_by_scheduling_order() {
        let mut t = Timeline::default();
        t.push(20, Due::Timer { seq: CommandSeq(1) });
        t.push(10, Due::Timer { seq: CommandSeq(2) });
        t.push(20, Due::Timer { seq: CommandSeq(3) });
        assert_eq!(t.next_at(), Some(10));
        let order: Vec<_> = std::iter::from_fn(|| t.pop())
            .map(|(at, due)| match due {
                Due::Timer { seq } => (at, seq.0),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(order, vec![(10, 2), (20, 1), (20, 3)]);
        assert_eq!(t.next_at(), None);
    }
}

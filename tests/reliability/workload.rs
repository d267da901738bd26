//! The mixed workload of the crash loop and the competing-workers test: which runs to
//! start, with which inputs.

/// A run to start: its workflow, its input as JSON, and for approvals how many votes it
/// waits for.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// The workflow id.
    pub(crate) id: String,
    /// The workflow name.
    pub(crate) workflow: &'static str,
    /// The input as JSON (what `start --input` takes).
    pub(crate) input: serde_json::Value,
    /// `vote` signals the run waits for (0 for everything but approvals).
    pub(crate) votes: u32,
}

/// A mixed job drawn from `rng`.
pub(crate) fn random_job(id: String, rng: &mut crate::support::Rng) -> Job {
    let mut next = |lo, hi| rng.range(lo, hi);
    let x = next(0, 1 << 40);
    let (workflow, input, votes): (&'static str, serde_json::Value, u32) = match next(0, 100) {
        0..=19 => (
            "sequential",
            serde_json::json!({ "x": x, "n": next(3, 9) }),
            0,
        ),
        20..=34 => ("fan_out", serde_json::json!({ "x": x, "width": 8 }), 0),
        35..=54 => {
            let delays: Vec<u64> = (0..next(1, 4)).map(|_| next(10, 201)).collect();
            (
                "timers",
                serde_json::json!({ "x": x, "delays_ms": delays }),
                0,
            )
        }
        55..=69 => {
            let votes = u32::try_from(next(1, 4)).unwrap_or(1);
            (
                "approval",
                serde_json::json!({ "x": x, "votes": votes }),
                votes,
            )
        }
        70..=84 => (
            "retrying",
            serde_json::json!({ "x": x, "fail_first": next(1, 4) }),
            0,
        ),
        _ => (
            "saga",
            serde_json::json!({ "x": x, "legs": next(1, 4), "decline": next(0, 3) == 0 }),
            0,
        ),
    };
    Job {
        id,
        workflow,
        input,
        votes,
    }
}

/// A poison run: `panicky` (panics in every activation) or `spinner` (spins without
/// yielding for `spin_ms` in every activation).
pub(crate) fn poison_job(id: String, workflow: &'static str, spin_ms: u64) -> Job {
    Job {
        id,
        workflow,
        input: serde_json::json!({ "x": 7, "spin_ms": spin_ms }),
        votes: 0,
    }
}

/// A long-lived run: 10-19 timers of 50-200 ms, each followed by a step, so it has an
/// event every few hundred milliseconds for a couple of seconds (whoever owns it when a
/// worker is frozen has work to hand over).
pub(crate) fn long_job(id: String, rng: &mut crate::support::Rng) -> Job {
    let delays: Vec<u64> = (0..rng.range(10, 20)).map(|_| rng.range(50, 201)).collect();
    Job {
        id,
        workflow: "timers",
        input: serde_json::json!({ "x": rng.range(0, 1 << 40), "delays_ms": delays }),
        votes: 0,
    }
}

//! (f) Property tests: the history decoder and payload decoding on arbitrary and mutated
//! input, the replayer on random event sequences, random interleavings of completions,
//! timers and signals that must replay to the same commands (also from any crash point),
//! and S6: untrusted history files through `replay --file`.

use crate::flows;
use crate::support;
use durable::{
    ActivityError, ActivityOptions, CommandSeq, Event, EventId, EventKind, HistoryFile, Payload,
    ReplayOutcome, Replayer, RunId, RunIdentity, WorkflowError, WorkflowId,
};
use durable_core::RunMachine;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use std::sync::OnceLock;

/// Cases per property (the CI tier); `DURABLE_FULL=1` multiplies them by 10.
fn cases(ci: u32) -> u32 {
    if std::env::var_os("DURABLE_FULL").is_some() {
        ci * 10
    } else {
        ci
    }
}

fn config(ci: u32) -> Config {
    Config {
        cases: cases(ci),
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

fn identity() -> RunIdentity {
    RunIdentity {
        workflow_id: WorkflowId::from("fuzz"),
        run_id: RunId("00000000-0000-4000-8000-000000000000".into()),
    }
}

fn replayer() -> &'static Replayer {
    static R: OnceLock<Replayer> = OnceLock::new();
    R.get_or_init(|| Replayer::new(flows::base_registry()))
}

/// The corpus histories as JSON text.
fn corpus_texts() -> &'static Vec<String> {
    static T: OnceLock<Vec<String>> = OnceLock::new();
    T.get_or_init(|| {
        crate::nondeterminism::corpus()
            .runs
            .iter()
            .map(|r| std::fs::read_to_string(&r.file).expect("read"))
            .collect()
    })
}

// --- decoders ----------------------------------------------------------------------------

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// A text edit: at a position, delete some bytes and insert others.
fn arb_edits() -> impl Strategy<Value = Vec<(usize, usize, Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<usize>(),
            0_usize..8,
            prop::collection::vec(
                prop::sample::select(b"{}[]\":,0123456789-eE.tfnulx \\".to_vec()),
                0..6,
            ),
        ),
        1..6,
    )
}

fn apply_edits(text: &str, edits: &[(usize, usize, Vec<u8>)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for (at, del, ins) in edits {
        let at = at % (bytes.len() + 1);
        let end = (at + del).min(bytes.len());
        bytes.splice(at..end, ins.iter().copied());
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn history_file_parse_never_panics_on_arbitrary_text() {
    proptest!(config(5_000), |(bytes in arb_bytes(2_048))| {
        let text = String::from_utf8_lossy(&bytes);
        let _ = HistoryFile::parse(&text, "fuzz");
    });
}

#[test]
fn history_file_parse_and_replay_never_panic_on_mutated_files() {
    support::watch_panics();
    let texts = corpus_texts();
    proptest!(config(5_000), |(which in any::<usize>(), edits in arb_edits())| {
        let text = apply_edits(&texts[which % texts.len()], &edits);
        if let Ok(file) = HistoryFile::parse(&text, "fuzz") {
            let identity = RunIdentity { workflow_id: file.workflow_id.clone(), run_id: file.run_id.clone() };
            let _ = replayer().replay(identity, &file.events);
        }
    });
    support::assert_no_engine_panics();
}

/// MessagePack headers that declare big or nested content.
fn arb_msgpack() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        arb_bytes(256),
        (
            prop::sample::select(vec![
                0xdc_u8, 0xdd, 0xde, 0xdf, 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xc7, 0xc8, 0xc9
            ]),
            arb_bytes(8)
        )
            .prop_map(|(m, rest)| {
                let mut v = vec![m, 0xff, 0xff, 0xff, 0xff];
                v.extend(rest);
                v
            }),
        (1_usize..3_000, any::<u8>()).prop_map(|(depth, leaf)| {
            let mut v = vec![0x91; depth];
            v.push(leaf);
            v
        }),
    ]
}

#[test]
fn payload_decoding_never_panics_on_arbitrary_bytes() {
    proptest!(config(10_000), |(bytes in arb_msgpack())| {
        let p = Payload(bytes);
        let _ = p.to_json();
        let _ = p.decode::<String>();
        let _ = p.decode::<Vec<u64>>();
        let _ = p.decode::<Vec<String>>();
        let _ = p.decode::<std::collections::BTreeMap<String, u32>>();
        let _ = p.decode::<EventKind>();
        let _ = p.decode::<Event>();
        let _ = p.decode::<ActivityError>();
        let _ = format!("{p:?}");
    });
}

#[test]
fn payloads_decode_to_what_was_encoded() {
    proptest!(config(2_000), |(s in arb_bytes(64), n in any::<u64>(), v in prop::collection::vec(any::<u32>(), 0..16))| {
        let text = String::from_utf8_lossy(&s).into_owned();
        let value = (text, n, v);
        let p = Payload::encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(p.decode::<(String, u64, Vec<u32>)>().map_err(|e| TestCaseError::fail(e.to_string()))?, value);
        let json = serde_json::to_string(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(serde_json::from_str::<Payload>(&json).map_err(|e| TestCaseError::fail(e.to_string()))?, p);
    });
}

/// 4 GiB declared in five ways: each fails at once, without allocating it.
#[test]
fn declared_lengths_of_4_gib_fail_fast() {
    for marker in [0xdd_u8, 0xdf, 0xdb, 0xc6, 0xc9] {
        let p = Payload(vec![marker, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let began = std::time::Instant::now();
        assert!(p.to_json().is_err());
        assert!(p.decode::<Vec<u64>>().is_err());
        assert!(p.decode::<String>().is_err());
        assert!(p.decode::<Vec<u8>>().is_err());
        assert!(
            began.elapsed() < std::time::Duration::from_millis(200),
            "{marker:#x}: {:?}",
            began.elapsed()
        );
    }
}

/// Nesting depth: rmp-serde stops at 1,024 levels, serde_json at 128. A child process
/// runs the decodes on an ordinary 2 MiB thread stack, so an overflow would show as its
/// crash, not ours.
#[test]
fn deeply_nested_payloads_do_not_overflow_the_stack() {
    if std::env::var_os("HARDENING_DEEP_CHILD").is_some() {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                for depth in [10, 1_000, 1_024, 1_025, 100_000] {
                    let mut bytes = vec![0x91; depth];
                    bytes.push(0xc0);
                    let p = Payload(bytes);
                    let _ = p.to_json();
                    let _ = p.decode::<serde_json::Value>();
                    let _ = format!("{p:?}");
                    let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                    let _ = HistoryFile::parse(&json, "deep");
                    let _ = Payload::from_json(&json);
                }
            })
            .expect("spawn")
            .join()
            .expect("no panic");
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args([
            "fuzz::deeply_nested_payloads_do_not_overflow_the_stack",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HARDENING_DEEP_CHILD", "1")
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "decoding deep payloads crashed the process ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- the replayer on random event sequences ----------------------------------------------

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        Just(Payload::encode("x").expect("encode")),
        Just(Payload::encode(&7_u32).expect("encode")),
        Just(Payload::encode(&()).expect("encode")),
        arb_bytes(12).prop_map(Payload),
    ]
}

fn arb_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "echo",
        "step_b",
        "step_c",
        "go",
        "item",
        "random",
        "patch:add-b",
        "side_effect:config",
        "",
    ])
    .prop_map(str::to_owned)
}

fn arb_kind() -> impl Strategy<Value = EventKind> {
    let seq = || (0_u32..9).prop_map(CommandSeq);
    prop_oneof![
        (seq(), arb_name(), arb_payload()).prop_map(|(seq, name, input)| {
            EventKind::ActivityScheduled {
                seq,
                name,
                input,
                options: ActivityOptions::default(),
            }
        }),
        (seq(), arb_payload(), 0_u32..3).prop_map(|(seq, output, attempt)| {
            EventKind::ActivityCompleted {
                seq,
                output,
                attempt,
            }
        }),
        (seq(), any::<bool>()).prop_map(|(seq, r)| EventKind::ActivityFailed {
            seq,
            error: if r {
                ActivityError::retryable("Oops", "x")
            } else {
                ActivityError::non_retryable("No", "y")
            },
        }),
        (seq(), 0_u64..5)
            .prop_map(|(seq, duration_ms)| EventKind::TimerStarted { seq, duration_ms }),
        seq().prop_map(|seq| EventKind::TimerFired { seq }),
        (seq(), arb_name()).prop_map(|(seq, name)| EventKind::SignalAwaited { seq, name }),
        (arb_name(), arb_payload())
            .prop_map(|(name, payload)| EventKind::SignalReceived { name, payload }),
        (seq(), arb_name(), arb_payload())
            .prop_map(|(seq, name, value)| EventKind::MarkerRecorded { seq, name, value }),
        Just(EventKind::CancelRequested {
            reason: "fuzz".into()
        }),
        arb_payload().prop_map(|output| EventKind::RunCompleted { output }),
        Just(EventKind::RunFailed {
            error: WorkflowError::new("Fuzz", "z")
        }),
    ]
}

fn arb_history() -> impl Strategy<Value = Vec<Event>> {
    let start = (
        prop::sample::select(vec![
            "hd.interleave",
            "hd.seq",
            "hd.signal",
            "hd.select",
            "hd.race",
            "hd.patch",
            "hd.random",
        ]),
        arb_payload(),
        any::<u64>(),
    )
        .prop_map(|(workflow, input, seed)| EventKind::RunStarted {
            workflow: workflow.to_owned(),
            input,
            seed,
        });
    (
        prop_oneof![9 => start.boxed(), 1 => arb_kind().boxed()],
        prop::collection::vec(arb_kind(), 0..40),
        0_usize..20,
    )
        .prop_map(|(first, rest, gap)| {
            std::iter::once(first)
                .chain(rest)
                .enumerate()
                .map(|(i, kind)| Event {
                    // Now and then a number skips.
                    id: EventId(
                        u64::try_from(i + 1 + usize::from(gap == 0 && i > 3)).expect("fits"),
                    ),
                    time_ms: i64::try_from(i).expect("fits") * 10,
                    kind,
                })
                .collect()
        })
}

#[test]
fn the_replayer_never_panics_on_random_event_sequences() {
    support::watch_panics();
    proptest!(config(3_000), |(history in arb_history())| {
        let _ = replayer().replay(identity(), &history);
    });
    support::assert_no_engine_panics();
}

#[test]
fn the_replayer_never_panics_on_mutated_recorded_histories() {
    support::watch_panics();
    let corpus = crate::nondeterminism::corpus();
    proptest!(config(3_000), |(which in any::<usize>(), op in 0_u8..7, i in any::<usize>(), j in any::<usize>(), kind in arb_kind())| {
        let rec = &corpus.runs[which % corpus.runs.len()];
        let mut h = rec.events.clone();
        let n = h.len();
        let (i, j) = (i % n, j % n);
        match op {
            0 => { h.remove(i); }
            1 => { let e = h[i].clone(); h.insert(i, e); }
            2 => h.swap(i, j),
            3 => h[i].kind = kind,
            4 => h.truncate(i),
            5 => h.insert(i, Event { id: EventId(0), time_ms: 0, kind }),
            _ => { if let EventKind::ActivityCompleted { output, .. } = &mut h[i].kind { output.0.reverse(); } }
        }
        if op != 6 && op != 3 {
            for (k, e) in h.iter_mut().enumerate() {
                e.id = EventId(u64::try_from(k + 1).expect("fits"));
            }
        }
        let _ = replayer().replay(rec.identity.clone(), &h);
    });
    support::assert_no_engine_panics();
}

// --- random interleavings replay to the same commands ----------------------------------

/// A live run driven the way the worker drives it: apply one inbound event, record the
/// commands and the outcome it produced.
struct Live {
    machine: RunMachine,
    history: Vec<Event>,
}

impl Live {
    fn record(&mut self, time_ms: i64) -> Result<(), TestCaseError> {
        for (seq, cmd) in self.machine.take_commands() {
            self.push(time_ms, cmd.into_event(seq))?;
        }
        if let Some(outcome) = self.machine.take_outcome() {
            let kind = match outcome {
                Ok(output) => EventKind::RunCompleted { output },
                Err(error) => EventKind::RunFailed { error },
            };
            self.push(time_ms, kind)?;
        }
        Ok(())
    }

    fn push(&mut self, time_ms: i64, kind: EventKind) -> Result<(), TestCaseError> {
        let event = Event {
            id: EventId(self.machine.last_applied().0 + 1),
            time_ms,
            kind,
        };
        self.machine
            .apply(&event)
            .map_err(|e| TestCaseError::fail(format!("live run refused {event:?}: {e}")))?;
        self.history.push(event);
        Ok(())
    }

    fn deliver(&mut self, time_ms: i64, kind: EventKind) -> Result<(), TestCaseError> {
        self.push(time_ms, kind)?;
        self.record(time_ms)
    }

    /// The inbound events that could arrive now.
    fn possible(&self, signals_left: u32, cancelled: bool) -> Vec<(u8, CommandSeq)> {
        let mut scheduled = std::collections::BTreeSet::new();
        let mut timers = std::collections::BTreeSet::new();
        for e in &self.history {
            match &e.kind {
                EventKind::ActivityScheduled { seq, .. } => {
                    scheduled.insert(*seq);
                }
                EventKind::ActivityCompleted { seq, .. }
                | EventKind::ActivityFailed { seq, .. } => {
                    scheduled.remove(seq);
                }
                EventKind::TimerStarted { seq, .. } => {
                    timers.insert(*seq);
                }
                EventKind::TimerFired { seq } => {
                    timers.remove(seq);
                }
                _ => {}
            }
        }
        let mut out: Vec<(u8, CommandSeq)> =
            scheduled.iter().flat_map(|s| [(0, *s), (1, *s)]).collect();
        out.extend(timers.iter().map(|s| (2, *s)));
        if signals_left > 0 {
            out.extend([(3, CommandSeq(0)), (4, CommandSeq(0)), (5, CommandSeq(0))]);
        }
        if !cancelled {
            out.push((6, CommandSeq(0)));
        }
        out
    }
}

fn live_run(tag: u32, seed: u64, choices: &[u16]) -> Result<Vec<Event>, TestCaseError> {
    let registry = flows::base_registry();
    let wf = registry.find_workflow("hd.interleave").expect("registered");
    let started = Event {
        id: EventId(1),
        time_ms: 0,
        kind: EventKind::RunStarted {
            workflow: "hd.interleave".into(),
            input: Payload::encode(&tag).expect("encode"),
            seed,
        },
    };
    let machine = RunMachine::new(wf.as_ref(), identity(), &started)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut live = Live {
        machine,
        history: Vec::new(),
    };
    live.machine
        .apply(&started)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    live.history.push(started);
    live.record(0)?;
    let mut signals_left = 4;
    let mut cancelled = false;
    for (step, choice) in choices.iter().enumerate() {
        if live.machine.is_finished() {
            break;
        }
        let possible = live.possible(signals_left, cancelled);
        if possible.is_empty() {
            break;
        }
        let (what, seq) = possible[usize::from(*choice) % possible.len()];
        let time = i64::try_from(step + 1).expect("fits") * 7;
        let kind = match what {
            0 => EventKind::ActivityCompleted {
                seq,
                output: Payload::encode(&format!("out{seq}")).expect("encode"),
                attempt: 1,
            },
            1 => EventKind::ActivityFailed {
                seq,
                error: ActivityError::non_retryable("Refused", format!("no {seq}")),
            },
            2 => EventKind::TimerFired { seq },
            3 | 4 => {
                signals_left -= 1;
                let name = if what == 3 { "go" } else { "item" };
                EventKind::SignalReceived {
                    name: name.into(),
                    payload: Payload::encode(&u32::from(*choice)).expect("encode"),
                }
            }
            5 => {
                signals_left -= 1;
                EventKind::SignalReceived {
                    name: "go".into(),
                    payload: Payload::encode("not a number").expect("encode"),
                }
            }
            _ => {
                cancelled = true;
                EventKind::CancelRequested {
                    reason: "property".into(),
                }
            }
        };
        live.deliver(time, kind)?;
    }
    Ok(live.history)
}

#[test]
fn random_interleavings_replay_to_the_same_commands_from_any_crash_point() {
    support::watch_panics();
    let registry = flows::base_registry();
    let wf = registry
        .find_workflow("hd.interleave")
        .expect("registered")
        .clone();
    let finished = std::cell::Cell::new(0_u32);
    let total = std::cell::Cell::new(0_u32);
    proptest!(config(2_000), |(tag in any::<u32>(), seed in any::<u64>(), choices in prop::collection::vec(any::<u16>(), 0..24), cut in any::<usize>())| {
        let history = live_run(tag, seed, &choices)?;
        total.set(total.get() + 1);
        // The same choices give the same history.
        prop_assert_eq!(&live_run(tag, seed, &choices)?, &history);
        // Replaying the recorded history issues exactly the recorded commands.
        let report = replayer().replay(identity(), &history).map_err(|e| TestCaseError::fail(format!("{e}\n{history:#?}")))?;
        let ended = history.last().is_some_and(|e| e.kind.is_terminal());
        match (&report.outcome, ended) {
            (ReplayOutcome::Completed(_) | ReplayOutcome::Failed(_), true) => finished.set(finished.get() + 1),
            (ReplayOutcome::Waiting(_), false) => {}
            (other, _) => return Err(TestCaseError::fail(format!("replay ended {other:?}; history ended {ended}"))),
        }
        // Crash after any event: restore the prefix, continue with the same inbound
        // events, and the history comes out the same.
        let k = 1 + cut % history.len();
        let machine = durable_core::replay::restore(wf.as_ref(), identity(), &history[..k])
            .map_err(|e| TestCaseError::fail(format!("restore of {k} events: {e}")))?;
        let mut resumed = Live { machine, history: history[..k].to_vec() };
        resumed.record(history[k - 1].time_ms)?;
        for e in &history[k..] {
            if u64::try_from(resumed.history.len()).expect("fits") >= e.id.0 {
                continue;
            }
            prop_assert!(e.kind.is_inbound(), "event {} ({}) was not produced by the resumed run", e.id, e.kind.name());
            resumed.deliver(e.time_ms, e.kind.clone())?;
        }
        prop_assert_eq!(&resumed.history, &history, "resumed after event {}", k);
    });
    eprintln!(
        "{} random interleavings ({} to the end) replayed and resumed identically",
        total.get(),
        finished.get()
    );
    support::assert_no_engine_panics();
}

// --- S6: untrusted history files through the CLI -----------------------------------------

#[test]
fn s6_replay_file_on_a_fuzzed_corpus_never_panics() {
    let seed = support::seed("s6_replay_file_on_a_fuzzed_corpus_never_panics");
    let mut rng = support::Rng::new(seed);
    let dir = support::temp_dir();
    let db = dir.path().join("none.db");
    let texts = corpus_texts();
    let hostile_hex = [
        "ddffffffff",
        "dfffffffff",
        "dbffffffff",
        "c6ffffffff",
        "c9ffffffff01",
        &"91".repeat(5_000),
    ];
    let files = if std::env::var_os("DURABLE_FULL").is_some() {
        500
    } else {
        100
    };
    let mut codes = [0_usize; 3];
    let mut peak = 0;
    for i in 0..files {
        let base = &texts[rng.below(texts.len())];
        let text = match i % 4 {
            // Byte edits.
            0 => {
                let edits: Vec<(usize, usize, Vec<u8>)> = (0..1 + rng.below(4))
                    .map(|_| {
                        let (at, del, n) = (rng.below(base.len()), rng.below(6), rng.below(5));
                        (at, del, rng.bytes(n))
                    })
                    .collect();
                apply_edits(base, &edits)
            }
            // A hostile MessagePack length in one payload.
            1 => {
                let hex = hostile_hex[rng.below(hostile_hex.len())];
                let spots: Vec<usize> = base
                    .match_indices("\"msgpack\": \"")
                    .map(|(at, _)| at)
                    .collect();
                let at = spots[rng.below(spots.len())] + "\"msgpack\": \"".len();
                let end = at + base[at..].find('"').expect("closing quote");
                format!("{}{hex}{}", &base[..at], &base[end..])
            }
            // Structural edits through JSON.
            2 => {
                let mut v: serde_json::Value = serde_json::from_str(base).expect("json");
                let events = v["events"].as_array_mut().expect("events");
                let n = events.len();
                match rng.below(4) {
                    0 => {
                        events.remove(rng.below(n));
                    }
                    1 => events.swap(rng.below(n), rng.below(n)),
                    2 => {
                        let e = events[rng.below(n)].clone();
                        events.push(e);
                    }
                    _ => events[rng.below(n)]["id"] = serde_json::json!(u64::MAX),
                }
                v.to_string()
            }
            // Truncation.
            _ => base[..rng.below(base.len())].to_owned(),
        };
        let file = dir.path().join(format!("fuzzed-{i}.json"));
        std::fs::write(&file, &text).expect("write");
        let rss = dir.path().join("rss");
        let out = support::host_cli(
            "base",
            &db,
            &["replay", "--file", &file.display().to_string()],
        )
        .env("HARDENING_PEAK_RSS_OUT", &rss)
        .run();
        out.no_panic();
        match out.code {
            Some(0) => codes[0] += 1,
            Some(c @ (1 | 2)) => {
                out.refused(c, "");
                codes[usize::try_from(c).expect("small")] += 1;
            }
            other => panic!("`{}` exited {other:?}:\n{}", out.what, out.stderr),
        }
        let kib: u64 = std::fs::read_to_string(&rss)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        peak = peak.max(kib);
    }
    assert!(!db.exists(), "replay --file created no database");
    eprintln!(
        "S6: {files} fuzzed history files: {} replayed, {} diverged (exit 1), {} refused (exit 2); 0 panics; peak RSS {} MiB",
        codes[0],
        codes[1],
        codes[2],
        peak / 1024
    );
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
}

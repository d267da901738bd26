//! The debugging loop through the CLI of the order example: export a history, replay it
//! (clean and edited), reset a run to an event, cancel, retry, list by age.

use crate::support::{DbSnapshot, order, settle, temp_dir, worker};
use std::time::Duration;

fn input(name: &str) -> String {
    std::fs::read_to_string(
        crate::support::workspace_dir().join(format!("examples/data/{name}.json")),
    )
    .expect("sample input")
}

#[test]
fn export_replay_reset_and_cancel_through_the_cli() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    let ledger = dir.path().join("ledger.tsv");
    let ok = input("order-ok");
    order(&db, &["run", "order", "--id", "o1", "--input", &ok])
        .timeout(Duration::from_secs(60))
        .run()
        .ok();

    // Export, then replay the file and the stored run: both clean.
    let file = dir.path().join("o1.json");
    let file_arg = file.display().to_string();
    order(&db, &["history", "o1", "--export", &file_arg])
        .run()
        .ok();
    let out = order(&db, &["replay", "--file", &file_arg]).run();
    assert!(out.ok().contains("replays cleanly"), "{}", out.stdout);
    let out = order(&db, &["replay", "o1"]).run();
    assert!(
        out.ok().contains("ends completed, as recorded"),
        "{}",
        out.stdout
    );
    // Exporting over an existing file is refused.
    order(&db, &["history", "o1", "--export", &file_arg])
        .run()
        .expect_one_error_line(2, "cannot create");

    // An edited history (the shipment activity renamed) diverges at its command.
    let edited = dir.path().join("edited.json");
    let text = std::fs::read_to_string(&file).expect("exported file");
    std::fs::write(
        &edited,
        text.replacen("\"schedule_shipment\"", "\"ship_it\"", 1),
    )
    .expect("write edited file");
    settle(&db);
    let before = DbSnapshot::take(&db);
    let out = order(&db, &["replay", "--file", &edited.display().to_string()]).run();
    out.expect_one_error_line(1, "non-determinism at command 6");
    assert!(
        out.stdout.contains("- ") && out.stdout.contains("+ "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("ship_it"), "{}", out.stdout);
    DbSnapshot::take(&db).assert_unchanged_since(&before, "replay of an edited file");

    // Reset to event 5 (check_inventory's result): a new run; validate and inventory are
    // not executed again, payment onwards is.
    let bad = order(&db, &["reset", "o1", "--to", "999"]).run();
    bad.expect_one_error_line(2, "has no event 999");
    let new_run = order(&db, &["reset", "o1", "--to", "5"])
        .run()
        .ok()
        .trim()
        .to_owned();
    assert_eq!(new_run.len(), 36, "a run id: {new_run}");
    let log = dir.path().join("worker.log");
    let mut w = worker(&db, &[])
        .env("DURABLE_EXAMPLE_LEDGER", &ledger)
        .spawn(&log);
    std::thread::sleep(Duration::from_millis(200));
    w.assert_running();
    let out = order(&db, &["result", "o1", "--wait", "--timeout", "30"])
        .timeout(Duration::from_secs(40))
        .run();
    assert!(out.ok().contains("TRACK-A-1001"), "{}", out.stdout);
    let ledger_text = std::fs::read_to_string(&ledger).unwrap_or_default();
    let ran: Vec<&str> = ledger_text
        .lines()
        .filter(|l| l.contains(&new_run))
        .filter_map(|l| l.split('\t').next())
        .collect();
    let seq_of = |key: &str| key.rsplit('/').next().unwrap_or("").to_owned();
    let mut seqs: Vec<String> = ran.iter().map(|k| seq_of(k)).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(
        seqs,
        ["3", "4", "5", "6"],
        "steps run by the reset run: {ledger_text}"
    );

    // Cancel a run whose code does not look at cancellation: it ends as Cancelled.
    let flaky = input("order-inventory-flaky").replace(
        "\"inventory_unavailable_for\": 1",
        "\"inventory_unavailable_for\": 2",
    );
    order(&db, &["start", "order", "--id", "c1", "--input", &flaky])
        .run()
        .ok();
    order(
        &db,
        &["cancel", "c1", "--reason", "customer changed their mind"],
    )
    .run()
    .ok();
    order(&db, &["result", "c1", "--wait", "--timeout", "30"])
        .timeout(Duration::from_secs(40))
        .run()
        .expect_one_error_line(1, "Cancelled");
    order(&db, &["cancel", "c1"])
        .run()
        .expect_one_error_line(2, "already finished");
    order(&db, &["retry", "c1"])
        .run()
        .expect_one_error_line(2, "not suspended");
    w.kill();

    // List by age.
    let out = order(&db, &["list", "--since", "1h", "--json"]).run();
    assert_eq!(out.json_lines().len(), 3, "{}", out.stdout);
    let out = order(
        &db,
        &["list", "--since", "1h", "--status", "failed", "--json"],
    )
    .run();
    // o1's first run had completed before the reset, so it stays completed: only c1.
    assert_eq!(out.json_lines().len(), 1, "{}", out.stdout);
    order(&db, &["list", "--since", "soon"])
        .run()
        .expect_one_error_line(2, "--since");
}

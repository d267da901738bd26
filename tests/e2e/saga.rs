//! Sagas end to end: a worker on a real SQLite file runs a trip booking whose steps each
//! record a compensation; a failed step and a cancel both undo what was booked, in
//! reverse order.

use crate::workflows::{Running, WAIT, open, scheduled, wait_for_event};
use durable::prelude::*;
use durable::{ClientError, EventKind, SagaError};

/// Books the hotel of a trip.
#[activity]
async fn book_hotel(_ctx: ActivityContext, trip: String) -> Result<String, ActivityError> {
    Ok(format!("hotel-{trip}"))
}

/// Books the flight; trips named `no-seats` find the flight full.
#[activity]
async fn book_flight(_ctx: ActivityContext, trip: String) -> Result<String, ActivityError> {
    if trip == "no-seats" {
        return Err(ActivityError::non_retryable(
            "NoSeats",
            "the flight is full",
        ));
    }
    Ok(format!("flight-{trip}"))
}

/// Cancels a booking (the compensation of both steps).
#[activity]
async fn cancel_booking(_ctx: ActivityContext, booking: String) -> Result<(), ActivityError> {
    if booking == "car-refuses" {
        return Err(ActivityError::non_retryable(
            "CancelRefused",
            "the rental desk is closed",
        ));
    }
    Ok(())
}

/// Books the hotel, waits for the traveller to confirm, books the flight; a failure or a
/// cancel cancels what was booked.
#[workflow]
async fn trip(ctx: WorkflowContext, trip: String) -> Result<String, WorkflowError> {
    let saga = Saga::new(&ctx).continue_on_error(true);
    saga.run(async {
        let hotel = ctx.activity::<book_hotel>(trip.clone()).await?;
        saga.add(ctx.activity::<cancel_booking>(hotel.clone()));
        if trip == "with-car" {
            // A compensation that will fail, recorded before the hotel's is.
            saga.add(ctx.activity::<cancel_booking>("car-refuses".to_owned()));
        }
        let () = ctx.signal("confirm").await?;
        let flight = ctx.activity::<book_flight>(trip.clone()).await?;
        saga.add(ctx.activity::<cancel_booking>(flight.clone()));
        Ok(format!("{hotel} + {flight}"))
    })
    .await
}

fn registry() -> Registry {
    Registry::new()
        .workflow::<trip>()
        .activity::<book_hotel>()
        .activity::<book_flight>()
        .activity::<cancel_booking>()
}

/// The inputs of the completed `cancel_booking` calls, in history order.
fn cancelled_bookings(history: &[durable::Event]) -> Vec<String> {
    let mut inputs = std::collections::BTreeMap::new();
    let mut done = Vec::new();
    for e in history {
        match &e.kind {
            EventKind::ActivityScheduled {
                seq, name, input, ..
            } if name == "cancel_booking" => {
                inputs.insert(seq.0, input.decode::<String>().expect("a booking"));
            }
            EventKind::ActivityCompleted { seq, .. } => done.extend(inputs.remove(&seq.0)),
            _ => {}
        }
    }
    done
}

async fn setup(dir: &tempfile::TempDir) -> (Running, Client) {
    let store = open(&dir.path().join("d.db"));
    (
        Running::start(store.clone(), registry()),
        Client::new(store),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_trip_compensates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (worker, client) = setup(&dir).await;
    client
        .start::<trip>("t-ok", &"ok".to_owned())
        .await
        .expect("start");
    wait_for_event(&client, "t-ok", "SignalAwaited").await;
    client
        .signal(&WorkflowId::from("t-ok"), "confirm", &())
        .await
        .expect("signal");
    let out = client
        .result::<trip>("t-ok", WAIT)
        .await
        .expect("completes");
    assert_eq!(out, "hotel-ok + flight-ok");
    let history = client
        .history(&WorkflowId::from("t-ok"))
        .await
        .expect("history");
    assert_eq!(scheduled(&history), ["book_hotel", "book_flight"]);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_cancels_what_was_booked_and_fails_with_its_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (worker, client) = setup(&dir).await;
    client
        .start::<trip>("t-full", &"no-seats".to_owned())
        .await
        .expect("start");
    wait_for_event(&client, "t-full", "SignalAwaited").await;
    client
        .signal(&WorkflowId::from("t-full"), "confirm", &())
        .await
        .expect("signal");
    match client.result::<trip>("t-full", WAIT).await {
        Err(ClientError::Failed { error, .. }) => {
            assert_eq!(error.kind(), "NoSeats");
            assert_eq!(error.message(), "the flight is full");
        }
        other => panic!("expected NoSeats, got {other:?}"),
    }
    let history = client
        .history(&WorkflowId::from("t-full"))
        .await
        .expect("history");
    assert_eq!(cancelled_bookings(&history), ["hotel-no-seats"]);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_trip_still_runs_its_compensations_in_reverse_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (worker, client) = setup(&dir).await;
    client
        .start::<trip>("t-car", &"with-car".to_owned())
        .await
        .expect("start");
    wait_for_event(&client, "t-car", "SignalAwaited").await;
    client
        .cancel(&WorkflowId::from("t-car"), "plans changed")
        .await
        .expect("cancel");
    let error = match client.result::<trip>("t-car", WAIT).await {
        Err(ClientError::Failed { error, .. }) => error,
        other => panic!("expected a cancelled run, got {other:?}"),
    };
    assert_eq!(error.kind(), "Cancelled");
    assert!(
        error
            .message()
            .starts_with("the run was cancelled: plans changed; compensation failed: cancel_booking (CancelRefused"),
        "{error}"
    );
    let failures = SagaError::from_error(&error).expect("the compensation failures");
    assert_eq!(failures.failures().len(), 1);
    assert!(
        failures.not_run().is_empty(),
        "continue_on_error ran the rest"
    );
    let history = client
        .history(&WorkflowId::from("t-car"))
        .await
        .expect("history");
    let cancel_at = history
        .iter()
        .position(|e| e.kind.name() == "CancelRequested")
        .expect("the cancel is recorded");
    let first_compensation = history
        .iter()
        .position(|e| matches!(&e.kind, EventKind::ActivityScheduled { name, .. } if name == "cancel_booking"))
        .expect("compensations ran");
    assert!(
        first_compensation > cancel_at,
        "compensated after the cancel"
    );
    // The failing car compensation ran first (recorded last), then the hotel's.
    assert_eq!(cancelled_bookings(&history), ["hotel-with-car"]);
    assert_eq!(
        scheduled(&history),
        ["book_hotel", "cancel_booking", "cancel_booking"]
    );
    worker.stop().await;
}

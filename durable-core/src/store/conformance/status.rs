//! Checks of published statuses: the value a workflow publishes with `ctx.set_status` is
//! written by the commit of its activation, left alone by commits that publish nothing
//! or are refused, and kept after the run finishes.

use super::*;

async fn published(store: &SharedStore, key: crate::ids::RunKey) -> Option<String> {
    store
        .published_status(key)
        .await
        .expect("published_status")
        .map(|p| p.decode().expect("the published value decodes"))
}

/// A commit with a published status replaces the run's value; one without leaves it; a
/// refused commit writes none; a finished run keeps its last one; other runs see none.
pub async fn published_status_is_written_by_commits(open: Opener<'_>) {
    let store = open("status").await;
    let w1 = worker("w1");
    let run = start(&store, "st-1").await;
    let other = start(&store, "st-2").await;
    assert_eq!(
        published(&store, run.key).await,
        None,
        "nothing published yet"
    );

    let claimed = must_claim(&store, &w1, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            published_status: Some(payload("step 1")),
            ..commit(&claimed, &w1, 1, vec![marker(1)])
        })
        .await
        .expect("a commit with a status");
    assert_eq!(published(&store, run.key).await.as_deref(), Some("step 1"));

    store
        .commit(commit(&claimed, &w1, 2, vec![marker(2)]))
        .await
        .expect("a commit without a status");
    assert_eq!(
        published(&store, run.key).await.as_deref(),
        Some("step 1"),
        "a commit that publishes nothing leaves the previous value"
    );

    let stale = store
        .commit(Commit {
            published_status: Some(payload("stale")),
            ..commit(&claimed, &w1, 1, vec![marker(2)])
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::Fenced { .. })),
        "a commit at a stale position is refused: {stale:?}"
    );
    assert_eq!(
        published(&store, run.key).await.as_deref(),
        Some("step 1"),
        "a refused commit writes no status"
    );

    store
        .commit(Commit {
            published_status: Some(payload("done")),
            finish: Some(RunStatus::Completed),
            keep_lease: false,
            ..commit(
                &claimed,
                &w1,
                3,
                vec![EventKind::RunCompleted { output: payload(3) }],
            )
        })
        .await
        .expect("the finishing commit");
    assert_eq!(
        published(&store, run.key).await.as_deref(),
        Some("done"),
        "a finished run keeps its last value"
    );
    assert_eq!(published(&store, other.key).await, None);
}

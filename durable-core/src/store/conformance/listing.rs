//! Checks of listing runs: each filter of [`RunFilter`], alone and combined, selects
//! exactly the runs it names, newest first, up to the limit.

use super::*;

/// Every combination of the filters returns what filtering the whole list by hand
/// returns, in the same order (newest first); the limit keeps the newest.
pub async fn runs_are_listed_by_every_filter(open: Opener<'_>) {
    let store = open("listing").await;
    let w = worker("w1");
    // Six runs of two workflows, created in two groups a few milliseconds apart; the
    // first run of each workflow is completed.
    let mut started = Vec::new();
    for i in 0..6 {
        if i == 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let id = format!("list-{i}");
        let request = StartRequest {
            workflow: WORKFLOWS[i % 2].to_owned(),
            ..start_request(&id)
        };
        started.push(
            store
                .start_run(request)
                .await
                .unwrap_or_else(|e| panic!("starting {id}: {e}")),
        );
    }
    for run in &started[..2] {
        let claimed = must_claim(&store, &w, run, LONG_LEASE).await;
        complete(&store, &w, &claimed).await;
    }
    let all = store
        .list_runs(RunFilter::default())
        .await
        .expect("listing every run");
    assert_eq!(
        all.len(),
        6,
        "every run of the namespace is listed: {all:?}"
    );
    assert!(
        all.windows(2).all(|w| w[0].key.0 > w[1].key.0),
        "newest first: {all:?}"
    );
    let completed = all
        .iter()
        .filter(|r| r.status == RunStatus::Completed)
        .count();
    assert_eq!(completed, 2, "two runs were completed: {all:?}");
    let later = all
        .iter()
        .map(|r| r.created_at_ms)
        .max()
        .expect("runs were listed");
    let updated = all
        .iter()
        .map(|r| r.updated_at_ms)
        .max()
        .expect("runs were listed");

    let statuses = [None, Some(RunStatus::Running), Some(RunStatus::Completed)];
    let workflows = [None, Some(WORKFLOWS[0]), Some(WORKFLOWS[1])];
    let created = [None, Some(later)];
    let updated_before = [None, Some(updated)];
    let ids = [None, Some("list-4"), Some("list-0")];
    for status in statuses {
        for workflow in workflows {
            for created_after in created {
                for updated_before in updated_before {
                    for id in ids {
                        let filter = RunFilter {
                            status,
                            workflow: workflow.map(str::to_owned),
                            created_after_ms: created_after,
                            updated_before_ms: updated_before,
                            workflow_id: id.map(WorkflowId::from),
                            limit: 0,
                        };
                        let expected: Vec<_> = all
                            .iter()
                            .filter(|r| status.is_none_or(|s| r.status == s))
                            .filter(|r| workflow.is_none_or(|w| r.workflow == w))
                            .filter(|r| created_after.is_none_or(|t| r.created_at_ms >= t))
                            .filter(|r| updated_before.is_none_or(|t| r.updated_at_ms < t))
                            .filter(|r| id.is_none_or(|i| r.workflow_id.as_str() == i))
                            .map(|r| r.key)
                            .collect();
                        let listed: Vec<_> = store
                            .list_runs(filter.clone())
                            .await
                            .unwrap_or_else(|e| panic!("listing with {filter:?}: {e}"))
                            .into_iter()
                            .map(|r| r.key)
                            .collect();
                        assert_eq!(listed, expected, "runs listed with {filter:?}");
                        if expected.len() > 1 {
                            let limited: Vec<_> = store
                                .list_runs(RunFilter {
                                    limit: 1,
                                    ..filter.clone()
                                })
                                .await
                                .unwrap_or_else(|e| panic!("listing with {filter:?}: {e}"))
                                .into_iter()
                                .map(|r| r.key)
                                .collect();
                            assert_eq!(
                                limited,
                                expected[..1],
                                "a limit of 1 keeps the newest, with {filter:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

//! Child runs: started by their parent's commit, their outcome delivered to the parent's
//! inbox by whatever ends them, cancelled with their parent by their policy.
//!
//! Lock order across runs: a parent's row before its children's. A finishing commit
//! locks its parent's row before its own (see `commit.rs`), a cancel goes from the
//! parent down. The execution-timeout sweep and a reset lock the ending run first; a
//! deadlock with a parent ending at the same moment is detected by the server and
//! reported as busy, and the call is tried again.

use super::{Inner, PostgresStore, check_text, span_ms, to_i64};
use crate::error::{KIND_INVALID_WORKFLOW_ID, KIND_WORKFLOW_ID_IN_USE, StoreError, WorkflowError};
use crate::event::{ChildCancelPolicy, EventKind};
use crate::ids::{CommandSeq, RunId, RunKey, WorkflowId};
use crate::store::{ChildRun, ParentRun, RunFamily, RunStatus, outcome_for_parent};
use deadpool_postgres::GenericClient;

/// What the end of a run must pass on: its parent, and whether it has children to ask to
/// cancel. Parameters: namespace, run key.
pub(super) const RUN_END_SQL: &str = "SELECT parent_key, parent_seq, workflow_id,
     EXISTS (SELECT 1 FROM runs c WHERE c.namespace = $1 AND c.parent_key = $2
             AND c.status IN ('running', 'suspended') AND c.cancel_policy = 'request_cancel'
             AND NOT c.cancel_requested)
     FROM runs WHERE namespace = $1 AND run_key = $2";

/// A row of [`RUN_END_SQL`].
pub(super) struct RunEnd {
    parent_key: Option<i64>,
    parent_seq: Option<i64>,
    workflow_id: String,
    /// Read before this commit's own children were started: set it when the commit
    /// starts any, so they are asked too.
    pub(super) children_to_cancel: bool,
}

impl RunEnd {
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Self {
        RunEnd {
            parent_key: row.get(0),
            parent_seq: row.get(1),
            workflow_id: row.get(2),
            children_to_cancel: row.get(3),
        }
    }
}

fn to_seq(v: i64) -> CommandSeq {
    CommandSeq(u32::try_from(v).unwrap_or(0))
}

impl Inner {
    /// Starts the child runs of the `ChildStarted` events a commit of run `parent`
    /// appends (the caller holds the parent's row lock). A workflow id taken by any run
    /// (or invalid) starts nothing and puts a `ChildFailed` in the parent's inbox, unless
    /// the parent finishes with this commit.
    pub(super) async fn start_children(
        &self,
        c: &impl GenericClient,
        parent: i64,
        events: &[(i64, EventKind)],
        finishing: bool,
    ) -> Result<(), StoreError> {
        for (_, kind) in events {
            let EventKind::ChildStarted {
                seq,
                workflow,
                workflow_id,
                input,
                seed,
                options,
            } = kind
            else {
                continue;
            };
            let mut refused = check_text("workflow id", workflow_id.as_str())
                .err()
                .map(|e| {
                    WorkflowError::new(
                        KIND_INVALID_WORKFLOW_ID,
                        format!("cannot start child workflow {workflow}: {e}"),
                    )
                });
            if refused.is_none() {
                let timeout_ms = options
                    .execution_timeout_ms
                    .map(|t| span_ms(to_i64(t)).max(1));
                let run_id = RunId::generate();
                // Run number 1 is unique per workflow id: a taken id inserts nothing.
                let inserted = self
                    .query_opt(
                        c,
                        concat!(
                            "INSERT INTO runs (namespace, run_key, workflow_id, run_number, run_id, workflow, status,
                             created_at_ms, updated_at_ms, last_event_id, ready, execution_timeout_ms, deadline_ms,
                             parent_key, parent_seq, cancel_policy, task_queue)
                             VALUES ($1, nextval('run_keys'), $2, 1, $3, $4, 'running', ",
                            now_ms!(),
                            ", ",
                            now_ms!(),
                            ", 1, TRUE, $5::BIGINT, ",
                            now_ms!(),
                            " + $5::BIGINT, $6, $7, $8,
                             COALESCE($9, (SELECT task_queue FROM runs WHERE namespace = $1 AND run_key = $6)))
                             ON CONFLICT (namespace, workflow_id, run_number) DO NOTHING
                             RETURNING run_key, created_at_ms"
                        ),
                        &[
                            &self.namespace,
                            &workflow_id.as_str(),
                            &run_id.as_str(),
                            workflow,
                            &timeout_ms,
                            &parent,
                            &i64::from(seq.0),
                            &options.cancel_policy.as_str(),
                            &options.task_queue,
                        ],
                    )
                    .await?;
                match inserted {
                    Some(row) => {
                        let key: i64 = row.get(0);
                        let now: i64 = row.get(1);
                        self.append(
                            c,
                            key,
                            0,
                            &[(
                                now,
                                EventKind::RunStarted {
                                    workflow: workflow.clone(),
                                    input: input.clone(),
                                    seed: *seed,
                                },
                            )],
                        )
                        .await?;
                    }
                    None => {
                        refused = Some(WorkflowError::new(
                            KIND_WORKFLOW_ID_IN_USE,
                            format!(
                                "cannot start child workflow {workflow}: workflow id '{workflow_id}' is taken by another run"
                            ),
                        ));
                    }
                }
            }
            if let Some(error) = refused {
                tracing::info!(parent = parent, seq = seq.0, workflow_id = %workflow_id, kind = error.kind(),
                    "child run not started");
                if !finishing {
                    self.append_inbound(c, parent, EventKind::ChildFailed { seq: *seq, error })
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// After run `key` ended with `terminal` (its row already finished): its parent, if
    /// it has one, receives the outcome, and its children with the `request_cancel`
    /// policy are asked to cancel.
    pub(super) async fn run_ended(
        &self,
        c: &impl GenericClient,
        key: i64,
        terminal: &EventKind,
    ) -> Result<(), StoreError> {
        let Some(row) = self
            .query_opt(c, RUN_END_SQL, &[&self.namespace, &key])
            .await?
        else {
            return Ok(());
        };
        self.deliver_end(c, key, &RunEnd::from_row(&row), terminal)
            .await
    }

    /// [`Inner::run_ended`] with the run's [`RUN_END_SQL`] row already read (a commit
    /// reads it in its pipeline): nothing more is sent for a run without a parent or
    /// children to cancel.
    pub(super) async fn deliver_end(
        &self,
        c: &impl GenericClient,
        key: i64,
        end: &RunEnd,
        terminal: &EventKind,
    ) -> Result<(), StoreError> {
        if let (Some(parent_key), Some(parent_seq)) = (end.parent_key, end.parent_seq)
            && let Some(outcome) = outcome_for_parent(to_seq(parent_seq), terminal)
        {
            self.append_inbound(c, parent_key, outcome).await?;
        }
        if end.children_to_cancel {
            self.cancel_children(
                c,
                key,
                &format!("the parent run '{}' ended before this run", end.workflow_id),
            )
            .await?;
        }
        Ok(())
    }

    /// Asks the running (or suspended) children of `key` with the `request_cancel`
    /// policy, not asked before, to cancel; and their children, recursively.
    pub(super) async fn cancel_children(
        &self,
        c: &impl GenericClient,
        key: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut pending = vec![key];
        while let Some(parent) = pending.pop() {
            let rows = self
                .query(
                    c,
                    "UPDATE runs SET cancel_requested = TRUE
                     WHERE namespace = $1 AND parent_key = $2 AND status IN ('running', 'suspended')
                     AND cancel_policy = 'request_cancel' AND NOT cancel_requested
                     RETURNING run_key",
                    &[&self.namespace, &parent],
                )
                .await?;
            for row in rows {
                let child: i64 = row.get(0);
                self.append_inbound(
                    c,
                    child,
                    EventKind::CancelRequested {
                        reason: reason.to_owned(),
                    },
                )
                .await?;
                pending.push(child);
            }
        }
        Ok(())
    }

    /// Marks run `key` as asked to cancel and passes the request on to its children.
    pub(super) async fn cancel_requested(
        &self,
        c: &impl GenericClient,
        key: i64,
        workflow_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            c,
            "UPDATE runs SET cancel_requested = TRUE WHERE namespace = $1 AND run_key = $2",
            &[&self.namespace, &key],
        )
        .await?;
        self.cancel_children(
            c,
            key,
            &format!("the parent run '{workflow_id}' was cancelled: {reason}"),
        )
        .await
    }

    /// On a reset of run `old` into run `new`: the children started before the cut and
    /// not finished at it (`pending`, by command number) move to the new run, which
    /// receives again the outcome of those that finished since; outcomes in the old
    /// run's inbox are dropped (the others' belong to nobody now).
    pub(super) async fn move_children(
        &self,
        c: &impl GenericClient,
        old: i64,
        new: i64,
        pending: &std::collections::BTreeSet<u32>,
    ) -> Result<(), StoreError> {
        self.exec(
            c,
            "DELETE FROM inbox WHERE namespace = $1 AND run_key = $2
             AND kind IN ('ChildCompleted', 'ChildFailed')",
            &[&self.namespace, &old],
        )
        .await?;
        for seq in pending {
            let Some(row) = self
                .query_opt(
                    c,
                    "UPDATE runs SET parent_key = $3
                     WHERE namespace = $1 AND parent_key = $2 AND parent_seq = $4
                     RETURNING run_key, status, last_event_id",
                    &[&self.namespace, &old, &new, &i64::from(*seq)],
                )
                .await?
            else {
                continue;
            };
            let child: i64 = row.get(0);
            let status: String = row.get(1);
            let last: i64 = row.get(2);
            if status != "completed" && status != "failed" {
                continue;
            }
            let body = self
                .query_opt(
                    c,
                    "SELECT body FROM events WHERE namespace = $1 AND run_key = $2 AND event_id = $3",
                    &[&self.namespace, &child, &last],
                )
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("run {child} has no event {last}"))
                })?
                .get(0);
            let terminal = self.decode(child, last, body)?;
            if let Some(outcome) = outcome_for_parent(CommandSeq(*seq), &terminal) {
                self.append_inbound(c, new, outcome).await?;
            }
        }
        Ok(())
    }
}

impl PostgresStore {
    /// [`Store::run_family`](crate::store::Store::run_family).
    pub(super) async fn family_of(&self, key: RunKey) -> Result<RunFamily, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let parent = db
            .query_opt(
                &client,
                "SELECT p.workflow_id, p.run_id, r.parent_seq FROM runs r
                 JOIN runs p ON p.namespace = r.namespace AND p.run_key = r.parent_key
                 WHERE r.namespace = $1 AND r.run_key = $2",
                &[&db.namespace, &key.0],
            )
            .await?
            .map(|r| ParentRun {
                workflow_id: WorkflowId(r.get(0)),
                run_id: RunId(r.get(1)),
                seq: to_seq(r.get(2)),
            });
        let children = db
            .query(
                &client,
                "SELECT parent_seq, workflow_id, run_id, workflow, status, cancel_policy FROM runs
                 WHERE namespace = $1 AND parent_key = $2 ORDER BY parent_seq",
                &[&db.namespace, &key.0],
            )
            .await?
            .iter()
            .map(|r| {
                let status: String = r.get(4);
                let policy: Option<String> = r.get(5);
                ChildRun {
                    seq: to_seq(r.get(0)),
                    workflow_id: WorkflowId(r.get(1)),
                    run_id: RunId(r.get(2)),
                    workflow: r.get(3),
                    status: RunStatus::parse(&status).unwrap_or(RunStatus::Suspended),
                    cancel_policy: policy
                        .as_deref()
                        .and_then(ChildCancelPolicy::parse)
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(RunFamily { parent, children })
    }
}

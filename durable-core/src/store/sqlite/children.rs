//! Child runs: started by their parent's commit, their outcome delivered to the parent's
//! inbox by whatever ends them, cancelled with their parent by their policy.

use super::{Shared, SqliteStore, check_text, clock, sql_err, to_i64};
use crate::error::{KIND_INVALID_WORKFLOW_ID, KIND_WORKFLOW_ID_IN_USE, StoreError, WorkflowError};
use crate::event::{ChildCancelPolicy, EventKind};
use crate::ids::{CommandSeq, RunId, RunKey, WorkflowId};
use crate::store::{ChildRun, ParentRun, RunFamily, RunStatus, outcome_for_parent};
use rusqlite::{Connection, OptionalExtension, params};

fn to_seq(v: i64) -> CommandSeq {
    CommandSeq(u32::try_from(v).unwrap_or(0))
}

impl Shared {
    /// Starts the child runs of the `ChildStarted` events a commit of run `parent`
    /// appends. A workflow id taken by any run (or invalid) starts nothing and puts a
    /// `ChildFailed` in the parent's inbox, unless the parent finishes with this commit.
    /// True when a child was started.
    pub(super) fn start_children(
        &self,
        conn: &Connection,
        parent: i64,
        events: &[(i64, EventKind)],
        finishing: bool,
    ) -> Result<bool, StoreError> {
        let mut started = false;
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
            let refused = if let Err(e) = check_text("workflow id", workflow_id.as_str()) {
                Some(WorkflowError::new(
                    KIND_INVALID_WORKFLOW_ID,
                    format!("cannot start child workflow {workflow}: {e}"),
                ))
            } else if conn
                .prepare_cached("SELECT 1 FROM runs WHERE namespace = ?1 AND workflow_id = ?2")
                .map_err(sql_err)?
                .exists(params![self.namespace, workflow_id.as_str()])
                .map_err(sql_err)?
            {
                Some(WorkflowError::new(
                    KIND_WORKFLOW_ID_IN_USE,
                    format!(
                        "cannot start child workflow {workflow}: workflow id '{workflow_id}' is taken by another run"
                    ),
                ))
            } else {
                None
            };
            if let Some(error) = refused {
                tracing::info!(parent = parent, seq = seq.0, workflow_id = %workflow_id, kind = error.kind(),
                    "child run not started");
                if !finishing {
                    self.append_inbound(conn, parent, EventKind::ChildFailed { seq: *seq, error })?;
                }
                continue;
            }
            let now = clock::now_ms();
            let timeout_ms = options.execution_timeout_ms.map(|t| to_i64(t).max(1));
            let deadline = timeout_ms.map(|t| clock::host_now_ms().saturating_add(t));
            let run_id = RunId::generate();
            conn.prepare_cached(
                "INSERT INTO runs (namespace, workflow_id, run_id, workflow, status, created_at_ms, updated_at_ms,
                 last_event_id, ready, execution_timeout_ms, deadline_ms, parent_key, parent_seq, cancel_policy,
                 task_queue)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5, 1, 1, ?6, ?7, ?8, ?9, ?10,
                 COALESCE(?11, (SELECT task_queue FROM runs WHERE run_key = ?8)))",
            )
            .map_err(sql_err)?
            .execute(params![
                self.namespace,
                workflow_id.as_str(),
                run_id.as_str(),
                workflow,
                now,
                timeout_ms,
                deadline,
                parent,
                seq.0,
                options.cancel_policy.as_str(),
                options.task_queue
            ])
            .map_err(sql_err)?;
            let key = conn.last_insert_rowid();
            self.append(
                conn,
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
            )?;
            started = true;
        }
        Ok(started)
    }

    /// After run `key` ended with `terminal` (its row already finished): its parent, if
    /// it has one, receives the outcome, and its children with the `request_cancel`
    /// policy are asked to cancel.
    pub(super) fn run_ended(
        &self,
        conn: &Connection,
        key: i64,
        terminal: &EventKind,
    ) -> Result<(), StoreError> {
        let parent: Option<(Option<i64>, Option<i64>, String)> = conn
            .prepare_cached(
                "SELECT parent_key, parent_seq, workflow_id FROM runs WHERE run_key = ?1",
            )
            .map_err(sql_err)?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(sql_err)?;
        let Some((parent_key, parent_seq, workflow_id)) = parent else {
            return Ok(());
        };
        if let (Some(parent_key), Some(parent_seq)) = (parent_key, parent_seq)
            && let Some(outcome) = outcome_for_parent(to_seq(parent_seq), terminal)
        {
            self.append_inbound(conn, parent_key, outcome)?;
        }
        self.cancel_children(
            conn,
            key,
            &format!("the parent run '{workflow_id}' ended before this run"),
        )
    }

    /// Asks the running (or suspended) children of `key` with the `request_cancel`
    /// policy, not asked before, to cancel; and their children, recursively.
    pub(super) fn cancel_children(
        &self,
        conn: &Connection,
        key: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut pending = vec![key];
        while let Some(parent) = pending.pop() {
            let children: Vec<i64> = conn
                .prepare_cached(
                    "UPDATE runs SET cancel_requested = 1
                     WHERE namespace = ?1 AND parent_key = ?2 AND status IN ('running', 'suspended')
                     AND cancel_policy = 'request_cancel' AND cancel_requested = 0
                     RETURNING run_key",
                )
                .map_err(sql_err)?
                .query_map(params![self.namespace, parent], |r| r.get(0))
                .map_err(sql_err)?
                .collect::<Result<_, _>>()
                .map_err(sql_err)?;
            for child in children {
                self.append_inbound(
                    conn,
                    child,
                    EventKind::CancelRequested {
                        reason: reason.to_owned(),
                    },
                )?;
                pending.push(child);
            }
        }
        Ok(())
    }

    /// Marks run `key` as asked to cancel and passes the request on to its children.
    pub(super) fn cancel_requested(
        &self,
        conn: &Connection,
        key: i64,
        workflow_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        conn.prepare_cached("UPDATE runs SET cancel_requested = 1 WHERE run_key = ?1")
            .map_err(sql_err)?
            .execute([key])
            .map_err(sql_err)?;
        self.cancel_children(
            conn,
            key,
            &format!("the parent run '{workflow_id}' was cancelled: {reason}"),
        )
    }

    /// On a reset of run `old` into run `new`: the children started before the cut and
    /// not finished at it (`pending`, by command number) move to the new run, which
    /// receives again the outcome of those that finished since; outcomes in the old
    /// run's inbox are dropped (the others' belong to nobody now).
    pub(super) fn move_children(
        &self,
        conn: &Connection,
        old: i64,
        new: i64,
        pending: &std::collections::BTreeSet<u32>,
    ) -> Result<(), StoreError> {
        conn.prepare_cached(
            "DELETE FROM inbox WHERE run_key = ?1 AND kind IN ('ChildCompleted', 'ChildFailed')",
        )
        .map_err(sql_err)?
        .execute([old])
        .map_err(sql_err)?;
        for seq in pending {
            let child: Option<(i64, String, i64)> = conn
                .prepare_cached(
                    "UPDATE runs SET parent_key = ?3 WHERE namespace = ?1 AND parent_key = ?2 AND parent_seq = ?4
                     RETURNING run_key, status, last_event_id",
                )
                .map_err(sql_err)?
                .query_row(params![self.namespace, old, new, seq], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(sql_err)?;
            let Some((child, status, last)) = child else {
                continue;
            };
            if status != "completed" && status != "failed" {
                continue;
            }
            let body: Vec<u8> = conn
                .prepare_cached("SELECT body FROM events WHERE run_key = ?1 AND event_id = ?2")
                .map_err(sql_err)?
                .query_row(params![child, last], |r| r.get(0))
                .map_err(sql_err)?;
            let terminal = self.decode(child, last, body)?;
            if let Some(outcome) = outcome_for_parent(CommandSeq(*seq), &terminal) {
                self.append_inbound(conn, new, outcome)?;
            }
        }
        Ok(())
    }
}

impl SqliteStore {
    /// [`Store::run_family`](crate::store::Store::run_family).
    pub(super) async fn family_of(&self, key: RunKey) -> Result<RunFamily, StoreError> {
        let ns = self.shared.namespace.clone();
        self.readers
            .submit(move |conn| {
                let parent = conn
                    .prepare_cached(
                        "SELECT p.workflow_id, p.run_id, r.parent_seq FROM runs r
                         JOIN runs p ON p.run_key = r.parent_key AND p.namespace = r.namespace
                         WHERE r.namespace = ?1 AND r.run_key = ?2",
                    )
                    .map_err(sql_err)?
                    .query_row(params![ns, key.0], |r| {
                        Ok(ParentRun {
                            workflow_id: WorkflowId(r.get(0)?),
                            run_id: RunId(r.get(1)?),
                            seq: to_seq(r.get(2)?),
                        })
                    })
                    .optional()
                    .map_err(sql_err)?;
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT parent_seq, workflow_id, run_id, workflow, status, cancel_policy FROM runs
                         WHERE namespace = ?1 AND parent_key = ?2 ORDER BY parent_seq",
                    )
                    .map_err(sql_err)?;
                let children = stmt
                    .query_map(params![ns, key.0], |r| {
                        let status: String = r.get(4)?;
                        let policy: Option<String> = r.get(5)?;
                        Ok(ChildRun {
                            seq: to_seq(r.get(0)?),
                            workflow_id: WorkflowId(r.get(1)?),
                            run_id: RunId(r.get(2)?),
                            workflow: r.get(3)?,
                            status: RunStatus::parse(&status).unwrap_or(RunStatus::Suspended),
                            cancel_policy: policy
                                .as_deref()
                                .and_then(ChildCancelPolicy::parse)
                                .unwrap_or_default(),
                        })
                    })
                    .map_err(sql_err)?
                    .collect::<Result<_, _>>()
                    .map_err(sql_err)?;
                Ok(RunFamily { parent, children })
            })
            .await
    }
}

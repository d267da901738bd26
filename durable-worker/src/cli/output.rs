//! Rendering runs and events for people (tables) and scripts (JSON lines).

use durable_core::clock;
use durable_core::event::{Event, EventKind};
use durable_core::payload::Payload;
use durable_core::store::RunInfo;
use serde_json::{Value, json};

/// A payload decoded to JSON; one that does not decode is described instead.
pub(crate) fn payload_json(p: &Payload) -> Value {
    p.to_json()
        .unwrap_or_else(|e| json!({ "undecodable": e.to_string(), "bytes": p.len() }))
}

/// One event as a JSON object: `event_id`, `time`, `kind`, then the kind's fields with
/// payloads decoded.
pub(crate) fn event_json(e: &Event) -> Value {
    let mut v = json!({
        "event_id": e.id.0,
        "time": clock::format_ms(e.time_ms),
        "time_ms": e.time_ms,
        "kind": e.kind.name(),
    });
    let obj = v.as_object_mut().expect("json! built an object");
    if let Some(seq) = e.kind.seq() {
        obj.insert("seq".into(), json!(seq.0));
    }
    match &e.kind {
        EventKind::RunStarted {
            workflow, input, ..
        } => {
            obj.insert("workflow".into(), json!(workflow));
            obj.insert("payload".into(), payload_json(input));
        }
        EventKind::ActivityScheduled {
            name,
            input,
            options,
            ..
        } => {
            obj.insert("name".into(), json!(name));
            obj.insert("payload".into(), payload_json(input));
            if let Some(q) = &options.task_queue {
                obj.insert("task_queue".into(), json!(q));
            }
        }
        EventKind::ActivityCompleted {
            output, attempt, ..
        } => {
            obj.insert("attempt".into(), json!(attempt));
            obj.insert("payload".into(), payload_json(output));
        }
        EventKind::ActivityFailed { error, .. } => {
            obj.insert("attempt".into(), json!(error.attempts()));
            obj.insert(
                "error".into(),
                serde_json::to_value(error).unwrap_or(Value::Null),
            );
        }
        EventKind::TimerStarted { duration_ms, .. } => {
            obj.insert("duration_ms".into(), json!(duration_ms));
        }
        EventKind::SignalAwaited { name, .. } => {
            obj.insert("name".into(), json!(name));
        }
        EventKind::SignalReceived { name, payload } => {
            obj.insert("name".into(), json!(name));
            obj.insert("payload".into(), payload_json(payload));
        }
        EventKind::MarkerRecorded { name, value, .. } => {
            obj.insert("name".into(), json!(name));
            obj.insert("payload".into(), payload_json(value));
        }
        EventKind::ChildStarted {
            workflow,
            workflow_id,
            input,
            options,
            ..
        } => {
            obj.insert("workflow".into(), json!(workflow));
            obj.insert("workflow_id".into(), json!(workflow_id.as_str()));
            obj.insert("payload".into(), payload_json(input));
            obj.insert(
                "cancel_policy".into(),
                json!(options.cancel_policy.as_str()),
            );
            if let Some(t) = options.execution_timeout_ms {
                obj.insert("execution_timeout_ms".into(), json!(t));
            }
        }
        EventKind::ChildCompleted { output, .. } => {
            obj.insert("payload".into(), payload_json(output));
        }
        EventKind::ChildFailed { error, .. } => {
            obj.insert(
                "error".into(),
                serde_json::to_value(error).unwrap_or(Value::Null),
            );
        }
        EventKind::CancelRequested { reason } => {
            obj.insert("reason".into(), json!(reason));
        }
        EventKind::RunTimedOut { timeout_ms } => {
            obj.insert("timeout_ms".into(), json!(timeout_ms));
        }
        EventKind::RunCompleted { output } => {
            obj.insert("payload".into(), payload_json(output));
        }
        EventKind::RunFailed { error } => {
            obj.insert(
                "error".into(),
                serde_json::to_value(error).unwrap_or(Value::Null),
            );
        }
        EventKind::RunContinuedAsNew {
            workflow,
            input,
            run_id,
            ..
        } => {
            obj.insert("workflow".into(), json!(workflow));
            obj.insert("next_run_id".into(), json!(run_id.as_str()));
            obj.insert("payload".into(), payload_json(input));
        }
        _ => {}
    }
    v
}

/// One event as a table row.
pub(crate) fn event_line(e: &Event) -> String {
    let v = event_json(e);
    let seq = e.kind.seq().map(|s| format!("#{s}")).unwrap_or_default();
    let label = e.kind.label().unwrap_or_default();
    let detail = v
        .get("payload")
        .or_else(|| v.get("error"))
        .map(|p| p.to_string())
        .unwrap_or_default();
    let attempt = v
        .get("attempt")
        .map(|a| format!("attempt {a}"))
        .unwrap_or_default();
    format!(
        "{:>4}  {}  {:<18} {:<5} {:<24} {:<10} {}",
        e.id.0,
        clock::format_ms(e.time_ms),
        e.kind.name(),
        seq,
        label,
        attempt,
        truncate(&detail, 120)
    )
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// A run as a JSON object (with `task_queue` when the run is not on the default queue).
pub(crate) fn run_json(r: &RunInfo) -> Value {
    let mut v = json!({
        "workflow_id": r.workflow_id.0,
        "run_id": r.run_id.0,
        "workflow": r.workflow,
        "status": r.status.as_str(),
        "created_at": clock::format_ms(r.created_at_ms),
        "updated_at": clock::format_ms(r.updated_at_ms),
        "events": r.last_event_id.0,
        "reason": r.reason,
        "execution_deadline": r.execution_deadline_ms.map(clock::format_ms),
    });
    if !r.task_queue.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("task_queue".into(), json!(r.task_queue));
    }
    v
}

/// A run as a table row.
pub(crate) fn run_line(r: &RunInfo) -> String {
    format!(
        "{:<36} {:<16} {:<10} {:>6}  {}",
        truncate(&r.workflow_id.0, 36),
        truncate(&r.workflow, 16),
        r.status.as_str(),
        r.last_event_id.0,
        clock::format_ms(r.updated_at_ms)
    )
}

//! Wake-ups across processes with LISTEN/NOTIFY, one channel per (schema, namespace).
//!
//! A store that makes work available announces it on the channel; every store listening
//! on it wakes its workers through [`Store::work_notifier`](crate::store::Store::work_notifier).
//! Announcements are coalesced (one NOTIFY covers every change made while the previous
//! one was on its way) and sent after the change committed, outside its transaction, so
//! they never serialize commits. Workers still poll: a lost notification (a dropped
//! listening connection, a restart) only delays work until the next poll.

use super::schema::fnv64;
use deadpool_postgres::Pool;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel of a namespace in a schema: a plain identifier under PostgreSQL's 63-byte
/// limit, whatever the namespace's characters.
pub(crate) fn channel(schema: &str, namespace: &str) -> String {
    format!("durable_{:016x}", fnv64(&[schema, namespace]))
}

/// Listens on `channel` on a connection of its own, waking `local`'s waiters on every
/// notification; reconnects (with a backoff) when the connection drops.
pub(crate) fn spawn_listener(
    config: tokio_postgres::Config,
    channel: String,
    local: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            match listen(&config, &channel, &local).await {
                Ok(()) => delay = Duration::from_millis(100),
                Err(e) => {
                    tracing::debug!(error = %e, channel, "listening for wake-ups failed; polling until it is back");
                }
            }
            // Announcements made while no one listened are lost: look now.
            local.notify_waiters();
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    })
}

/// One listening connection, until it ends.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    local: &Notify,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {channel}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                done?;
                listening = true;
                local.notify_waiters();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => local.notify_waiters(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

/// Sends a NOTIFY on `channel` each time `outgoing` is signalled; signals that arrive
/// while one is being sent are covered by the next.
pub(crate) fn spawn_sender(pool: Pool, channel: String, outgoing: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            outgoing.notified().await;
            let sent = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let stmt = client
                    .prepare_cached("SELECT pg_notify($1, '')")
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .execute(&stmt, &[&channel])
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, channel, "announcing work failed; other workers find it by polling");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_short_identifiers_per_schema_and_namespace() {
        let a = channel("durable", "default");
        assert_eq!(a, channel("durable", "default"));
        assert_ne!(a, channel("durable", "other"));
        assert_ne!(a, channel("t_1", "default"));
        let odd = channel("durable", &"ünïcode \"quotes\" ".repeat(20));
        assert!(odd.len() <= 63);
        assert!(odd.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}

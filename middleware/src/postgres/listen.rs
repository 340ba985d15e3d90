//! [`Listener`]: one connection that `LISTEN`s and hands over what PostgreSQL announces.

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Notification};

use super::config::DatabaseConfig;

/// A connection that `LISTEN`s on channels and hands over their notifications in order.
///
/// A pooled connection does not do: notifications arrive on the connection that listens,
/// between queries, so it needs its connection driven all the time. This drives it.
/// [`recv`](Self::recv) gives `None` once the connection has ended; dropping the listener
/// closes it.
#[derive(Debug)]
pub struct Listener {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    driver: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Connects and listens on `channel`. Must be called inside a Tokio runtime.
    pub async fn connect(
        database: &DatabaseConfig,
        channel: &str,
    ) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = database.connect().await?;
        let (sender, notifications) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut connection = connection;
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        if sender.send(notification).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "listening connection failed");
                        return;
                    }
                }
            }
        });
        let listener = Self {
            client,
            notifications,
            driver,
        };
        listener.listen(channel).await?;
        Ok(listener)
    }

    /// Listens on one more channel.
    pub async fn listen(&self, channel: &str) -> Result<(), tokio_postgres::Error> {
        // The name is quoted by PostgreSQL itself (`%I`), never spliced by hand.
        let listen: String = self
            .client
            .query_one("SELECT format('LISTEN %I', $1::text)", &[&channel])
            .await?
            .get(0);
        self.client.batch_execute(&listen).await
    }

    /// The next notification; `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Notification> {
        self.notifications.recv().await
    }

    /// The connection's client, for queries on it (a liveness ping, say).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

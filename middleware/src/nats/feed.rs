//! [`NatsRevocationFeed`]: revocations from a NATS `JetStream` stream.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::{Client, Event};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::NatsFeedConfig;
use super::wire::decode_revocation;
use crate::liveness::feed::{FeedEvent, RevocationFeed};
use crate::liveness::postgres::error_text;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait for an answer of the `JetStream` API (stream info, a new consumer).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A client that reconnects for ever, quickly, and reports what happens to its
/// connection on `events`.
pub(crate) async fn connect(
    url: &str,
    name: &str,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<Client, String> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(10))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100)
                .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX))
                .min(Duration::from_secs(1))
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                if let Some(events) = events {
                    let _ = events.send(event);
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| format!("NATS at {url}: {}", error_text(&e)))?;
    Ok(client)
}

/// Revocations from a NATS `JetStream` stream that a relay
/// ([`NatsRelay`](super::NatsRelay)) fills from the PostgreSQL revocation log.
///
/// It reads the stream with an ordered consumer of its own (ephemeral, no acks),
/// starting after the last stream sequence it applied, and says
/// [`Connected`](FeedEvent::Connected) once it reads. When the connection drops or the
/// consumer fails it says [`Disconnected`](FeedEvent::Disconnected), and on its return
/// resumes after the same sequence: the cache keeps what it holds, and the revocations
/// published meanwhile arrive. Only when the stream no longer holds the next sequence
/// (its retention dropped it, or the stream was emptied or recreated), when sequences
/// jump, or when a message is not a revocation this version reads, does it say
/// [`Missed`](FeedEvent::Missed): the cache forgets everything and asks the database.
///
/// The stream must be the relay's own: a message of another subject in it is a jump in
/// sequences, which costs the cache everything it holds.
pub struct NatsRevocationFeed {
    config: NatsFeedConfig,
    client: Option<(Client, mpsc::UnboundedReceiver<Event>)>,
    messages: Option<Ordered>,
    last_applied: Option<u64>,
    pending: VecDeque<FeedEvent>,
    backoff: Duration,
    attempted: bool,
}

impl std::fmt::Debug for NatsRevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsRevocationFeed")
            .field("config", &self.config)
            .field("reading", &self.messages.is_some())
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

impl NatsRevocationFeed {
    /// A feed reading `config`'s stream. Connects when first asked for an event.
    pub fn new(config: NatsFeedConfig) -> Self {
        Self {
            config,
            client: None,
            messages: None,
            last_applied: None,
            pending: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            attempted: false,
        }
    }

    /// The last stream sequence this feed applied, if it has read the stream.
    pub fn last_applied(&self) -> Option<u64> {
        self.last_applied
    }

    /// Subscribes, after the backoff when this is not the first attempt.
    async fn subscribe(&mut self) -> FeedEvent {
        if self.attempted {
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.attempted = true;
        match self.try_subscribe().await {
            Ok(missed) => {
                self.backoff = FIRST_BACKOFF;
                tracing::info!(
                    url = %self.config.url,
                    stream = %self.config.stream,
                    after = ?self.last_applied,
                    "revocation feed reading NATS"
                );
                if missed {
                    self.pending.push_back(FeedEvent::Connected);
                    FeedEvent::Missed
                } else {
                    FeedEvent::Connected
                }
            }
            Err(reason) => {
                tracing::warn!(error = %reason, backoff = ?self.backoff, "revocation feed cannot read NATS");
                FeedEvent::Disconnected { reason }
            }
        }
    }

    /// Creates the consumer; `Ok(true)` when the stream no longer holds what follows the
    /// last sequence applied.
    async fn try_subscribe(&mut self) -> Result<bool, String> {
        if self.client.is_none() {
            let (sender, events) = mpsc::unbounded_channel();
            let client = connect(&self.config.url, "portcullis-feed", Some(sender)).await?;
            self.client = Some((client, events));
        }
        let Some((client, events)) = &mut self.client else {
            unreachable!("set above");
        };
        // What happened to the connection before now is known: it is connected or not.
        while events.try_recv().is_ok() {}
        if client.connection_state() != State::Connected {
            return Err(format!("not connected to NATS at {}", self.config.url));
        }
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let stream = jetstream
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| {
                format!(
                    "stream {} at {} (the relay creates it): {}",
                    self.config.stream,
                    self.config.url,
                    error_text(&e)
                )
            })?;
        let state = stream.cached_info().state.clone();
        let (start, missed) = match self.last_applied {
            // Recreated or emptied: its sequences are not the ones applied.
            Some(applied) if applied > state.last_sequence => (state.last_sequence + 1, true),
            // Retention dropped what follows: start with what comes next.
            Some(applied) if state.first_sequence > applied + 1 => (state.last_sequence + 1, true),
            Some(applied) => (applied + 1, false),
            // Nothing is cached that an earlier message could concern.
            None => (state.last_sequence + 1, false),
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..OrderedConfig::default()
            })
            .await
            .map_err(|e| {
                format!(
                    "a consumer on stream {}: {}",
                    self.config.stream,
                    error_text(&e)
                )
            })?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("reading stream {}: {}", self.config.stream, error_text(&e)))?;
        if missed {
            tracing::warn!(
                stream = %self.config.stream,
                applied = ?self.last_applied,
                first = state.first_sequence,
                last = state.last_sequence,
                "the stream no longer holds what follows the last revocation applied; cache cleared"
            );
        }
        self.messages = Some(messages);
        self.last_applied = Some(start - 1);
        Ok(missed)
    }

    /// The subscription ended: nothing was lost yet, the next one resumes.
    fn lost(&mut self, reason: String) -> FeedEvent {
        self.messages = None;
        tracing::warn!(%reason, after = ?self.last_applied, "revocation feed lost NATS; resuming");
        FeedEvent::Disconnected { reason }
    }
}

impl RevocationFeed for NatsRevocationFeed {
    async fn next_event(&mut self) -> Option<FeedEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let (Some(messages), Some((_, events))) = (&mut self.messages, &mut self.client) else {
                return Some(self.subscribe().await);
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Disconnected) => {
                        return Some(self.lost("the connection to NATS dropped".to_owned()));
                    }
                    Some(Event::Closed) | None => {
                        self.client = None;
                        return Some(self.lost("the NATS client closed".to_owned()));
                    }
                    Some(_) => {}
                },
                message = messages.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => return Some(self.lost(error_text(&e))),
                        None => return Some(self.lost("the consumer ended".to_owned())),
                    };
                    let sequence = match message.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => return Some(self.lost(format!("a message without its sequence: {e}"))),
                    };
                    let applied = self.last_applied.unwrap_or(0);
                    if sequence <= applied {
                        continue;
                    }
                    self.last_applied = Some(sequence);
                    let event = match decode_revocation(&message.payload) {
                        Ok(revocation) => FeedEvent::Revoked(revocation),
                        Err(e) => {
                            tracing::warn!(error = %e, sequence, "revocation message not understood; cache cleared");
                            FeedEvent::Missed
                        }
                    };
                    if sequence > applied + 1 {
                        tracing::warn!(applied, sequence, "revocation stream skipped sequences; cache cleared");
                        if event != FeedEvent::Missed {
                            self.pending.push_back(event);
                        }
                        return Some(FeedEvent::Missed);
                    }
                    return Some(event);
                }
            }
        }
    }
}

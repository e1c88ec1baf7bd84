//! Buffering of firehose entries, flushed by size or age.

use tokio::time::Instant;

use super::client::{HullClient, HullCredentials};
use super::error::HullError;
use super::firehose::FirehoseEntry;

/// Buffers firehose entries for one connector and sends them in batches: as soon as
/// `flush_at` entries are queued, or when the caller sees [`FirehoseBatcher::deadline`] pass
/// (`flush_after` after the first buffered entry) and calls [`FirehoseBatcher::flush`].
///
/// A failed flush keeps the entries buffered, so nothing is lost silently.
#[derive(Debug)]
pub struct FirehoseBatcher {
    client: HullClient,
    creds: HullCredentials,
    buffer: Vec<FirehoseEntry>,
    oldest: Option<Instant>,
}

impl FirehoseBatcher {
    /// An empty batcher sending with `client` as `creds`.
    pub fn new(client: HullClient, creds: HullCredentials) -> Self {
        FirehoseBatcher {
            client,
            creds,
            buffer: Vec::new(),
            oldest: None,
        }
    }

    /// Queues `entry`; sends the buffer when it reaches `flush_at`.
    pub async fn push(&mut self, entry: FirehoseEntry) -> Result<(), HullError> {
        if self.buffer.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.buffer.push(entry);
        if self.buffer.len() >= self.client.config().flush_at {
            self.flush().await?;
        }
        Ok(())
    }

    /// When the buffer must be flushed by age (`None` when empty). Wait on it with
    /// `tokio::time::sleep_until` alongside new input.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest
            .and_then(|t| t.checked_add(self.client.config().flush_after))
    }

    /// Sends everything buffered. On error the entries stay buffered.
    pub async fn flush(&mut self) -> Result<(), HullError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.client
            .send_firehose(&self.creds, self.buffer.clone())
            .await?;
        self.buffer.clear();
        self.oldest = None;
        Ok(())
    }

    /// Number of buffered entries.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

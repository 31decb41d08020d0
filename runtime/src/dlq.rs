//! The dead-letter stream, for operators: what is parked there and why, and
//! re-driving it once the cause is fixed.
//!
//! A re-driven message goes back to its original subject with its original
//! headers, so it keeps its event id (`ce-id`): consumers that applied it
//! before drop it in their inbox, the one that parked it applies it now.
//! Each re-drive publishes with `Nats-Msg-Id` `redrive:<DLQ sequence>` and
//! only then deletes the DLQ entry, so re-driving again (after a crash in
//! between, or twice by hand) publishes nothing new.

use async_nats::{HeaderMap, jetstream, jetstream::message::PublishMessage};
use bytes::Bytes;

use crate::consumer::{
    HEADER_DLQ_CONSUMER, HEADER_DLQ_DELIVERED, HEADER_DLQ_ERROR, HEADER_DLQ_SEQUENCE, HEADER_DLQ_STREAM,
    HEADER_DLQ_SUBJECT,
};
use crate::event::{HEADER_ID, HEADER_TYPE};

/// The stream parked messages go to.
pub const STREAM: &str = "DLQ";

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("NATS: {0}")]
    Nats(#[from] async_nats::Error),
    #[error("DLQ entry {0} has no {1} header; it was not parked by a shop consumer")]
    NotParked(u64, &'static str),
}

fn nats(e: impl std::error::Error + Send + Sync + 'static) -> DlqError {
    DlqError::Nats(Box::new(e))
}

/// One parked message.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Its sequence in the DLQ stream.
    pub sequence: u64,
    /// Where it came from: subject, stream and sequence there.
    pub subject: String,
    pub stream: String,
    pub stream_sequence: String,
    /// The consumer that parked it, after this many deliveries, and why.
    pub consumer: String,
    pub delivered: String,
    pub error: String,
    pub event_id: String,
    pub event_type: String,
    /// When it was parked, in seconds since the Unix epoch.
    pub parked_at: i64,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// Which parked messages an operation is about.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The consumer that parked them.
    pub consumer: Option<String>,
    /// Their original subject; NATS wildcards (`*`, `>`) allowed.
    pub subject: Option<String>,
    /// One DLQ entry.
    pub sequence: Option<u64>,
}

impl Filter {
    fn matches(&self, parked: &Parked) -> bool {
        self.consumer.as_ref().is_none_or(|c| *c == parked.consumer)
            && self
                .subject
                .as_ref()
                .is_none_or(|pattern| subject_matches(pattern, &parked.subject))
            && self.sequence.is_none_or(|s| s == parked.sequence)
    }
}

/// Whether `subject` matches the NATS subject `pattern`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for part in pattern.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(token)) if literal == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// The parked messages `filter` selects, oldest first.
pub async fn list(js: &jetstream::Context, filter: &Filter) -> Result<Vec<Parked>, DlqError> {
    let mut stream = js.get_stream(STREAM).await.map_err(nats)?;
    let state = stream.info().await.map_err(nats)?.state.clone();
    let mut parked = Vec::new();
    if state.messages == 0 {
        return Ok(parked);
    }
    let range = match filter.sequence {
        Some(sequence) => sequence..=sequence,
        None => state.first_sequence..=state.last_sequence,
    };
    for sequence in range {
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            // Deleted (re-driven before) or aged out.
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => continue,
            Err(e) => return Err(nats(e)),
        };
        let entry = parse(message)?;
        if filter.matches(&entry) {
            parked.push(entry);
        }
    }
    Ok(parked)
}

fn parse(message: jetstream::message::StreamMessage) -> Result<Parked, DlqError> {
    let sequence = message.sequence;
    let header = |name: &'static str| -> Result<String, DlqError> {
        message
            .headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .ok_or(DlqError::NotParked(sequence, name))
    };
    let optional = |name: &'static str| {
        message
            .headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    Ok(Parked {
        sequence,
        subject: header(HEADER_DLQ_SUBJECT)?,
        stream: header(HEADER_DLQ_STREAM)?,
        stream_sequence: header(HEADER_DLQ_SEQUENCE)?,
        consumer: header(HEADER_DLQ_CONSUMER)?,
        delivered: optional(HEADER_DLQ_DELIVERED),
        error: optional(HEADER_DLQ_ERROR),
        event_id: optional(HEADER_ID),
        event_type: optional(HEADER_TYPE),
        parked_at: message.time.unix_timestamp(),
        headers: message.headers.clone(),
        payload: message.payload.clone(),
    })
}

/// What a re-drive did with one parked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    pub sequence: u64,
    pub subject: String,
    /// False when the original stream had it already (re-driven before,
    /// within its duplicate window).
    pub published: bool,
}

/// Publishes every parked message `filter` selects back to its original
/// subject, then removes it from the DLQ.
pub async fn redrive(js: &jetstream::Context, filter: &Filter) -> Result<Vec<Redriven>, DlqError> {
    let stream = js.get_stream(STREAM).await.map_err(nats)?;
    let mut done = Vec::new();
    for parked in list(js, filter).await? {
        let mut headers = HeaderMap::new();
        for (name, values) in parked.headers.iter() {
            let name: &str = name.as_ref();
            let message_id: &str = async_nats::header::NATS_MESSAGE_ID.as_ref();
            if name.starts_with("Shop-Dlq-") || name.eq_ignore_ascii_case(message_id) {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("redrive:{}", parked.sequence).as_str(),
        );
        let message = PublishMessage::build().payload(parked.payload.clone()).headers(headers);
        let ack = js
            .send_publish(parked.subject.clone(), message)
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        stream.delete_message(parked.sequence).await.map_err(nats)?;
        done.push(Redriven {
            sequence: parked.sequence,
            subject: parked.subject,
            published: !ack.duplicate,
        });
    }
    Ok(done)
}

/// Sets [`crate::series::DLQ_MESSAGES`] from the DLQ stream every few
/// seconds until `shutdown`.
pub async fn report_depth(js: jetstream::Context, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        if let Ok(mut stream) = js.get_stream(STREAM).await
            && let Ok(info) = stream.info().await
        {
            metrics::gauge!(crate::series::DLQ_MESSAGES).set(info.state.messages as f64);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("orders.placed.*", "orders.placed.o-1"));
        assert!(subject_matches("orders.>", "orders.placed.o-1"));
        assert!(subject_matches("orders.placed.o-1", "orders.placed.o-1"));
        assert!(!subject_matches("orders.placed.*", "orders.placed"));
        assert!(!subject_matches("orders.placed", "orders.placed.o-1"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(!subject_matches("payments.*.*", "orders.placed.o-1"));
    }
}

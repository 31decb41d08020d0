//! Handing an email over: as an `.eml` file (the default, for development
//! and tests) or to an SMTP relay. Both are idempotent per notification:
//! the file is named after it, and the SMTP message carries
//! `Message-ID: <notification_id@shop>` so a downstream can drop a resend.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use uuid::Uuid;

use crate::config::{Config, SmtpRelay};

/// Longest wait for one SMTP command; a stuck relay must not hold an
/// unsent row (and its lock) for long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One email as stored in `notifications`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub notification_id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot build the message: {0}")]
    Message(String),
    #[error("cannot write the mail file: {0}")]
    File(#[from] std::io::Error),
    #[error("SMTP relay: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// The sender chosen at start-up.
pub enum Sender {
    Files(FileSender),
    Smtp(SmtpSender),
}

impl Sender {
    /// SMTP when `NOTIFY_SMTP_URL` is set, files otherwise (the mail
    /// directory is created now, so a bad path fails the start).
    pub async fn from_config(config: &Config) -> std::io::Result<Self> {
        Ok(match &config.smtp {
            Some(relay) => Self::Smtp(SmtpSender::new(relay, config.from.clone())),
            None => {
                let dir = config.mail_dir();
                tokio::fs::create_dir_all(&dir).await?;
                Self::Files(FileSender::new(dir, config.from.clone()))
            }
        })
    }

    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        match self {
            Self::Files(files) => files.send(email).await,
            Self::Smtp(smtp) => smtp.send(email).await,
        }
    }

    /// Where emails go, for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Files(files) => format!("files in {}", files.dir.display()),
            Self::Smtp(smtp) => format!("SMTP relay {}", smtp.relay),
        }
    }
}

/// The RFC 5322 message for `email`. The Date is the notification's
/// creation time, so a resend renders the same bytes.
pub fn render(email: &Email, from: &Mailbox) -> Result<Message, SendError> {
    let to: Mailbox = email
        .recipient
        .parse()
        .map_err(|e| SendError::Message(format!("recipient {:?}: {e}", email.recipient)))?;
    Message::builder()
        .message_id(Some(message_id(email.notification_id)))
        .date(SystemTime::from(email.created_at))
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(email.body.clone())
        .map_err(|e| SendError::Message(e.to_string()))
}

/// `<notification_id@shop>`: stable across resends.
pub fn message_id(notification_id: Uuid) -> String {
    format!("<{notification_id}@shop>")
}

/// Writes each email to `<dir>/<notification_id>.eml`.
pub struct FileSender {
    dir: PathBuf,
    from: Mailbox,
}

impl FileSender {
    pub fn new(dir: PathBuf, from: Mailbox) -> Self {
        Self { dir, from }
    }

    pub fn path_of(&self, notification_id: Uuid) -> PathBuf {
        self.dir.join(format!("{notification_id}.eml"))
    }

    /// Writes a temporary file and renames it over the final name, so a
    /// reader never sees half a message and a resend replaces, never adds.
    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let bytes = render(email, &self.from)?.formatted();
        // Unique per attempt: two replicas resending at once must not share
        // a temporary file.
        let temporary = self
            .dir
            .join(format!(".{}.{}.tmp", email.notification_id, Uuid::new_v4()));
        let path = self.path_of(email.notification_id);
        // One trip to the blocking pool for the whole hand-over, not one for
        // each of create, write, sync and rename.
        tokio::task::spawn_blocking(move || replace_synced(&temporary, &path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(())
    }
}

/// Puts `bytes` at `path` by way of `temporary`, on disk before the rename.
fn replace_synced(temporary: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let replaced = write_synced(temporary, bytes).and_then(|()| std::fs::rename(temporary, path));
    if replaced.is_err() {
        let _ = std::fs::remove_file(temporary);
    }
    replaced
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Sends through a plain-text SMTP relay, one connection per email.
pub struct SmtpSender {
    relay: SmtpRelay,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    pub fn new(relay: &SmtpRelay, from: Mailbox) -> Self {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(relay.host.clone())
            .port(relay.port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Self {
            relay: relay.clone(),
            transport,
            from,
        }
    }

    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let message = render(email, &self.from)?;
        self.transport.send(message).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email {
            notification_id: Uuid::parse_str("0190f3c4-1111-7000-8000-000000000001").expect("valid uuid"),
            recipient: "alice@customers.shop.test".into(),
            subject: "Order o-1 is confirmed".into(),
            body: "Hello,\n\nOrder: o-1\nTotal: EUR 25.98\n".into(),
            created_at: DateTime::from_timestamp(1_767_268_800, 0).expect("valid time"),
        }
    }

    fn from() -> Mailbox {
        "Shop <orders@shop.test>".parse().expect("valid mailbox")
    }

    #[test]
    fn renders_an_rfc5322_message_with_a_stable_id() {
        let text = String::from_utf8(render(&email(), &from()).expect("renders").formatted()).expect("ascii");
        for expected in [
            "Message-ID: <0190f3c4-1111-7000-8000-000000000001@shop>\r\n",
            "Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n",
            "From: Shop <orders@shop.test>\r\n",
            "To: alice@customers.shop.test\r\n",
            "Subject: Order o-1 is confirmed\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "\r\n\r\nHello,\r\n\r\nOrder: o-1\r\nTotal: EUR 25.98\r\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        let again = render(&email(), &from()).expect("renders").formatted();
        assert_eq!(text.as_bytes(), again.as_slice(), "a resend must render the same bytes");
    }

    #[test]
    fn a_bad_recipient_is_a_message_error() {
        let bad = Email {
            recipient: "not an address".into(),
            ..email()
        };
        assert!(matches!(render(&bad, &from()), Err(SendError::Message(_))));
    }

    #[tokio::test]
    async fn file_sender_overwrites_instead_of_duplicating() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sender = FileSender::new(dir.path().to_owned(), from());
        sender.send(&email()).await.expect("first send");
        sender.send(&email()).await.expect("resend");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("readable")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["0190f3c4-1111-7000-8000-000000000001.eml"]);
        let text = std::fs::read_to_string(sender.path_of(email().notification_id)).expect("readable");
        assert!(text.contains("Total: EUR 25.98"), "{text}");
    }
}

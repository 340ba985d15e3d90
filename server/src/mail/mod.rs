//! Account mail: what is sent ([`compose`]), where to ([`Delivery`], from `SMTP_URL`), and
//! the worker that sends what the outbox holds ([`worker`]).
//!
//! A request never talks to the mail server: it writes the mail into the `mail_outbox`
//! table in the transaction of the change that causes it (see
//! [`crate::store::outbox`]), and the worker sends it, retrying with a growing wait while
//! the mail server is away.

pub mod compose;
pub mod smtp_url;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};

pub use smtp_url::SmtpUrl;

/// The longest one SMTP conversation may take before it counts as a failed attempt.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// To the mail server of `SMTP_URL`.
    Smtp(Box<SmtpUrl>),
    /// Development without `SMTP_URL`: one `.eml` file per mail in this folder.
    Files(PathBuf),
}

/// Why a mail could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct SendError {
    /// The mail server refused it for good (a 5xx answer, a recipient it will never
    /// take): retrying is pointless.
    pub permanent: bool,
    /// What went wrong, for the log and the outbox's `last_error` (never the mail's text).
    pub detail: String,
}

impl SendError {
    fn permanent(detail: impl Into<String>) -> Self {
        Self {
            permanent: true,
            detail: detail.into(),
        }
    }
}

/// Sends one mail, over SMTP or into a development folder.
#[derive(Clone)]
pub enum Mailer {
    /// SMTP, with the transport's own connection handling.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder.
    Files {
        /// lettre's file transport.
        transport: AsyncFileTransport<Tokio1Executor>,
        /// Its folder, to log each file's path.
        folder: PathBuf,
    },
}

impl Mailer {
    /// The mailer of `delivery`; creates the development folder when missing.
    pub fn new(delivery: &Delivery) -> std::io::Result<Self> {
        match delivery {
            Delivery::Smtp(url) => Ok(Self::Smtp(url.transport())),
            Delivery::Files(folder) => {
                std::fs::create_dir_all(folder)?;
                Ok(Self::Files {
                    transport: AsyncFileTransport::new(folder),
                    folder: folder.clone(),
                })
            }
        }
    }

    /// Sends `body` with `subject` from `from` to `recipient`.
    pub async fn send(
        &self,
        from: &Mailbox,
        recipient: &str,
        subject: &str,
        body: String,
    ) -> Result<(), SendError> {
        let to: Mailbox = recipient
            .parse()
            .map_err(|e| SendError::permanent(format!("the recipient is not an address: {e}")))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| SendError::permanent(format!("the mail cannot be built: {e}")))?;
        match self {
            Self::Smtp(transport) => {
                transport.send(message).await.map_err(|e| SendError {
                    permanent: e.is_permanent(),
                    detail: e.to_string(),
                })?;
            }
            Self::Files { transport, folder } => {
                let id = transport.send(message).await.map_err(|e| SendError {
                    permanent: false,
                    detail: e.to_string(),
                })?;
                tracing::info!(
                    path = %eml_path(folder, &id).display(),
                    "development: mail written to a file instead of being sent (no SMTP_URL)"
                );
            }
        }
        Ok(())
    }
}

/// The file lettre's file transport writes a mail of `id` to.
fn eml_path(folder: &Path, id: &str) -> PathBuf {
    folder.join(format!("{id}.eml"))
}

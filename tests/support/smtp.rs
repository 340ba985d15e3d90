//! A real SMTP server for the tests: `aiosmtpd` (pinned, from the Python Package Index) as a child process on
//! a loopback port, writing each message it accepts into a folder, where tests wait for
//! the mail to an address and read its links.
//!
//! aiosmtpd is installed once into a virtualenv under the workspace's `target/` (or, where
//! Python has no `venv` module, with `pip install --target`), under a file lock so that
//! parallel tests install it once.

use std::fs::File;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

/// The aiosmtpd release the tests run.
pub const AIOSMTPD_VERSION: &str = "1.4.6";
/// How long a started aiosmtpd may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The handler aiosmtpd loads (`--class spool.Spool FOLDER`): each message becomes one
/// file, written under a temporary name and renamed, so a reader never sees half of one.
/// Its first line names the envelope's recipients.
const HANDLER: &str = r#"import os
import uuid


class Spool:
    def __init__(self, folder):
        self.folder = folder

    @classmethod
    def from_cli(cls, parser, folder):
        return cls(folder)

    async def handle_DATA(self, server, session, envelope):
        name = uuid.uuid4().hex
        temporary = os.path.join(self.folder, name + ".tmp")
        with open(temporary, "wb") as out:
            out.write(("X-Envelope-To: " + ",".join(envelope.rcpt_tos) + "\r\n").encode())
            out.write(envelope.original_content or envelope.content)
        os.rename(temporary, os.path.join(self.folder, name + ".eml"))
        return "250 OK"
"#;

/// How to run Python with aiosmtpd importable.
#[derive(Debug, Clone)]
struct Python {
    program: PathBuf,
    path: Option<PathBuf>,
}

impl Python {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        if let Some(path) = &self.path {
            command.env("PYTHONPATH", path);
        }
        command
    }

    fn has_aiosmtpd(&self) -> bool {
        self.command()
            .args(["-c", "import aiosmtpd; print(aiosmtpd.__version__)"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).trim() == AIOSMTPD_VERSION
            })
    }
}

/// Python with the pinned aiosmtpd, installed on first use.
fn python() -> &'static Python {
    static PYTHON: OnceLock<Python> = OnceLock::new();
    PYTHON.get_or_init(install)
}

fn install() -> Python {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let tools = target.join(format!("aiosmtpd-{AIOSMTPD_VERSION}"));
    std::fs::create_dir_all(&target).expect("the target folder");
    let lock = File::create(target.join(format!("aiosmtpd-{AIOSMTPD_VERSION}.lock")))
        .expect("the install lock file");
    let _locked = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("locking the install");
    let venv = Python {
        program: tools.join("venv/bin/python"),
        path: None,
    };
    let lib = Python {
        program: PathBuf::from("python3"),
        path: Some(tools.join("lib")),
    };
    for ready in [&venv, &lib] {
        if ready.has_aiosmtpd() {
            return ready.clone();
        }
    }
    let _ = std::fs::remove_dir_all(&tools);
    let pip = |python: &Python, extra: &[&str]| {
        let status = python
            .command()
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("aiosmtpd=={AIOSMTPD_VERSION}"))
            .args(extra)
            .status()
            .expect("running pip");
        assert!(
            status.success(),
            "pip install aiosmtpd=={AIOSMTPD_VERSION}: {status}"
        );
    };
    let made_venv = Command::new("python3")
        .args(["-m", "venv"])
        .arg(tools.join("venv"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if made_venv {
        pip(&venv, &[]);
        assert!(
            venv.has_aiosmtpd(),
            "aiosmtpd is not importable after installing it"
        );
        venv
    } else {
        let _ = std::fs::remove_dir_all(tools.join("venv"));
        let folder = tools.join("lib");
        pip(
            &Python {
                program: PathBuf::from("python3"),
                path: None,
            },
            &["--target", &folder.display().to_string()],
        );
        assert!(
            lib.has_aiosmtpd(),
            "aiosmtpd is not importable after installing it"
        );
        lib
    }
}

/// One mail aiosmtpd accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope's recipients.
    pub recipients: Vec<String>,
    /// The message's headers as sent.
    pub headers: String,
    /// The body, its transfer encoding undone.
    pub body: String,
}

impl Mail {
    /// A message as aiosmtpd's handler wrote it (the envelope's recipients on a first
    /// line of their own), or as a plain `.eml` file (no recipients then).
    pub fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (recipients, message) = match raw.strip_prefix("X-Envelope-To: ") {
            Some(rest) => {
                let (envelope, message) = rest.split_once('\n').unwrap_or((rest, ""));
                (envelope.split(',').map(str::to_owned).collect(), message)
            }
            None => (Vec::new(), raw.as_str()),
        };
        let (headers, body) = message.split_once("\n\n").unwrap_or((message, ""));
        let quoted = headers
            .to_ascii_lowercase()
            .contains("content-transfer-encoding: quoted-printable");
        let body = if quoted {
            quoted_printable(body)
        } else {
            body.to_owned()
        };
        Self {
            recipients,
            headers: headers.to_owned(),
            body,
        }
    }

    /// The header `name`'s value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.headers.lines().find_map(|line| {
            line.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| line[prefix.len()..].trim())
        })
    }

    /// The first link in the body starting with `prefix`; panics when there is none.
    pub fn link(&self, prefix: &str) -> String {
        self.body
            .split_whitespace()
            .find(|word| word.starts_with(prefix))
            .unwrap_or_else(|| panic!("no link starting with {prefix} in:\n{}", self.body))
            .to_owned()
    }

    /// The `token` of the first link starting with `prefix`.
    pub fn token(&self, prefix: &str) -> String {
        let link = self.link(prefix);
        link.split_once("?token=")
            .unwrap_or_else(|| panic!("no token in {link}"))
            .1
            .to_owned()
    }
}

/// Undoes quoted-printable (RFC 2045): soft line breaks and `=XX` escapes.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=')
            .then(|| joined.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running aiosmtpd, killed when dropped. Its folder of mails outlives restarts.
#[derive(Debug)]
pub struct SmtpServer {
    child: Option<Child>,
    port: u16,
    folder: tempfile::TempDir,
    spool: PathBuf,
}

impl SmtpServer {
    /// Starts aiosmtpd on a free loopback port and waits until it accepts connections.
    pub fn start() -> Self {
        let folder = tempfile::tempdir().expect("a folder for the SMTP server");
        let spool = folder.path().join("mail");
        std::fs::create_dir(&spool).expect("the spool folder");
        let mut handler =
            File::create(folder.path().join("spool.py")).expect("writing the handler module");
        handler
            .write_all(HANDLER.as_bytes())
            .expect("writing the handler module");
        let mut server = Self {
            child: None,
            port: free_port(),
            folder,
            spool,
        };
        server.resume();
        server
    }

    /// `SMTP_URL` for the server: plain SMTP on loopback.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Kills the process: the port stops accepting connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and folder, and waits until it accepts
    /// connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "aiosmtpd is running already");
        let child = python()
            .command()
            .env("PYTHONPATH", self.python_path())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "spool.Spool"])
            .arg(&self.spool)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting aiosmtpd");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("aiosmtpd exited with {status} before accepting connections");
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The handler module's folder, with aiosmtpd's own when installed with `--target`.
    fn python_path(&self) -> String {
        let mut path = self.folder.path().display().to_string();
        if let Some(lib) = &python().path {
            path = format!("{path}:{}", lib.display());
        }
        path
    }

    /// Every mail accepted so far for `address`, oldest first.
    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(&self.spool) else {
            return Vec::new();
        };
        let mut mails: Vec<(std::time::SystemTime, Mail)> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .filter_map(|path| {
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                Some((modified, Mail::parse(&std::fs::read_to_string(path).ok()?)))
            })
            .filter(|(_, mail)| {
                mail.recipients
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(address))
            })
            .collect();
        mails.sort_by_key(|(modified, _)| *modified);
        mails.into_iter().map(|(_, mail)| mail).collect()
    }

    /// Waits up to `limit` until `count` mails for `address` have arrived, and returns
    /// them; panics when they do not.
    pub async fn wait_for_mails(&self, address: &str, count: usize, limit: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + limit;
        loop {
            let mails = self.mails_to(address);
            if mails.len() >= count {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} mails to {address} within {limit:?}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `limit` for the first mail to `address`.
    pub async fn wait_for_mail(&self, address: &str, limit: Duration) -> Mail {
        self.wait_for_mails(address, 1, limit)
            .await
            .into_iter()
            .next()
            .expect("one mail")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_is_undone() {
        assert_eq!(quoted_printable("a=3Db=\nc"), "a=bc");
        assert_eq!(quoted_printable("plain"), "plain");
    }
}

//! The harness run again as a child process (`serve-hello`, `fill-memory`,
//! `profile-loop`), so that what is measured never shares a process with the load
//! generator.
//!
//! A child reports on its standard output, one line at a time. It exits when its standard
//! input closes, so it never outlives the harness, and it is killed when dropped.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};

use crate::Result;

/// A running child of the harness.
#[derive(Debug)]
pub(crate) struct Child {
    process: tokio::process::Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Held open: the child exits when it closes.
    _stdin: ChildStdin,
    pid: u32,
}

impl Child {
    /// Runs this executable with `args`.
    pub(crate) fn spawn<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_program(std::env::current_exe()?, args)
    }

    /// Runs `program` with `args` (this executable under valgrind, say).
    pub(crate) fn spawn_program<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut process = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = process.id().ok_or("child exited at once")?;
        let stdout = process.stdout.take().ok_or("child without stdout")?;
        let stdin = process.stdin.take().ok_or("child without stdin")?;
        Ok(Self {
            process,
            stdout: BufReader::new(stdout).lines(),
            _stdin: stdin,
            pid,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line the child prints, waiting at most `timeout`.
    pub(crate) async fn line(&mut self, timeout: Duration) -> Result<String> {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Err(_) => Err(format!("child {} said nothing within {timeout:?}", self.pid).into()),
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => {
                let status = self.process.wait().await?;
                Err(format!("child {} exited ({status}) before reporting", self.pid).into())
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// The next line that starts with `prefix`, without it; other lines are echoed.
    pub(crate) async fn line_after(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.line(left).await?;
            match line.strip_prefix(prefix) {
                Some(rest) => return Ok(rest.trim().to_owned()),
                None => eprintln!("  child {}: {line}", self.pid),
            }
        }
    }

    /// Waits at most `timeout` for the child to exit by itself; kills it after that.
    pub(crate) async fn finish(mut self, timeout: Duration) -> Result<()> {
        let Ok(status) = tokio::time::timeout(timeout, self.process.wait()).await else {
            self.process.kill().await?;
            return Err(format!("child {} still running after {timeout:?}", self.pid).into());
        };
        let status = status?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("child {} failed: {status}", self.pid).into())
        }
    }
}

/// Resolves when standard input closes: how a child notices that the harness is gone.
pub(crate) async fn stdin_closed() {
    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
}

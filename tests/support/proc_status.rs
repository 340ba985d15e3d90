//! What the kernel says about the server process: its resident memory.

use crate::ServerProcess;

impl ServerProcess {
    /// The server's resident set size (`VmRSS` of `/proc/<pid>/status`), in KiB.
    pub fn resident_kib(&self) -> u64 {
        resident_kib(self.pid())
    }
}

/// `VmRSS` of `/proc/<pid>/status`, in KiB; panics when the process is gone.
pub fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// The soft limit on open files of this process (`Max open files` of
/// `/proc/self/limits`); `None` when unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

//! CPU time a process has used, from `/proc/<pid>/stat`, and resident memory from
//! `/proc/<pid>/status`: how the harness charges work to the service and to PostgreSQL
//! rather than to its own load generator.

use std::sync::OnceLock;
use std::time::Duration;

use crate::Result;

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// `spent` shared out over `count` events (at least one), in microseconds each.
#[allow(
    clippy::cast_precision_loss,
    reason = "event counts and microseconds stay far below 2^52"
)]
pub(crate) fn micros_each(spent: Duration, count: usize) -> f64 {
    spent.as_micros() as f64 / count.max(1) as f64
}

/// User plus system CPU time of process `pid` so far (all its threads).
pub(crate) fn process_time(pid: u32) -> Result<Duration> {
    stat_time(pid, 14, 15)
}

/// Time process `pid`'s main thread has spent on a CPU, to the nanosecond
/// (`/proc/<pid>/schedstat`): for single-threaded processes (PostgreSQL backends) whose
/// work is below the clock tick of [`process_time`].
pub(crate) fn run_time(pid: u32) -> Result<Duration> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .map_err(|e| format!("reading /proc/{pid}/schedstat: {e}"))?;
    let nanos: u64 = schedstat
        .split_whitespace()
        .next()
        .ok_or("empty /proc/<pid>/schedstat")?
        .parse()?;
    Ok(Duration::from_nanos(nanos))
}

/// User plus system CPU time of the children of `pid` that have ended and been waited for:
/// for the postmaster, what every backend that exited has spent (pgbench's connections,
/// which are gone by the time pgbench reports).
pub(crate) fn ended_children_time(pid: u32) -> Result<Duration> {
    stat_time(pid, 16, 17)
}

/// Time all cores together have spent idle or waiting for I/O since boot
/// (`/proc/stat`): what no process used.
pub(crate) fn machine_idle() -> Result<Duration> {
    let stat =
        std::fs::read_to_string("/proc/stat").map_err(|e| format!("reading /proc/stat: {e}"))?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .ok_or("/proc/stat without its cpu line")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait ...
    let idle =
        fields.get(3).ok_or("short /proc/stat")? + fields.get(4).ok_or("short /proc/stat")?;
    Ok(Duration::from_micros(idle * 1_000_000 / ticks_per_second()))
}

/// How long a process that ended may stay unreaped by its parent.
const REAP_WAIT: Duration = Duration::from_secs(10);

/// Waits until every process of `pids` is gone from `/proc`: ended and reaped by its
/// parent, so that its time is in the parent's [`ended_children_time`]. A process still
/// there after [`REAP_WAIT`] is an error.
pub(crate) async fn wait_until_reaped(pids: &[u32]) -> Result<()> {
    let deadline = std::time::Instant::now() + REAP_WAIT;
    for pid in pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if std::time::Instant::now() >= deadline {
                return Err(format!("process {pid} not reaped within {REAP_WAIT:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

/// CPU time of process `pid`, its children that have ended (once reaped), and its
/// children still running: for the postmaster, the whole cluster. A child reaped between
/// the read of the parent and the scan of `/proc` is missed once (microseconds).
pub(crate) fn tree_time(pid: u32) -> Result<Duration> {
    let mut total = process_time(pid)? + ended_children_time(pid)?;
    for entry in std::fs::read_dir("/proc")? {
        let Some(child) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that ended meanwhile has nothing left to count.
        if parent(child).ok() == Some(pid)
            && let Ok(time) = process_time(child)
        {
            total += time;
        }
    }
    Ok(total)
}

/// The parent of process `pid`.
pub(crate) fn parent(pid: u32) -> Result<u32> {
    Ok(u32::try_from(stat_field(pid, 4)?)?)
}

/// The sum of two clock-tick fields of `/proc/<pid>/stat`, as time.
fn stat_time(pid: u32, user: usize, system: usize) -> Result<Duration> {
    let total = stat_field(pid, user)? + stat_field(pid, system)?;
    Ok(Duration::from_micros(
        total * 1_000_000 / ticks_per_second(),
    ))
}

/// Field `index` (numbered from 1, as in proc(5)) of `/proc/<pid>/stat`, a number.
fn stat_field(pid: u32, index: usize) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc/<pid>/stat")?;
    // Fields 3.. start after the name.
    Ok(after_name
        .split_whitespace()
        .nth(index - 3)
        .ok_or("short /proc/<pid>/stat")?
        .parse()?)
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`); `"self"` for this process.
pub(crate) fn status_kib(pid: &str, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
}

/// The PostgreSQL backends connected to the database `client` is connected to, except
/// `client`'s own.
pub(crate) async fn database_backends(client: &tokio_postgres::Client) -> Result<Vec<u32>> {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| u32::try_from(row.get::<_, i32>(0)).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let busy: u64 = (0..2_000_000u64).map(std::hint::black_box).sum();
        assert!(busy > 0);
        assert!(process_time(std::process::id()).is_ok());
        assert!(run_time(std::process::id()).unwrap() > Duration::ZERO);
        assert!(status_kib("self", "VmRSS").unwrap() > 0);
    }
}

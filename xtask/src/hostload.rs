//! `--host-load N`: N busy processes beside QEMU, so that a run can show that its figures under
//! `-icount` do not depend on what else the host is doing.
//!
//! Each is `sh -c 'while :; do :; done'` (a shell spinning on the CPU, no I/O), started just
//! before QEMU and killed (by its own process id) when the run ends, also when it fails.

use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// The busy loop one load process runs.
pub const BUSY_LOOP: &str = "while :; do :; done";

/// The running load processes; dropping it kills and reaps them.
pub struct HostLoad {
    children: Vec<Child>,
}

impl HostLoad {
    /// Start `n` busy processes (none for 0).
    pub fn start(n: u32) -> Result<HostLoad> {
        let mut load = HostLoad { children: Vec::with_capacity(n as usize) };
        for _ in 0..n {
            let child = Command::new("sh")
                .args(["-c", BUSY_LOOP])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start a --host-load process (sh)")?;
            // Pushed at once: if a later one fails to start, the drop stops these.
            load.children.push(child);
        }
        Ok(load)
    }

    /// How many are running.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.children.len()
    }
}

impl Drop for HostLoad {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_stops_busy_processes() {
        let load = HostLoad::start(2).unwrap();
        assert_eq!(load.len(), 2);
        let pids: Vec<u32> = load.children.iter().map(Child::id).collect();
        drop(load);
        // Reaped: no process with those ids is our child any more (kill(pid, 0) would also
        // find an unrelated process that reused the id, so look for our own zombie instead).
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(!stat.contains(" Z "), "process {pid} was not reaped: {stat}");
            let running = stat.contains("(sh)") && !stat.contains(" Z ");
            assert!(!running, "process {pid} still runs: {stat}");
        }
        assert_eq!(HostLoad::start(0).unwrap().len(), 0);
    }
}

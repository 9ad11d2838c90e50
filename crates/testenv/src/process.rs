//! Child process hygiene: every component is spawned from one long-lived spawner thread, in its
//! own process group, with `PR_SET_PDEATHSIG(SIGKILL)`; it is stopped with SIGTERM, then SIGKILL
//! after a timeout; and an `atexit` handler stops whatever is still running when the process
//! exits normally (the test harness exits normally after failed tests).
//!
//! Why a spawner thread: the parent-death signal fires when the *thread* that forked the child
//! exits, not the process. Test threads are short-lived, so a child forked from one would be
//! killed as soon as its test finished. The spawner thread lives until the process exits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;

/// How often a stopping process is checked for exit.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Grace period per process at exit time, when no configured stop timeout is at hand.
const EXIT_GRACE: Duration = Duration::from_secs(10);

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

/// Process groups of every live child, keyed by pid, so the exit handler can reach children
/// whose owner was leaked (a `static`, `mem::forget`).
static LIVE: Mutex<BTreeMap<u32, &'static str>> = Mutex::new(BTreeMap::new());

/// Hooks the exit handler runs first (graceful stops of whole control planes, in order).
static EXIT_HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

fn spawner() -> Result<&'static mpsc::Sender<SpawnRequest>, Error> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            let thread = std::thread::Builder::new()
                .name("acs-testenv-spawner".into())
                .spawn(move || {
                    for SpawnRequest { mut command, reply } in rx {
                        // The requester may have given up; nothing to do then but let the
                        // returned Child drop (std does not kill on drop; our Drop in Process
                        // does, but here there is no Process yet, so kill it directly).
                        if let Err(mpsc::SendError(Ok(mut child))) = reply.send(command.spawn()) {
                            let _ = child.kill();
                            let _ = child.wait();
                        }
                    }
                });
            match thread {
                Ok(_) => {
                    // SAFETY: registering a plain `extern "C" fn` with no arguments is what
                    // atexit expects; the handler never unwinds (it catches panics).
                    unsafe {
                        libc::atexit(at_exit);
                    }
                    Some(tx)
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the process spawner thread");
                    None
                }
            }
        })
        .as_ref()
        .ok_or(Error::Spawner)
}

/// Registers a function the exit handler calls before killing leftover children.
pub(crate) fn register_exit_hook(hook: fn()) {
    EXIT_HOOKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(hook);
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let hooks: Vec<fn()> = EXIT_HOOKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for hook in hooks {
            hook();
        }
        kill_leftovers();
    });
}

/// Stops every registered child still alive, highest pid first: SIGTERM, then SIGKILL after a
/// grace period. Children are reaped with `waitpid`, which is fine at exit when no `Child` handle
/// will wait for them any more.
fn kill_leftovers() {
    // Other threads hold this lock only for a map insert or remove, never across a call that
    // could end the process, so waiting for it cannot deadlock.
    let pids: Vec<u32> = LIVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .rev()
        .copied()
        .collect();
    for pid in pids {
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + EXIT_GRACE;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child's pid with WNOHANG has no memory effects beyond
            // writing `status`.
            let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if reaped != 0 {
                break;
            }
            if Instant::now() >= deadline {
                signal_group(pid, libc::SIGKILL);
                // SAFETY: as above, blocking this time; SIGKILL cannot be ignored.
                unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
                break;
            }
            std::thread::sleep(STOP_POLL);
        }
    }
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group we created (pgid == the child's
    // pid because of `process_group(0)`); it has no memory effects.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// A running component process whose output goes to a log file.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Spawns `program args…` from the spawner thread, appending stdout and stderr to `log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Process, Error> {
        let spawn_err = |source| Error::Spawn {
            component: name,
            path: program.to_path_buf(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| Error::Write {
                path: log.to_path_buf(),
                source,
            })?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: a terminal's Ctrl-C goes to us, and we stop children in order.
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, getppid) without allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // If the parent died before prctl took effect, the signal never comes: give up.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        spawner()?
            .send(SpawnRequest { command, reply })
            .map_err(|_| Error::Spawner)?;
        let child = answer
            .recv()
            .map_err(|_| Error::Spawner)?
            .map_err(spawn_err)?;
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(child.id(), name);
        tracing::debug!(component = name, pid = child.id(), "spawned");
        Ok(Process {
            name,
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The component name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped(status);
            }
        }
        self.exited
    }

    /// Fails with the log tail if the process has exited.
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => {
                let tail = log_tail(&self.log);
                Err(Error::Exited {
                    component: self.name,
                    status,
                    log: self.log.clone(),
                    port_conflict: crate::error::log_mentions_port_conflict(&tail),
                    tail,
                })
            }
        }
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.exited = Some(status);
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.child.id());
    }

    /// SIGTERM to the process group, then SIGKILL once `timeout` has passed; waits for the exit.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        if let Some(status) = self.exit_status() {
            return Ok(status);
        }
        let stop_err = |source| Error::Stop {
            component: self.name,
            source,
        };
        signal_group(self.pid(), libc::SIGTERM);
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(stop_err)? {
                self.reaped(status);
                tracing::debug!(component = self.name, elapsed = ?started.elapsed(), %status, "stopped");
                return Ok(status);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    component = self.name,
                    ?timeout,
                    "did not stop on SIGTERM; sending SIGKILL"
                );
                signal_group(self.pid(), libc::SIGKILL);
                let status = self.child.wait().map_err(stop_err)?;
                self.reaped(status);
                return Ok(status);
            }
            std::thread::sleep(STOP_POLL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            signal_group(self.pid(), libc::SIGKILL);
            if let Ok(status) = self.child.wait() {
                self.reaped(status);
            }
        }
    }
}

/// The last lines of a log file (at most ~8 KiB), for error messages.
pub fn log_tail(path: &Path) -> String {
    const MAX: u64 = 8 * 1024;
    const LINES: usize = 40;
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, log: &Path) -> Process {
        Process::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".to_string(), script.to_string()],
            log,
        )
        .unwrap()
    }

    #[test]
    fn a_process_is_stopped_by_sigterm_and_leaves_its_output_in_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("sh.log");
        let mut p = sh("echo started; exec sleep 600", &log);
        // Stop only once the shell has run: a SIGTERM before its echo would leave no output.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log_tail(&log).contains("started") {
            assert!(Instant::now() < deadline, "shell never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let status = p.stop(Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!status.success());
        assert!(log_tail(&log).contains("started"));
        assert!(!LIVE.lock().unwrap().contains_key(&p.pid()));
    }

    #[test]
    fn a_process_that_ignores_sigterm_is_killed_after_the_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("sh.log");
        let mut p = sh("trap '' TERM; echo ready; while :; do sleep 1; done", &log);
        // Wait until the trap is installed, signalled by the echo after it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log_tail(&log).contains("ready") {
            assert!(Instant::now() < deadline, "shell never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        p.stop(Duration::from_millis(300)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(p.exit_status().is_some());
    }

    #[test]
    fn an_exited_process_reports_its_log_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("sh.log");
        let mut p = sh("echo 'bind: address already in use' >&2; exit 3", &log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.exit_status().is_none() {
            assert!(Instant::now() < deadline, "shell never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        let err = p.ensure_running().unwrap_err();
        assert!(err.is_port_conflict());
        assert!(err.to_string().contains("address already in use"));
    }

    #[test]
    fn the_log_tail_keeps_only_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("x.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert!(tail.starts_with("line 60"));
        assert!(tail.ends_with("line 99"));
    }
}

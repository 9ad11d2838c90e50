//! Work directories: one fresh `acs-testenv-*` directory per control plane, tagged with the
//! owning process id so a later run can remove the directories of runs that were killed before
//! they could clean up (a kill skips every exit handler). Directories kept on purpose (a failed
//! start's logs, `keep_work_dir`) lose the tag and are never swept.

use std::path::{Path, PathBuf};

use crate::error::Error;

const PREFIX: &str = "acs-testenv-";
const OWNER_FILE: &str = "owner.pid";

/// Creates a fresh work directory under `parent`, owned by this process.
pub fn create(parent: &Path) -> Result<PathBuf, Error> {
    let dir_err = |source| Error::Dir {
        path: parent.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(parent).map_err(dir_err)?;
    let dir = tempfile::Builder::new()
        .prefix(PREFIX)
        .tempdir_in(parent)
        .map_err(dir_err)?
        .keep();
    let owner = dir.join(OWNER_FILE);
    std::fs::write(&owner, std::process::id().to_string()).map_err(|source| Error::Write {
        path: owner,
        source,
    })?;
    Ok(dir)
}

/// Marks a directory as kept on purpose, so no later sweep removes it.
pub fn mark_kept(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(OWNER_FILE));
}

/// Removes the `acs-testenv-*` directories under `parent` whose owning process is gone.
/// Best effort: anything unreadable is left alone.
pub fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX));
        if !is_ours || !path.is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = owner {
            if !process_exists(pid) {
                tracing::info!(dir = %path.display(), pid, "removing the work dir of a run that was killed");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists; nothing is sent.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_work_dir_whose_owner_died_is_swept_and_live_or_kept_ones_stay() {
        let parent = tempfile::tempdir().unwrap();
        let live = create(parent.path()).unwrap();
        let stale = create(parent.path()).unwrap();
        std::fs::write(stale.join(OWNER_FILE), dead_pid().to_string()).unwrap();
        let kept = create(parent.path()).unwrap();
        std::fs::write(kept.join(OWNER_FILE), dead_pid().to_string()).unwrap();
        mark_kept(&kept);
        let unrelated = parent.path().join("something-else");
        std::fs::create_dir(&unrelated).unwrap();

        sweep_stale(parent.path());

        assert!(live.is_dir());
        assert!(!stale.exists());
        assert!(kept.is_dir());
        assert!(unrelated.is_dir());
    }
}

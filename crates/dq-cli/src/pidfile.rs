//! `--pid-file`: refuse to start when it names a running process, write ours, remove it on exit.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Why the pid file could not be taken (exit code 4).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PidFileError {
    /// Another process, still running, wrote it.
    #[error("pid file {path} names process {pid}, which is running: is dq already running?")]
    Running {
        /// The file.
        path: PathBuf,
        /// The pid in it.
        pid: i32,
    },
    /// It could not be read or written.
    #[error("cannot use pid file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Our pid file; [`PidFile::remove`] deletes it if it still holds our pid.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    pid: u32,
}

/// Whether process `pid` exists. `EPERM` means it does, under another user.
fn is_running(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

impl PidFile {
    /// Takes `path` for this process: fails if it names another process that is running;
    /// replaces it if it is stale (its process is gone, or it holds no pid).
    pub(crate) fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        let io_error = |source| PidFileError::Io {
            path: path.to_owned(),
            source,
        };
        let me = std::process::id();
        match fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(pid) = text.trim().parse::<i32>() {
                    // A pid file left by an earlier run in a container can name our own pid;
                    // pid 0 and negative pids would signal process groups.
                    if pid > 0 && pid as u32 != me && is_running(pid) {
                        return Err(PidFileError::Running {
                            path: path.to_owned(),
                            pid,
                        });
                    }
                }
                tracing::warn!(
                    target: crate::logging::PROCESS,
                    "Replacing stale pid file {}.",
                    path.display()
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        fs::write(path, format!("{me}\n")).map_err(io_error)?;
        Ok(PidFile {
            path: path.to_owned(),
            pid: me,
        })
    }

    /// Deletes the file, unless another process has written its own pid there since.
    pub(crate) fn remove(self) {
        let ours = fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim().parse::<u32>() == Ok(self.pid));
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(
                    target: crate::logging::PROCESS,
                    "Could not remove pid file {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dq-cli-pidfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn writes_our_pid_and_removes_it() {
        let path = temp_path("fresh.pid");
        let _ = fs::remove_file(&path);
        let pf = PidFile::acquire(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        pf.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_running_process_blocks_and_a_stale_one_does_not() {
        let path = temp_path("running.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(&path, format!("{}\n", child.id())).unwrap();
        match PidFile::acquire(&path) {
            Err(PidFileError::Running { pid, .. }) => assert_eq!(pid as u32, child.id()),
            other => panic!("expected Running, got {other:?}"),
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let pf = PidFile::acquire(&path).unwrap();
        pf.remove();

        fs::write(&path, "not a pid").unwrap();
        PidFile::acquire(&path).unwrap().remove();
        assert!(!path.exists());
    }

    #[test]
    fn remove_keeps_a_file_another_process_took_over() {
        let path = temp_path("taken.pid");
        let _ = fs::remove_file(&path);
        let pf = PidFile::acquire(&path).unwrap();
        fs::write(&path, "1\n").unwrap();
        pf.remove();
        assert!(path.exists());
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_an_io_error() {
        let path = temp_path("no-such-dir").join("x.pid");
        assert!(matches!(
            PidFile::acquire(&path),
            Err(PidFileError::Io { .. })
        ));
    }
}

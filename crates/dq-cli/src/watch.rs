//! `--watch DIR`: poll a source tree for changes, and the build command that runs on one.
//!
//! Polling keeps this dependency-free and behaves the same on every file system (network
//! mounts and containers' bind mounts often miss inotify events); a tree of sources is small
//! enough that one scan a second costs nothing noticeable.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

/// How often the tree is scanned.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// A change is acted on once the tree has stayed the same for this long, so that an editor
/// saving several files, or a `git checkout`, triggers one build rather than several.
const SETTLE: Duration = Duration::from_millis(300);

/// Globs of files to watch when `--watch-include` is not given.
pub(crate) const DEFAULT_INCLUDE: &[&str] = &["*.rs", "*.toml"];

/// Whether `text` matches glob `pattern`: `**` matches anything, `*` anything but `/`, `?` one
/// character but `/`; everything else matches itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = &p[2..];
                // `**/x` also matches a plain `x`, with no directory before it.
                if let Some(after) = rest.strip_prefix(b"/") {
                    if go(after, t) {
                        return true;
                    }
                }
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            Some(b'*') => {
                let rest = &p[1..];
                for i in 0..=t.len() {
                    if go(rest, &t[i..]) {
                        return true;
                    }
                    if t.get(i) == Some(&b'/') {
                        return false;
                    }
                }
                false
            }
            Some(b'?') => t.first().is_some_and(|&c| c != b'/') && go(&p[1..], &t[1..]),
            Some(&c) => t.first() == Some(&c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Which files count as sources.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filter {
    /// `include` empty means [`DEFAULT_INCLUDE`].
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Filter {
        let include = if include.is_empty() {
            DEFAULT_INCLUDE.iter().map(|s| (*s).to_owned()).collect()
        } else {
            include.to_vec()
        };
        Filter {
            include,
            exclude: exclude.to_vec(),
        }
    }

    /// Whether the file at `rel` (relative to the watched directory, `/`-separated) is watched.
    /// A glob without `/` is matched against the file name only.
    pub(crate) fn wants(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let hit = |g: &String| {
            if g.contains('/') {
                glob_match(g, rel)
            } else {
                glob_match(g, name)
            }
        };
        self.include.iter().any(hit) && !self.exclude.iter().any(hit)
    }
}

/// What the tree looked like: each watched file's modification time and size.
pub(crate) type Snapshot = HashMap<PathBuf, (Option<SystemTime>, u64)>;

/// Scans `root` for watched files. Hidden directories (`.git`) and `target` directories are
/// skipped: builds write there, and reacting to our own build's output would loop forever.
pub(crate) fn scan(root: &Path, filter: &Filter) -> Snapshot {
    let mut snapshot = Snapshot::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if kind.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    dirs.push(path);
                }
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if !filter.wants(&rel) {
                continue;
            }
            if let Ok(meta) = entry.metadata() {
                snapshot.insert(path, (meta.modified().ok(), meta.len()));
            }
        }
    }
    snapshot
}

/// The files that differ between two snapshots (added, removed or changed), sorted.
pub(crate) fn diff(old: &Snapshot, new: &Snapshot) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = new
        .iter()
        .filter(|(p, v)| old.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .chain(old.keys().filter(|p| !new.contains_key(*p)).cloned())
        .collect();
    changed.sort();
    changed
}

/// Starts a thread that scans `root` and sends the changed files whenever the tree changed and
/// then settled. It ends when the receiver is dropped.
pub(crate) fn spawn(root: PathBuf, filter: Filter) -> mpsc::Receiver<Vec<PathBuf>> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("dq-watch".into())
        .spawn(move || {
            let mut seen = scan(&root, &filter);
            loop {
                std::thread::sleep(POLL_EVERY);
                let mut now = scan(&root, &filter);
                if diff(&seen, &now).is_empty() {
                    continue;
                }
                // Wait for the writes to settle.
                loop {
                    std::thread::sleep(SETTLE);
                    let later = scan(&root, &filter);
                    if diff(&now, &later).is_empty() {
                        break;
                    }
                    now = later;
                }
                let changed = diff(&seen, &now);
                seen = now;
                if changed.is_empty() {
                    continue;
                }
                if tx.blocking_send(changed).is_err() {
                    return;
                }
            }
        })
        .expect("dq: cannot start the --watch thread");
    rx
}

/// The default build command for the binary at `exe`: `cargo build` of that very binary,
/// with the profile and target kind its place in the target directory shows
/// (`target/release/worker` → `cargo build --release --bin worker`,
/// `target/debug/examples/worker` → `cargo build --example worker`).
pub(crate) fn default_build_command(exe: &Path) -> String {
    let name = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut dir = exe.parent();
    let example = dir
        .and_then(Path::file_name)
        .is_some_and(|d| d == "examples");
    if example {
        dir = dir.and_then(Path::parent);
    }
    let mut cmd = String::from("cargo build");
    match dir.and_then(Path::file_name).and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some("release") => cmd.push_str(" --release"),
        Some(profile) => {
            cmd.push_str(" --profile ");
            cmd.push_str(profile);
        }
    }
    cmd.push_str(if example { " --example " } else { " --bin " });
    cmd.push_str(&name);
    cmd
}

/// How a build went.
#[derive(Debug)]
pub(crate) struct BuildOutcome {
    /// Whether the command exited 0.
    pub(crate) ok: bool,
    /// Its exit status, as text.
    pub(crate) status: String,
    /// What it wrote, stdout then stderr.
    pub(crate) output: String,
}

/// Runs `command` with `sh -c` in `dir`, capturing its output.
pub(crate) async fn build(command: &str, dir: &Path) -> BuildOutcome {
    let result = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match result {
        Ok(out) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            BuildOutcome {
                ok: out.status.success(),
                status: out.status.to_string(),
                output,
            }
        }
        Err(e) => BuildOutcome {
            ok: false,
            status: "not started".to_owned(),
            output: format!("cannot run `sh -c {command}`: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("*.rs", "main.rs", true),
            ("*.rs", "main.rsx", false),
            ("*.rs", "src/main.rs", false),
            ("src/*.rs", "src/main.rs", true),
            ("src/*.rs", "src/a/main.rs", false),
            ("**/*.rs", "main.rs", true),
            ("**/*.rs", "src/a/main.rs", true),
            ("src/**", "src/a/b", true),
            ("**.rs", "src/a/main.rs", true),
            ("?.rs", "a.rs", true),
            ("?.rs", "ab.rs", false),
            ("Cargo.toml", "Cargo.toml", true),
            ("", "", true),
            ("a", "", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p:?} vs {t:?}");
        }
    }

    #[test]
    fn filter_matches_names_or_paths() {
        let f = Filter::new(&[], &["gen/*".to_owned()]);
        assert!(f.wants("src/lib.rs"));
        assert!(f.wants("Cargo.toml"));
        assert!(!f.wants("README.md"));
        assert!(!f.wants("gen/out.rs"));
        let f = Filter::new(&["*.sql".to_owned()], &[]);
        assert!(f.wants("db/x.sql"));
        assert!(!f.wants("src/lib.rs"));
    }

    #[test]
    fn scan_and_diff_see_edits_additions_and_removals() {
        let root = std::env::temp_dir().join(format!(
            "dq-cli-watch-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("src")).unwrap();
        fs::create_dir_all(root.join("target/debug")).unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::write(root.join("src/lib.rs"), "fn a() {}").unwrap();
        fs::write(root.join("target/debug/x.rs"), "").unwrap();
        fs::write(root.join(".git/y.rs"), "").unwrap();
        fs::write(root.join("notes.txt"), "").unwrap();
        let filter = Filter::new(&[], &[]);
        let a = scan(&root, &filter);
        assert_eq!(a.len(), 1, "{a:?}");

        fs::write(root.join("src/lib.rs"), "fn a() { /* longer */ }").unwrap();
        fs::write(root.join("src/new.rs"), "").unwrap();
        let b = scan(&root, &filter);
        assert_eq!(
            diff(&a, &b),
            [root.join("src/lib.rs"), root.join("src/new.rs")]
        );
        fs::remove_file(root.join("src/new.rs")).unwrap();
        let c = scan(&root, &filter);
        assert_eq!(diff(&b, &c), [root.join("src/new.rs")]);
        assert!(diff(&c, &c).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn default_build_commands_follow_the_binary() {
        let check = |exe: &str, want: &str| assert_eq!(default_build_command(Path::new(exe)), want);
        check("/p/target/debug/worker", "cargo build --bin worker");
        check(
            "/p/target/release/worker",
            "cargo build --release --bin worker",
        );
        check("/p/target/debug/examples/w", "cargo build --example w");
        check(
            "/p/target/bench/examples/w",
            "cargo build --profile bench --example w",
        );
    }

    #[tokio::test]
    async fn build_reports_status_and_output() {
        let dir = std::env::temp_dir();
        let ok = build("echo built", &dir).await;
        assert!(ok.ok);
        assert_eq!(ok.output, "built\n");
        let bad = build("echo 'error[E0308]: mismatched types' >&2; exit 101", &dir).await;
        assert!(!bad.ok);
        assert!(bad.status.contains("101"), "{}", bad.status);
        assert!(bad.output.contains("error[E0308]"));
    }
}

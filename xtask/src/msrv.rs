//! The `msrv` step of `cargo xtask test`: no package in Cargo.lock asks for a newer Rust than the
//! workspace's `rust-version`.
//!
//! The machines that run the test command have only the current stable toolchain, so a
//! dependency that needs a newer Rust than our MSRV would build here and break users on the
//! MSRV. `cargo metadata` carries every resolved package's own `rust-version`; this step compares
//! them. (The workspace's resolver "3" already prefers compatible versions on `cargo update`;
//! this catches a lock file updated otherwise.)

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cmd, Ctx};

/// `1.88` or `1.88.0` as (1, 88, 0).
fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.trim().split('.').map(|p| p.parse::<u64>().ok());
    let major = it.next()??;
    let minor = it.next().flatten().unwrap_or(0);
    let patch = it.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Packages whose `rust_version` is newer than `msrv`, as "name version (needs X)".
fn too_new(meta: &Value, msrv: (u64, u64, u64)) -> Result<Vec<String>> {
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    let mut out = Vec::new();
    for p in packages {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        if parse(rv).is_some_and(|v| v > msrv) {
            out.push(format!(
                "{} {} (needs Rust {rv})",
                p["name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?")
            ));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    let manifest = std::fs::read_to_string(ctx.root.join("Cargo.toml"))
        .context("reading the workspace Cargo.toml")?;
    let msrv_text = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rust-version"))
        .filter_map(|r| r.trim().strip_prefix('='))
        .map(|r| r.trim().trim_matches('"').to_owned())
        .next()
        .context("the workspace Cargo.toml has no rust-version")?;
    let msrv = parse(&msrv_text).with_context(|| format!("rust-version {msrv_text:?}"))?;
    let out = cmd::output(
        ctx.cargo()
            .args(["metadata", "--format-version", "1", "--locked"]),
    )?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let bad = too_new(&meta, msrv)?;
    if !bad.is_empty() {
        bail!(
            "Cargo.lock holds packages that need a newer Rust than the workspace's rust-version \
             {msrv_text}:\n  {}\npin an older version (`cargo update -p NAME --precise VERSION`) \
             or raise rust-version on purpose",
            bad.join("\n  ")
        );
    }
    println!("msrv: every locked package builds on Rust {msrv_text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse("1.88"), Some((1, 88, 0)));
        assert_eq!(parse("1.89.1"), Some((1, 89, 1)));
        assert_eq!(parse("x"), None);
        let meta = json!({"packages": [
            {"name": "old", "version": "1.0.0", "rust_version": "1.63"},
            {"name": "none", "version": "1.0.0", "rust_version": null},
            {"name": "same", "version": "2.0.0", "rust_version": "1.88.0"},
            {"name": "uuid", "version": "1.29.3", "rust_version": "1.89.0"},
        ]});
        assert_eq!(
            too_new(&meta, (1, 88, 0)).unwrap(),
            ["uuid 1.29.3 (needs Rust 1.89.0)"]
        );
    }
}

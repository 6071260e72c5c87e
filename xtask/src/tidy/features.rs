//! The facade's features build only what they name: `dq` with `features = ["cli", "redis"]`
//! builds no RabbitMQ client, `["cli"]` alone no Redis client, and so on.
//!
//! For each set of features below, `cargo tree -p dq --no-default-features --features <set>
//! -e normal` lists what a user's build of `dq` compiles. A crate of [`GUARDED`] must be there
//! exactly when one of the features that stand for it is on (after expanding `full` and the
//! like through dq's manifest): there when asked for, so the check is not vacuous, and absent
//! otherwise. The worker command's broker features must follow the facade's (`redis` and `amqp`
//! forwarded to `dq-cli`), which `cargo tree` shows as dq-cli's enabled features.
//!
//! Each call resolves from Cargo.lock without building anything: the whole check takes about a
//! second.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cmd, Ctx};

/// The crates that only some features of `dq` may build, with those features. A feature of
/// `dq` that brings in a dependency must be listed here, so a new one is a decision too.
const GUARDED: &[(&str, &[&str])] = &[
    ("dq-macros", &["macros"]),
    ("dq-broker-stub", &["stub"]),
    ("dq-broker-redis", &["redis"]),
    ("dq-broker-amqp", &["amqp"]),
    ("lapin", &["amqp"]),
    ("dq-cli", &["cli"]),
    ("clap", &["cli"]),
    ("dq-results", &["results"]),
    ("dq-ratelimit", &["ratelimit"]),
    ("dq-periodic", &["periodic"]),
    ("croner", &["periodic"]),
    ("dq-otel", &["otel"]),
    ("opentelemetry", &["otel"]),
    ("dq-sentry", &["sentry"]),
    ("sentry-core", &["sentry"]),
    ("dq-metrics", &["prometheus"]),
    ("metrics", &["prometheus"]),
    ("dq-abort", &["abort", "dashboard"]),
    ("dq-dashboard", &["dashboard"]),
    ("maud", &["dashboard"]),
    ("dq-redis-conn", REDIS_USERS),
    ("redis", REDIS_USERS),
    ("deadpool-redis", REDIS_USERS),
    (
        "rustls",
        &[
            "redis",
            "results",
            "ratelimit",
            "periodic",
            "abort",
            "amqp",
            "dashboard",
        ],
    ),
];

/// The features whose crates talk to Redis (`periodic`: the claims of a broker that cannot
/// claim ticks itself; `abort`: dramatiq-abort's events; `dashboard`: its abort action, on
/// those events).
const REDIS_USERS: &[&str] = &[
    "redis",
    "results",
    "ratelimit",
    "periodic",
    "abort",
    "dashboard",
];

/// The features of dq that dq-cli has too, and that dq must forward to it.
const CLI_BROKERS: &[&str] = &["redis", "amqp"];

/// The sets checked besides each single feature, none, and the defaults: the ones users write.
const COMBINATIONS: &[&[&str]] = &[
    &["cli", "redis"],
    &["cli", "amqp"],
    &["results", "ratelimit"],
    &["cli", "redis", "prometheus"],
    &["cli", "abort"],
    &["cli", "dashboard"],
];

/// Checks every set of features; returns the problems, and how many sets were checked.
pub(crate) fn check(ctx: &Ctx, meta: &Value) -> Result<(Vec<String>, usize)> {
    let features = facade_features(meta)?;
    let mut problems = untabled(&features);
    let mut sets: Vec<Option<Vec<String>>> = vec![None, Some(Vec::new())];
    sets.extend(
        features
            .keys()
            .filter(|f| *f != "default")
            .map(|f| Some(vec![f.clone()])),
    );
    sets.extend(
        COMBINATIONS
            .iter()
            .map(|c| Some(c.iter().map(|f| (*f).to_owned()).collect())),
    );
    for set in &sets {
        let enabled = match set {
            Some(named) => expand(&features, named),
            None => expand(&features, &["default".to_owned()]),
        };
        let tree = tree(ctx, set.as_deref())?;
        let shown = match set {
            Some(s) if s.is_empty() => "no features".to_owned(),
            Some(s) => format!("features {}", s.join(",")),
            None => "the default features".to_owned(),
        };
        problems.extend(
            check_tree(&enabled, &tree)
                .into_iter()
                .map(|p| format!("dq with {shown}: {p}")),
        );
    }
    Ok((problems, sets.len()))
}

/// dq's `[features]`, from `cargo metadata`.
fn facade_features(meta: &Value) -> Result<BTreeMap<String, Vec<String>>> {
    let dq = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "dq")
        .context("no package dq in the workspace")?;
    let table = dq["features"]
        .as_object()
        .context("dq's features are not a table")?;
    Ok(table
        .iter()
        .map(|(name, items)| {
            let items = items
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect();
            (name.clone(), items)
        })
        .collect())
}

/// Features of dq that bring in a dependency but that no row of [`GUARDED`] stands for.
fn untabled(features: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    features
        .iter()
        .filter(|(_, items)| items.iter().any(|i| i.starts_with("dep:")))
        .filter(|(name, _)| !GUARDED.iter().any(|(_, fs)| fs.contains(&name.as_str())))
        .map(|(name, _)| {
            format!(
                "dq's feature {name} is not in xtask's table of what each feature may build \
                 (xtask/src/tidy/features.rs): add the crates it stands for"
            )
        })
        .collect()
}

/// `named` and every feature of dq they turn on, transitively (`full` is its members).
fn expand(features: &BTreeMap<String, Vec<String>>, named: &[String]) -> BTreeSet<String> {
    let mut on = BTreeSet::new();
    let mut todo: Vec<String> = named.to_vec();
    while let Some(f) = todo.pop() {
        if !on.insert(f.clone()) {
            continue;
        }
        for item in features.get(&f).into_iter().flatten() {
            // `dep:x` and `crate?/feature` are not features of dq itself.
            if !item.starts_with("dep:") && !item.contains('/') {
                todo.push(item.clone());
            }
        }
    }
    on
}

/// What a build of dq with `set` (`None`: the defaults) compiles: each package, with the
/// features it is built with.
fn tree(ctx: &Ctx, set: Option<&[String]>) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut c = ctx.cargo();
    c.args(["tree", "-p", "dq", "-e", "normal", "--locked"]);
    c.args(["--prefix", "none", "--format", "{p}|{f}"]);
    if let Some(set) = set {
        c.arg("--no-default-features");
        if !set.is_empty() {
            c.args(["--features", &set.join(",")]);
        }
    }
    let out = cmd::output(&mut c)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            cmd::display(&c),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_tree(&String::from_utf8_lossy(&out.stdout)))
}

/// Lines of `{p}|{f}`: `name vX.Y.Z [(path)]|feature,feature[ (*)]`.
fn parse_tree(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        let Some(name) = package.split_whitespace().next() else {
            continue;
        };
        let features = features.trim_end().trim_end_matches("(*)").trim_end();
        out.entry(name.to_owned()).or_default().extend(
            features
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned),
        );
    }
    out
}

/// The problems of one build: guarded crates present without a feature that stands for them,
/// or absent with one; dq-cli's brokers not those of the facade.
fn check_tree(
    enabled: &BTreeSet<String>,
    tree: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (krate, by) in GUARDED {
        let wanted = by.iter().any(|f| enabled.contains(*f));
        let built = tree.contains_key(*krate);
        if built && !wanted {
            problems.push(format!(
                "builds {krate}, which only feature(s) {} may bring in",
                by.join(", ")
            ));
        } else if wanted && !built {
            problems.push(format!(
                "does not build {krate}, which feature(s) {} stand for",
                by.join(", ")
            ));
        }
    }
    if let Some(cli) = tree.get("dq-cli") {
        let expected: BTreeSet<String> = CLI_BROKERS
            .iter()
            .filter(|f| enabled.contains(**f))
            .map(|f| (*f).to_owned())
            .collect();
        let actual: BTreeSet<String> = cli
            .iter()
            .filter(|f| CLI_BROKERS.contains(&f.as_str()))
            .cloned()
            .collect();
        if actual != expected {
            problems.push(format!(
                "builds dq-cli with broker features {actual:?}, not the facade's {expected:?}: \
                 forward them in crates/dq/Cargo.toml (`redis = [.., \"dq-cli?/redis\"]`)"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn features() -> BTreeMap<String, Vec<String>> {
        [
            ("default", vec!["macros"]),
            ("macros", vec!["dep:dq-macros"]),
            ("redis", vec!["dep:dq-broker-redis", "dq-cli?/redis"]),
            ("cli", vec!["dep:dq-cli"]),
            ("full", vec!["macros", "redis", "cli"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect()
    }

    #[test]
    fn aggregates_expand_to_their_members() {
        let f = features();
        assert_eq!(
            expand(&f, &["full".to_owned()]),
            set(&["full", "macros", "redis", "cli"])
        );
        assert_eq!(expand(&f, &["redis".to_owned()]), set(&["redis"]));
    }

    #[test]
    fn trees_parse_with_features_and_repeats() {
        let tree = parse_tree(
            "dq v0.1.0 (/w/crates/dq)|cli,redis\n\
             dq-cli v0.1.0 (/w/crates/dq-cli)|redis\n\
             redis v1.8.2|aio,script (*)\n\
             dq-core v0.1.0 (/w/crates/dq-core)| (*)\n",
        );
        assert_eq!(tree["dq"], set(&["cli", "redis"]));
        assert_eq!(tree["dq-cli"], set(&["redis"]));
        assert_eq!(tree["redis"], set(&["aio", "script"]));
        assert!(tree["dq-core"].is_empty());
    }

    #[test]
    fn a_client_no_feature_names_is_a_problem() {
        let tree = parse_tree(
            "dq v0.1.0|cli,redis\ndq-cli v0.1.0|redis,amqp\nlapin v4.12.0|\nclap v4.5.0|\n\
             dq-broker-redis v0.1.0|\ndq-broker-amqp v0.1.0|\ndq-redis-conn v0.1.0|\n\
             redis v1.8.2|\ndeadpool-redis v0.23.1|\nrustls v0.23.0|\n",
        );
        let problems = check_tree(&set(&["cli", "redis"]), &tree).join("\n");
        assert!(problems.contains("builds lapin"), "{problems}");
        assert!(problems.contains("builds dq-broker-amqp"), "{problems}");
        assert!(problems.contains("broker features"), "{problems}");
        assert!(!problems.contains("builds redis"), "{problems}");
    }

    #[test]
    fn a_missing_crate_and_an_untabled_feature_are_problems() {
        let tree = parse_tree("dq v0.1.0|cli\n");
        let problems = check_tree(&set(&["cli"]), &tree).join("\n");
        assert!(problems.contains("does not build dq-cli"), "{problems}");
        let mut f = features();
        f.insert("webhooks".to_owned(), vec!["dep:dq-webhooks".to_owned()]);
        let untabled = untabled(&f).join("\n");
        assert!(untabled.contains("feature webhooks"), "{untabled}");
        assert!(!untabled.contains("feature full"), "{untabled}");
    }
}

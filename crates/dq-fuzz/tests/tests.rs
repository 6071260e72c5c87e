//! The short bounded fuzz run of `cargo xtask test`, on stable and with no fuzzer: every
//! committed corpus input (`fuzz/corpus/TARGET/`) and regression input
//! (`fuzz/regressions/TARGET/`) goes through its target, then deterministic pseudo-random
//! mutations of them (a fixed-seed xorshift, so a failure reproduces), a bounded number per
//! target. A panic names the target and the input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use dq_fuzz::{Target, TARGETS};

/// Mutated inputs per target.
const MUTATIONS: usize = 20_000;

/// Bytes JSON, RESP and AMQP parsers care about, spliced in by the mutator.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b",",
    b":",
    b"null",
    b"true",
    b"-",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"9223372036854775807",
    b"\\u",
    b"\\ud800",
    b"NaN",
    b"Infinity",
    b"*2\r\n",
    b"$-1\r\n",
    b"$3\r\nabc\r\n",
    b"*-1\r\n",
    b":1\r\n",
    b"\r\n",
    b"%1\r\n",
    b"\xff\xff\xff\xff",
    b"\x00\x00",
    b"\n",
    b"\"eta\"",
    b"\"broker_priority\"",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/KIND/TARGET/`, sorted by name (none when the directory does not exist).
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `target` on `input`, turning a panic into one that shows the input.
fn run(target: &Target, what: &str, input: &[u8]) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        let cause = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(not a string)");
        panic!(
            "fuzz target {} panicked on {what}: {cause}\ninput ({} bytes): {:?}",
            target.name,
            input.len(),
            String::from_utf8_lossy(input)
        );
    }
}

/// xorshift64: a few lines, no dependency, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four edits of `seed`: bit flips, byte changes, inserted tokens, deletions,
/// duplications, and splices with `other`.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let copy = out[start..end].to_vec();
                out.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(64)).min(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[start..end]);
            }
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

#[test]
fn every_target_has_a_corpus() {
    for target in TARGETS {
        assert!(
            !inputs("corpus", target.name).is_empty(),
            "fuzz/corpus/{} has no seed inputs",
            target.name
        );
    }
}

#[test]
fn corpus_and_regressions_replay() {
    for target in TARGETS {
        for kind in ["corpus", "regressions"] {
            for (path, bytes) in inputs(kind, target.name) {
                run(target, &path.display().to_string(), &bytes);
            }
        }
    }
}

#[test]
fn mutations_of_the_corpus_run() {
    for (n, target) in TARGETS.iter().enumerate() {
        let seeds: Vec<Vec<u8>> = ["corpus", "regressions"]
            .iter()
            .flat_map(|kind| inputs(kind, target.name))
            .map(|(_, bytes)| bytes)
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
        for i in 0..MUTATIONS {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            run(target, &format!("mutation {i}"), &input);
        }
    }
}

/// The seeds mean what their names say, so the corpus starts where the interesting code is.
#[test]
fn seeds_reach_the_code_under_test() {
    let read = |target: &str, name: &str| {
        std::fs::read(fuzz_dir().join("corpus").join(target).join(name)).expect("a seed")
    };
    assert_eq!(
        dq::amqp::__fuzz::delivery_properties(&read("amqp_properties", "x_death")),
        Some(Some(1_795_397_559_000))
    );
    // Past i64's milliseconds: no time, where it used to overflow.
    assert_eq!(
        dq::amqp::__fuzz::delivery_properties(&read("amqp_properties", "x_death_far_future")),
        Some(None)
    );
    assert_eq!(
        dq::redis::__fuzz::fetch_reply(&read("redis_dispatch", "two_and_an_orphan")),
        Some((2, 1))
    );
    assert_eq!(
        dq::redis::__fuzz::fetch_reply(&read("redis_dispatch", "nil")),
        Some((0, 0))
    );
    let m = dq::cli::admin::send_message("q", "a", "[1]", "{}", Some("{\"max_retries\":3}"))
        .expect("a message");
    assert_eq!(m.options.max_retries(), Some(Some(3)));
}

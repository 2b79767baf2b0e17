//! Replays the fuzzers' saved inputs in a normal test run: every file under
//! `transport/fuzz/regressions/<target>/` (inputs that once crashed a target) and the
//! committed seeds under `transport/fuzz/corpus/<target>/` go through the same check the
//! fuzz target runs (`transport/fuzz/src/checks.rs`, included here by path), which panics
//! if a decoder panics or accepts something that does not re-encode. See docs/fuzzing.md.

#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs every file in `<fuzz>/<kind>/<target>/` through its target's check; returns how
/// many files ran.
fn replay(kind: &str) -> usize {
    let root = fuzz_dir().join(kind);
    let mut ran = 0;
    if let Ok(dirs) = std::fs::read_dir(&root) {
        for dir in dirs {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let Some((_, check)) = checks::TARGETS.iter().find(|(t, _)| *t == name) else {
                panic!("{} names no fuzz target", dir.display());
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).unwrap();
                eprintln!("replaying {}", file.display());
                check(&data);
                ran += 1;
            }
        }
    }
    ran
}

#[test]
fn saved_crash_inputs_no_longer_crash() {
    replay("regressions");
}

#[test]
fn committed_seeds_pass_every_check() {
    let ran = replay("corpus");
    assert!(
        ran >= checks::TARGETS.len(),
        "expected seeds for every target, replayed {ran} files"
    );
}

/// The seeds are valid inputs, so they exercise the round-trip half of each check (a
/// seed that no longer decodes would leave the fuzzer starting from nothing).
#[test]
fn seeds_are_accepted_by_their_decoders() {
    use acs_kgc::*;
    let corpus = fuzz_dir().join("corpus");
    let read = |t: &str, f: &str| std::fs::read(corpus.join(t).join(f)).unwrap();
    let f = checks::fixture();
    assert!(Envelope::from_bytes(&read("kgc_envelope", "up")).is_ok());
    let request = RegistrationRequest::from_bytes(&read("kgc_registration_request", "valid"));
    let mut registry = Registry::new(f.kgc.server());
    f.kgc
        .register(
            &mut registry,
            &request.unwrap(),
            checks::NOW,
            &mut checks::fixture_rng(),
        )
        .unwrap();
    let response =
        RegistrationResponse::from_bytes(&read("kgc_registration_response", "valid")).unwrap();
    let (pending, _) = f
        .user
        .register(&f.descriptor, checks::NOW, &mut checks::fixture_rng())
        .unwrap();
    pending.finish(&response).unwrap();
    assert!(SignedDescriptor::from_bytes(&read("kgc_descriptor", "valid")).is_ok());
    assert_eq!(
        Registry::from_bytes(&read("kgc_registry", "one-user"))
            .unwrap()
            .len(),
        1
    );
    assert!(UserSecretKey::from_bytes(&read("kgc_user_secret_key", "valid")).is_ok());
}

/// The saved-input folders name real targets (a typo would silently replay nothing).
#[test]
fn every_target_has_a_fuzz_target_file() {
    for (name, _) in checks::TARGETS {
        let file = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(file.is_file(), "no fuzz target file for {name}");
    }
}

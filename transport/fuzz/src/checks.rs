//! One check per parser of untrusted bytes. Each takes arbitrary bytes, runs the decoder,
//! and panics (the fuzzer's "crash") only if the decoder panics or breaks a property:
//! whatever a decoder accepts must re-encode to the same bytes where the format is
//! canonical, or to bytes that decode to the same value where it is not (bincode bodies,
//! see `wire_body`).
//!
//! This file is shared: the fuzz targets in `transport/fuzz/fuzz_targets/` call it, and
//! `transport/tests/fuzz_regressions.rs` includes it by path to replay saved inputs in a
//! normal `cargo test`. It may use only crates both of them have: acs-transport, acs-kgc,
//! acs-engine, tokio, rand and tempfile.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use acs_engine::round::{Output, RoundConfig};
use acs_kgc::{
    Direction, Envelope, Kgc, LongTermKey, MasterSecret, RegistrationRequest, RegistrationResponse,
    Registry, RegistryEntry, SignedDescriptor, UserIdentity, UserPseudonym, UserSecretKey,
    ENTRY_BYTES,
};
use acs_transport::config::{EntryFile, ExchangeFile};
use acs_transport::wire::{self, MsgType, WireMessage, HEADER_LEN};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A check: panics on a finding.
pub type Check = fn(&[u8]);

/// Every check, by the name of its fuzz target (and of its corpus and regressions folder).
pub const TARGETS: &[(&str, Check)] = &[
    ("wire_frame", wire_frame),
    ("wire_body", wire_body),
    ("kgc_envelope", kgc_envelope),
    ("kgc_registration_request", kgc_registration_request),
    ("kgc_registration_response", kgc_registration_response),
    ("kgc_descriptor", kgc_descriptor),
    ("kgc_registry", kgc_registry),
    ("kgc_user_secret_key", kgc_user_secret_key),
    ("kgc_master_file", kgc_master_file),
    ("engine_output", engine_output),
    ("config_toml", config_toml),
];

/// The fixed server time of the registration fixtures (Unix seconds).
pub const NOW: u64 = 1_790_000_000;
/// The round the envelope fixtures are sealed for.
pub const ROUND: u64 = 7;

/// A fixed exchange server and one fixed user registered with it: the keys the seeds
/// were made with (`make_seeds`), so a seed passes every check and mutations of it reach
/// the code behind the AEAD and signature checks' early exits.
pub struct Fixture {
    /// The exchange server's KGC (master seed `[7; 32]`).
    pub kgc: Kgc,
    /// Its signed descriptor.
    pub descriptor: SignedDescriptor,
    /// The user (identity seed `[9; 32]`).
    pub user: UserIdentity,
    /// Their long-term key (a pairing to compute: cached here, not per input).
    pub key: LongTermKey,
}

/// The fixture, built once per process (a KGC costs a few G2 operations).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let kgc = Kgc::new(MasterSecret::from_seed([7; 32]));
        let descriptor = kgc.descriptor([3; 32], NOW);
        let user = UserIdentity::from_seed([9; 32]).expect("fixed seed");
        let key = kgc.agree(user.pseudonym());
        Fixture {
            kgc,
            descriptor,
            user,
            key,
        }
    })
}

/// The deterministic randomness the registration fixtures use: the user's pending
/// registration is the same on every call, so a response made for it once opens again.
pub fn fixture_rng() -> StdRng {
    StdRng::seed_from_u64(0xAC5)
}

/// A scratch directory for the checks that go through files (one per process).
fn scratch() -> &'static Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().expect("temporary directory"))
        .path()
}

/// Frames read one after another off an arbitrary byte stream (any link: user ↔ relay,
/// relay ↔ exchange, exchange ↔ exchange). Every frame read must be within its type's cap
/// and be exactly its header plus body as it came off the stream; its body then goes
/// through the body checks of its type.
pub fn wire_frame(data: &[u8]) {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime")
    });
    let mut rest = data;
    loop {
        let before = rest;
        let read = rt.block_on(wire::read_frame(&mut rest, Duration::from_secs(5)));
        let frame = match read {
            Ok(frame) => frame,
            Err(e) => {
                // Every error has a notice code or is a plain disconnect; none panics.
                let _ = e.notice_code();
                let _ = e.to_string();
                break;
            }
        };
        let used = before.len() - rest.len();
        assert!(frame.body.len() <= frame.ty.cap(), "body over the cap");
        let header = wire::header(frame.ty, frame.body.len()).expect("under the cap");
        assert_eq!(
            &before[..HEADER_LEN],
            &header[..],
            "header does not re-encode"
        );
        assert_eq!(
            &before[HEADER_LEN..used],
            &frame.body[..],
            "body is not the bytes read"
        );
        let parsed = wire::parse_header(&header).expect("a header we wrote parses");
        assert_eq!(parsed, (frame.ty, frame.body.len()));
        body_checks(frame.ty, &frame.body);
        let _ = frame.clone().into_remote_error();
    }
}

/// One frame body of a type chosen by the first byte, decoded as that type.
pub fn wire_body(data: &[u8]) {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let ty = MsgType::ALL[tag as usize % MsgType::ALL.len()];
    body_checks(ty, body);
}

fn body_checks(ty: MsgType, body: &[u8]) {
    use acs_transport::wire::*;
    match ty {
        MsgType::ErrorNotice => body_round_trip::<ErrorNotice>(body, |_| ()),
        MsgType::RoundAnnounce => body_round_trip::<RoundAnnounce>(body, |_| ()),
        MsgType::SealedEnvelope => body_round_trip::<SealedEnvelope>(body, |m| {
            let _ = check_server(MsgType::SealedEnvelope, m.server);
            kgc_envelope(&m.sealed);
        }),
        MsgType::OutputShare => body_round_trip::<OutputShare>(body, |m| {
            let _ = check_server(MsgType::OutputShare, m.server);
            kgc_envelope(&m.sealed);
        }),
        MsgType::RelayBatch => body_round_trip::<RelayBatch>(body, |m| {
            for e in &m.entries {
                let _ = Envelope::from_bytes(&e.sealed);
            }
        }),
        MsgType::RelayOutputs => body_round_trip::<RelayOutputs>(body, |m| {
            for e in &m.outputs {
                let _ = Envelope::from_bytes(&e.sealed);
            }
        }),
        MsgType::RegisterRequest => body_round_trip::<RegisterRequest>(body, |m| {
            let _ = check_server(MsgType::RegisterRequest, m.server);
            let _ = RegistrationRequest::from_bytes(&m.body);
        }),
        MsgType::RegisterResponse => body_round_trip::<RegisterResponse>(body, |m| {
            let _ = RegistrationResponse::from_bytes(&m.body);
        }),
        MsgType::RelayRegisterRequest => body_round_trip::<RelayRegisterRequest>(body, |m| {
            let _ = RegistrationRequest::from_bytes(&m.body);
        }),
        MsgType::RelayRegisterResponse => body_round_trip::<RelayRegisterResponse>(body, |m| {
            let _ = RegistrationResponse::from_bytes(&m.body);
        }),
        MsgType::PeerHello => body_round_trip::<PeerHello>(body, |m| {
            let _ = check_server(MsgType::PeerHello, m.party);
        }),
        // The engine's own message: raw bytes, no decoder here (the engine checks lengths).
        MsgType::MpcData => {}
        MsgType::OnlineSetHash => body_round_trip::<OnlineSetHash>(body, |_| ()),
        MsgType::CommitVote => body_round_trip::<CommitVote>(body, |_| ()),
        MsgType::OpeningComplaint => body_round_trip::<OpeningComplaint>(body, |m| {
            let _ = check_server(MsgType::OpeningComplaint, m.accuser);
        }),
        MsgType::RejoinState => body_round_trip::<RejoinState>(body, |_| ()),
        MsgType::RejoinData => body_round_trip::<RejoinData>(body, |_| ()),
    }
}

/// If `body` decodes as `T`: encoding the value gives a frame of `T`'s type whose body
/// decodes to the same value and re-encodes to the same bytes (a fixed point). The
/// re-encoding need not equal `body` itself: bincode's varints are not canonical (see
/// docs/fuzzing.md), so several bodies can decode to one value.
fn body_round_trip<T: WireMessage + PartialEq + Debug>(body: &[u8], more: impl FnOnce(&T)) {
    let Ok(value) = wire::decode_body::<T>(T::TYPE, body) else {
        return;
    };
    let frame = wire::encode_frame(&value).expect("a decoded value encodes");
    let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().expect("header");
    assert_eq!(
        wire::parse_header(&header).expect("our header parses"),
        (T::TYPE, frame.len() - HEADER_LEN)
    );
    let again: T = wire::decode_body(T::TYPE, &frame[HEADER_LEN..]).expect("re-decodes");
    assert_eq!(again, value, "value changed through encode/decode");
    let third = wire::encode_frame(&again).expect("encodes");
    assert_eq!(third, frame, "encoding is not a fixed point");
    more(&value);
}

/// `Envelope::from_bytes` / `from_vec` (relay and exchange intake, user outputs), then
/// opening with the fixture user's key in both directions.
pub fn kgc_envelope(data: &[u8]) {
    let a = Envelope::from_bytes(data);
    let b = Envelope::from_vec(data.to_vec());
    assert_eq!(a.is_ok(), b.is_ok(), "from_bytes and from_vec disagree");
    let Ok(env) = a else {
        return;
    };
    assert_eq!(env.as_bytes(), data, "accepted envelope does not re-encode");
    assert_eq!(b.expect("checked").into_bytes(), data);
    let _ = env.tag();
    let _ = format!("{env:?}");
    let key = &fixture().key;
    for direction in [Direction::UserToServer, Direction::ServerToUser] {
        if let Ok(share) = key.open(ROUND, direction, &env) {
            assert_eq!(share.len(), env.share_len());
        }
    }
}

/// `RegistrationRequest::from_bytes` (exchange server, from a relay), then the whole
/// server-side registration with the fixture KGC.
pub fn kgc_registration_request(data: &[u8]) {
    let Ok(request) = RegistrationRequest::from_bytes(data) else {
        return;
    };
    assert_eq!(
        request.as_bytes(),
        data,
        "accepted request does not re-encode"
    );
    let _ = request.server();
    let f = fixture();
    let mut registry = Registry::new(f.kgc.server());
    if let Ok(done) = f
        .kgc
        .register(&mut registry, &request, NOW, &mut fixture_rng())
    {
        assert_eq!(registry.len(), 1);
        let bytes = done.response.as_bytes();
        assert!(RegistrationResponse::from_bytes(bytes).is_ok());
    }
}

/// `RegistrationResponse::from_bytes` (user, from a relay), then opening it with the
/// fixture user's pending registration and checking the key it carries.
pub fn kgc_registration_response(data: &[u8]) {
    let Ok(response) = RegistrationResponse::from_bytes(data) else {
        return;
    };
    assert_eq!(
        &response.as_bytes()[..],
        data,
        "accepted response does not re-encode"
    );
    let f = fixture();
    let (pending, _) = f
        .user
        .register(&f.descriptor, NOW, &mut fixture_rng())
        .expect("fixture registers");
    if let Ok(key) = pending.finish(&response) {
        assert_eq!(key.user(), f.user.pseudonym());
        assert_eq!(key.server(), f.kgc.server());
    }
}

/// `SignedDescriptor::from_bytes` and `from_bytes_pinned` (user, fetched descriptor).
pub fn kgc_descriptor(data: &[u8]) {
    let plain = SignedDescriptor::from_bytes(data);
    let pin = fixture().descriptor.descriptor().identity_key.to_bytes();
    let pinned = SignedDescriptor::from_bytes_pinned(data, &pin);
    if pinned.is_ok() {
        assert!(plain.is_ok(), "pinned accepted what plain refused");
    }
    let Ok(signed) = plain else {
        return;
    };
    assert_eq!(
        &signed.to_bytes()[..],
        data,
        "accepted descriptor does not re-encode"
    );
    let other_pin = [0x55; 32];
    if signed.descriptor().identity_key.to_bytes() != other_pin {
        assert!(SignedDescriptor::from_bytes_pinned(data, &other_pin).is_err());
    }
}

/// `Registry::from_bytes` (exchange server's stored registry) and
/// `RegistryEntry::from_bytes` on the first entry-sized prefix (database records).
pub fn kgc_registry(data: &[u8]) {
    if let Ok(registry) = Registry::from_bytes(data) {
        assert_eq!(
            &registry.to_bytes()[..],
            data,
            "accepted registry does not re-encode"
        );
        let mut previous: Option<UserPseudonym> = None;
        for entry in registry.iter() {
            assert!(previous < Some(entry.user()), "entries out of order");
            previous = Some(entry.user());
            assert_eq!(entry.long_term_key().server(), registry.server());
        }
    }
    let server = fixture().kgc.server();
    let entry_bytes = &data[..data.len().min(ENTRY_BYTES)];
    if let Ok(entry) = RegistryEntry::from_bytes(server, entry_bytes) {
        assert_eq!(
            &entry.to_bytes()[..],
            entry_bytes,
            "accepted entry does not re-encode"
        );
    }
}

/// `UserSecretKey::from_bytes` (user's stored key; also the tail of every registration
/// response), then checking it against the fixture server's master public key.
pub fn kgc_user_secret_key(data: &[u8]) {
    let Ok(key) = UserSecretKey::from_bytes(data) else {
        return;
    };
    assert_eq!(&key.to_bytes()[..], data, "accepted key does not re-encode");
    let _ = key.verify(&fixture().kgc.master_public_key());
}

/// `MasterSecret::load` (the master-secret file; its decoder is private, so through a
/// 0600 file), and saving what it loaded gives the same file.
pub fn kgc_master_file(data: &[u8]) {
    let dir = scratch();
    let input = dir.join("master.in");
    let output = dir.join("master.out");
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    write_private(&input, data);
    let Ok(master) = MasterSecret::load(&input) else {
        return;
    };
    master.save(&output).expect("save to a fresh file");
    assert_eq!(
        std::fs::read(&output).expect("read back"),
        data,
        "file does not re-encode"
    );
}

fn write_private(path: &PathBuf, data: &[u8]) {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).expect("create scratch file");
    file.write_all(data).expect("write scratch file");
}

/// `Output::from_words` and `Output::reconstruct` (user, from the three output shares it
/// opened): the first byte picks the payload size (0..=4 words), the rest are the words.
pub fn engine_output(data: &[u8]) {
    server_output(data);
    server_input(data);
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let cfg = RoundConfig {
        payload_words: size as usize % 5,
        store_capacity: 4,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let words: Vec<u64> = rest
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let decoded = Output::from_words(&words, &cfg);
    // The user XORs three shares; with two zero shares that is the words themselves.
    let zeros = vec![0u64; words.len()];
    assert_eq!(Output::reconstruct([&words, &zeros, &zeros], &cfg), decoded);
    if let Ok(output) = decoded {
        assert_eq!(
            output.to_words(&cfg),
            words,
            "accepted output does not re-encode"
        );
    }
}

/// `ServerOutput::decode` (user, on the plaintext of each opened output share): the
/// first byte picks the output size (0..=15 words), the rest is the plaintext. Called
/// from the `engine_output` target, which reaches the same user code path.
pub fn server_output(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let words = size as usize % 16;
    if let Ok(out) = acs_transport::output::ServerOutput::decode(rest, words) {
        assert_eq!(
            &out.encode(words)[..],
            rest,
            "accepted output does not re-encode"
        );
    }
}

/// `ServerInput::from_bytes` (exchange server, on the plaintext of each opened user
/// envelope: a share and the hash of the next server's share): the first byte picks the
/// block size (0..=7 words), the rest is the plaintext. Called from the `engine_output`
/// target, the other decoder of a user's round plaintext.
pub fn server_input(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let words = size as usize % 8;
    if let Some(input) = acs_engine::round::input::ServerInput::from_bytes(rest, words) {
        assert_eq!(input.share.len(), words);
        assert_eq!(input.to_bytes(), rest, "accepted input does not re-encode");
    }
}

/// `EntryFile::load` and `ExchangeFile::load` (operator TOML). Only the files' own
/// checks; building the TLS identities they name reads other files and is not fuzzed.
pub fn config_toml(data: &[u8]) {
    let path = scratch().join("acs.toml");
    let _ = std::fs::remove_file(&path);
    write_private(&path, data);
    if let Ok(entry) = EntryFile::load(&path) {
        assert!(entry.limits.max_connections >= 1);
    }
    let _ = ExchangeFile::load(&path);
}

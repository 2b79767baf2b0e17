//! Writes the seed corpus (`corpus/<target>/`): a few valid inputs per target, made with
//! the fixture keys of `checks`, so the fuzzer starts past the length and magic checks.
//! Run by `run.sh` when a target has no seeds; the output is deterministic.

use acs_engine::round::{Fate, Incoming, Output, Receipt, Role, RoundConfig, Status};
use acs_fuzz::checks::{fixture, fixture_rng, NOW, ROUND};
use acs_kgc::{Direction, MasterSecret, Registry};
use acs_transport::wire::{self, *};
use std::path::Path;

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create corpus folder");
    std::fs::write(d.join(name), bytes).expect("write seed");
}

fn body<T: WireMessage>(msg: &T) -> Vec<u8> {
    let tag = MsgType::ALL
        .iter()
        .position(|t| *t == T::TYPE)
        .expect("listed") as u8;
    let frame = wire::encode_frame(msg).expect("encodes");
    let mut out = vec![tag];
    out.extend_from_slice(&frame[HEADER_LEN..]);
    out
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let dir = Path::new(&dir);
    let f = fixture();
    let key = &f.key;
    let mut rng = fixture_rng();

    let up = key
        .seal(
            ROUND,
            Direction::UserToServer,
            b"a share of a block",
            &mut rng,
        )
        .expect("seal");
    let down = key
        .seal(ROUND, Direction::ServerToUser, &[0u8; 48], &mut rng)
        .expect("seal");
    put(dir, "kgc_envelope", "up", up.as_bytes());
    put(dir, "kgc_envelope", "down", down.as_bytes());

    let (_, request) = f
        .user
        .register(&f.descriptor, NOW, &mut fixture_rng())
        .expect("register");
    put(dir, "kgc_registration_request", "valid", request.as_bytes());
    let mut registry = Registry::new(f.kgc.server());
    let done = f
        .kgc
        .register(&mut registry, &request, NOW, &mut rng)
        .expect("server registers");
    put(
        dir,
        "kgc_registration_response",
        "valid",
        done.response.as_bytes(),
    );
    put(dir, "kgc_descriptor", "valid", &f.descriptor.to_bytes());
    put(dir, "kgc_registry", "one-user", &registry.to_bytes());
    put(
        dir,
        "kgc_registry",
        "empty",
        &Registry::new(f.kgc.server()).to_bytes(),
    );
    let entry = registry.get(f.user.pseudonym()).expect("registered");
    put(dir, "kgc_registry", "entry", &entry.to_bytes()[..]);
    put(
        dir,
        "kgc_user_secret_key",
        "valid",
        &f.kgc.extract(f.user.pseudonym()).to_bytes()[..],
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("master.key");
    MasterSecret::from_seed([7; 32]).save(&path).expect("save");
    put(
        dir,
        "kgc_master_file",
        "valid",
        &std::fs::read(&path).expect("read"),
    );

    let cfg = RoundConfig {
        payload_words: 2,
        store_capacity: 4,
        expiry_rounds: 2,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let delivered = Output {
        status: Status::Delivered,
        incoming: Some(Incoming {
            role: Role::Send,
            from: 0x1234_5678_9abc_def0,
            payload: vec![1, 2],
        }),
        receipt: None,
    };
    let cover = Output {
        status: Status::Cover,
        incoming: None,
        receipt: None,
    };
    let receipt = Output {
        status: Status::Cover,
        incoming: None,
        receipt: Some(Receipt {
            role: Role::Send,
            to: 0x1234_5678_9abc_def0,
            sent: 7,
            fate: Fate::Expired,
        }),
    };
    for (name, out) in [
        ("delivered", delivered),
        ("cover", cover),
        ("receipt", receipt),
    ] {
        let mut bytes = vec![2u8];
        for w in out.to_words(&cfg) {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        put(dir, "engine_output", name, &bytes);
    }

    let sealed = SealedEnvelope {
        round: ROUND,
        server: 1,
        sealed: up.as_bytes().to_vec(),
    };
    let batch = RelayBatch {
        round: ROUND,
        entries: vec![
            BatchEntry {
                slot: 0,
                sealed: up.as_bytes().to_vec(),
            },
            BatchEntry {
                slot: 1,
                sealed: down.as_bytes().to_vec(),
            },
        ],
    };
    let hello = PeerHello {
        party: 2,
        deployment: "acs-example".into(),
        status: RoundStatus {
            committed: Some(5),
            prepared: Some(6),
        },
        config_digest: [0x5c; 32],
        descriptor: vec![0x5d; 280],
    };
    let notice = ErrorNotice {
        code: ErrorCode::RoundClosed,
        message: "round 7 is closed".into(),
    };
    let announce = RoundAnnounce {
        round: ROUND,
        deadline_unix_ms: NOW * 1000,
    };
    let vote = CommitVote {
        round: ROUND,
        vote: Vote::Commit,
        transcript_hash: [0xab; 32],
        store_commitments: None,
    };
    let register = RegisterRequest {
        server: 0,
        body: request.as_bytes().to_vec(),
    };
    put(dir, "wire_body", "sealed-envelope", &body(&sealed));
    put(dir, "wire_body", "relay-batch", &body(&batch));
    put(dir, "wire_body", "peer-hello", &body(&hello));
    put(dir, "wire_body", "error-notice", &body(&notice));
    put(dir, "wire_body", "commit-vote", &body(&vote));
    put(dir, "wire_body", "register-request", &body(&register));

    let mut stream = Vec::new();
    stream.extend(wire::encode_frame(&announce).expect("encodes"));
    stream.extend(wire::encode_frame(&sealed).expect("encodes"));
    stream.extend(wire::header(MsgType::MpcData, 3).expect("header"));
    stream.extend([1, 2, 3]);
    stream.extend(wire::encode_frame(&batch).expect("encodes"));
    stream.extend(wire::encode_frame(&hello).expect("encodes"));
    stream.extend(wire::encode_frame(&vote).expect("encodes"));
    stream.extend(wire::encode_frame(&register).expect("encodes"));
    stream.extend(wire::encode_frame(&notice).expect("encodes"));
    put(dir, "wire_frame", "link", &stream);

    let entry_toml = r#"index = 0
listen = "0.0.0.0:7400"
exchanges = ["10.0.0.1:7300", "10.0.0.2:7300", "10.0.0.3:7300"]
ca = "certs/ca.pem"
cert = "certs/entry-0.pem"
key = "certs/entry-0-key.pem"
max_envelopes_per_round = 1000000

[limits]
max_connections = 10000
handshake_timeout_ms = 5000
frame_timeout_ms = 10000
shutdown_grace_ms = 2000
"#;
    let exchange_toml = r#"index = 0
deployment = "acs-example"
relay_listen = "0.0.0.0:7300"
peer_listen = "0.0.0.0:7310"
next_peer = "203.0.113.20:7310"
relays = [0, 1, 2, 3]
ca = "certs/ca.pem"
cert = "certs/exchange-0.pem"
key = "certs/exchange-0-key.pem"
master = "master.key"
db = "exchange.redb"

[round]
payload_words = 32
store_capacity = 10000
expiry_rounds = 100

[timing]
submit_window_ms = 1000
collect_grace_ms = 500

[limits]
max_connections = 1024
"#;
    put(dir, "config_toml", "entry", entry_toml.as_bytes());
    put(dir, "config_toml", "exchange", exchange_toml.as_bytes());
}

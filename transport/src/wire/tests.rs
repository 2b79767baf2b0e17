use super::*;

fn env(len: usize) -> SealedEnvelope {
    SealedEnvelope {
        round: 7,
        server: 2,
        sealed: (0..len).map(|i| i as u8).collect(),
    }
}

async fn read_all(bytes: &[u8]) -> Result<Frame, WireError> {
    let mut r = bytes;
    read_frame(&mut r, Duration::from_secs(5)).await
}

#[tokio::test]
async fn every_message_round_trips() {
    async fn rt<T: WireMessage + PartialEq + std::fmt::Debug>(m: T) {
        let bytes = encode_frame(&m).unwrap();
        let frame = read_all(&bytes).await.unwrap();
        assert_eq!(frame.ty, T::TYPE);
        assert_eq!(frame.decode::<T>().unwrap(), m);
    }
    rt(ErrorNotice {
        code: ErrorCode::TooLong,
        message: "x".into(),
    })
    .await;
    rt(RoundAnnounce {
        round: 1,
        deadline_unix_ms: 99,
    })
    .await;
    rt(env(100)).await;
    rt(OutputShare {
        round: 3,
        server: 0,
        sealed: vec![1; 33],
    })
    .await;
    rt(RelayBatch {
        round: 4,
        entries: vec![
            BatchEntry {
                slot: 0,
                sealed: vec![9; 10],
            },
            BatchEntry {
                slot: 1,
                sealed: vec![],
            },
        ],
    })
    .await;
    rt(RelayOutputs {
        round: 4,
        outputs: vec![],
    })
    .await;
    rt(RegisterRequest {
        server: 1,
        body: vec![5; 200],
    })
    .await;
    rt(RegisterResponse {
        server: 1,
        body: vec![],
    })
    .await;
    rt(RelayRegisterRequest {
        request: 77,
        body: vec![1],
    })
    .await;
    rt(RelayRegisterResponse {
        request: 77,
        body: vec![2],
    })
    .await;
    rt(PeerHello {
        party: 2,
        deployment: "d".into(),
        status: RoundStatus {
            committed: Some(4),
            prepared: None,
        },
        config_digest: [3; 32],
        descriptor: vec![9; 280],
    })
    .await;
    rt(OnlineSetHash {
        round: 5,
        count: 3,
        hash: [7; 32],
    })
    .await;
    rt(CommitVote {
        round: 5,
        vote: Vote::Abort,
        transcript_hash: [1; 32],
        store_commitments: None,
    })
    .await;
    rt(OpeningComplaint {
        round: 5,
        opening: 17,
        accuser: 0,
        value_from: 1,
        check_from: 2,
        value_hash: [4; 32],
        check: [5; 32],
    })
    .await;
}

#[test]
fn tags_are_unique_and_round_trip() {
    for t in MsgType::ALL {
        assert_eq!(MsgType::from_tag(t as u8), Some(t));
        assert!(t.cap() <= u32::MAX as usize);
    }
    assert_eq!(MsgType::from_tag(0), None);
    assert_eq!(MsgType::from_tag(200), None);
}

#[test]
fn bulk_bytes_are_encoded_as_bytes() {
    // One length varint plus the bytes: not a varint per element.
    let m = env(10_000);
    let frame = encode_frame(&m).unwrap();
    assert!(frame.len() < HEADER_LEN + 10_000 + 16, "{}", frame.len());
}

#[tokio::test]
async fn mpc_frames_carry_raw_bytes() {
    let mut out = Vec::new();
    write_mpc(&mut out, b"engine batch").await.unwrap();
    assert_eq!(out.len(), HEADER_LEN + 12);
    let frame = read_all(&out).await.unwrap();
    assert_eq!(frame.ty, MsgType::MpcData);
    assert_eq!(frame.body, b"engine batch");
}

#[tokio::test]
async fn trailing_bytes_are_rejected() {
    let mut bytes = encode_frame(&env(4)).unwrap();
    bytes.push(0);
    let len = (bytes.len() - HEADER_LEN) as u32;
    bytes[2..6].copy_from_slice(&len.to_be_bytes());
    let frame = read_all(&bytes).await.unwrap();
    let err = frame.decode::<SealedEnvelope>().unwrap_err();
    assert!(matches!(err, WireError::Trailing { extra: 1, .. }), "{err}");
}

#[tokio::test]
async fn oversized_length_is_rejected_from_the_header_alone() {
    let mut h = header(MsgType::RoundAnnounce, 0).unwrap();
    h[2..6].copy_from_slice(&((caps::CONTROL as u32) + 1).to_be_bytes());
    // No body follows: the reader must refuse on the header, not wait for the body.
    let err = read_all(&h).await.unwrap_err();
    assert!(
        matches!(
            err,
            WireError::TooLong {
                ty: MsgType::RoundAnnounce,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.notice_code(), Some(ErrorCode::TooLong));
}

#[tokio::test]
async fn writer_refuses_over_cap() {
    let m = ErrorNotice {
        code: ErrorCode::Internal,
        message: "x".repeat(caps::CONTROL + 1),
    };
    assert!(matches!(
        encode_frame(&m),
        Err(WireError::OutgoingTooLong { .. })
    ));
}

#[tokio::test]
async fn wrong_version_and_unknown_type_are_rejected() {
    let mut bytes = encode_frame(&env(1)).unwrap();
    bytes[0] = 9;
    let err = read_all(&bytes).await.unwrap_err();
    assert!(matches!(err, WireError::Version { got: 9 }), "{err}");
    // A wrong version is refused on its first byte: no need to wait for a header.
    let err = read_all(&[2]).await.unwrap_err();
    assert!(matches!(err, WireError::Version { got: 2 }), "{err}");

    let mut bytes = encode_frame(&env(1)).unwrap();
    bytes[1] = 250;
    let err = read_all(&bytes).await.unwrap_err();
    assert!(matches!(err, WireError::UnknownType(250)), "{err}");
}

#[tokio::test]
async fn truncation_is_reported_with_position() {
    let bytes = encode_frame(&env(50)).unwrap();
    let err = read_all(&bytes[..3]).await.unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Truncated {
                part: "header",
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = read_all(&bytes[..HEADER_LEN + 10]).await.unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Truncated {
                part: "body",
                got: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(read_all(&[]).await, Err(WireError::Closed)));
}

#[test]
fn a_length_claimed_inside_the_body_cannot_allocate() {
    // round=1, server=0, then a varint byte-length of 2^40 with no bytes behind it.
    let mut body = vec![1u8, 0u8, 253];
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let err = decode_body::<SealedEnvelope>(MsgType::SealedEnvelope, &body).unwrap_err();
    assert!(matches!(err, WireError::Malformed { .. }), "{err}");
    // Same for a vector of entries in a batch.
    let mut body = vec![1u8, 253];
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let err = decode_body::<RelayBatch>(MsgType::RelayBatch, &body).unwrap_err();
    assert!(matches!(err, WireError::Malformed { .. }), "{err}");
}

#[test]
fn wrong_type_is_unexpected() {
    let frame = Frame {
        ty: MsgType::OutputShare,
        body: vec![],
    };
    assert!(matches!(
        frame.decode::<SealedEnvelope>(),
        Err(WireError::Unexpected {
            got: MsgType::OutputShare,
            ..
        })
    ));
}

#[test]
fn server_index_is_checked() {
    assert!(check_server(MsgType::SealedEnvelope, 2).is_ok());
    assert!(matches!(
        check_server(MsgType::SealedEnvelope, 3),
        Err(WireError::Invalid { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_frame_times_out() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let bytes = encode_frame(&env(100)).unwrap();
    a.write_all(&bytes[..20]).await.unwrap();
    let err = read_frame(&mut b, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(err, WireError::Timeout(_)), "{err}");
    drop(a);
}

#[tokio::test]
async fn remote_errors_surface() {
    let bytes = encode_frame(&ErrorNotice {
        code: ErrorCode::Duplicate,
        message: "twice".into(),
    })
    .unwrap();
    let frame = read_all(&bytes).await.unwrap();
    let err = frame.into_remote_error().unwrap_err();
    assert!(matches!(
        err,
        WireError::Remote {
            code: ErrorCode::Duplicate,
            ..
        }
    ));
}

/// Random and mutated input to the decoder: every outcome is a value or a typed error,
/// never a panic or a large allocation (a stand-in for a fuzz target, run in the suite).
#[tokio::test]
async fn random_and_mutated_frames_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xac5);
    let seeds: Vec<Vec<u8>> = vec![
        encode_frame(&env(40)).unwrap(),
        encode_frame(&RelayBatch {
            round: 3,
            entries: vec![
                BatchEntry {
                    slot: 0,
                    sealed: vec![1; 30],
                };
                4
            ],
        })
        .unwrap(),
        encode_frame(&PeerHello {
            party: 1,
            deployment: "d".into(),
            status: RoundStatus::default(),
            config_digest: [0; 32],
            descriptor: vec![0; 280],
        })
        .unwrap(),
        encode_frame(&CommitVote {
            round: 1,
            vote: Vote::Commit,
            transcript_hash: [0; 32],
            store_commitments: None,
        })
        .unwrap(),
    ];
    for i in 0..4000 {
        let mut bytes = if i % 4 == 0 {
            let n = rng.gen_range(0..64);
            (0..n).map(|_| rng.gen()).collect::<Vec<u8>>()
        } else {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.gen();
            }
            b
        };
        if i % 7 == 0 {
            bytes.truncate(rng.gen_range(0..=bytes.len()));
        }
        if let Ok(frame) = read_all(&bytes).await {
            let _ = frame.decode::<SealedEnvelope>();
            let _ = frame.decode::<RelayBatch>();
            let _ = frame.decode::<PeerHello>();
            let _ = frame.decode::<CommitVote>();
            let _ = frame.clone().into_remote_error();
            for ty in MsgType::ALL {
                let _ = decode_body::<RelayOutputs>(ty, &frame.body);
                let _ = decode_body::<RoundAnnounce>(ty, &frame.body);
                let _ = decode_body::<RegisterRequest>(ty, &frame.body);
            }
        }
    }
}

#[tokio::test]
async fn a_peer_frame_is_read_whole_and_still_capped() {
    // A mesh link reserves the announced length at once; frames still arrive intact, a
    // truncated one is reported, and the cap is checked from the header alone.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    write_mpc(&mut out, &body).await.unwrap();
    let mut r = &out[..];
    let frame = read_peer_frame(&mut r, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((frame.ty, frame.body), (MsgType::MpcData, body));
    let mut r = &out[..out.len() - 1];
    let err = read_peer_frame(&mut r, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WireError::Truncated { part: "body", .. }),
        "{err}"
    );
    let mut h = header(MsgType::MpcData, 0).unwrap();
    h[2..6].copy_from_slice(&((MsgType::MpcData.cap() as u32) + 1).to_be_bytes());
    let mut r = &h[..];
    let err = read_peer_frame(&mut r, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, WireError::TooLong { .. }), "{err}");
}

#[test]
fn refusals_round_trip_and_a_kgc_response_is_never_one() {
    for r in [
        Refusal::Other,
        Refusal::PseudonymTaken,
        Refusal::AddressTaken,
        Refusal::Epoch,
        Refusal::WrongServer,
    ] {
        assert_eq!(Refusal::from_body(&r.to_body()), Some(r));
    }
    let mut unknown = REFUSAL_MAGIC.to_vec();
    unknown.extend_from_slice(&[9, 9]);
    assert_eq!(Refusal::from_body(&unknown), Some(Refusal::Other));
    assert_eq!(Refusal::from_body(b"ACS-RS\x00\x01 and the rest"), None);
    assert_eq!(Refusal::from_body(b""), None);
}

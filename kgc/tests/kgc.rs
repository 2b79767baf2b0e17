//! End-to-end behaviour of `acs-kgc`: agreement, sealing, registration, descriptors,
//! registry encoding and master-secret files.

use std::sync::OnceLock;

use acs_kgc::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const NOW: u64 = 1_790_000_000;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Two servers, built once: `Kgc::new` costs a few milliseconds.
fn servers() -> &'static (Kgc, Kgc) {
    static SERVERS: OnceLock<(Kgc, Kgc)> = OnceLock::new();
    SERVERS.get_or_init(|| {
        (
            Kgc::new(MasterSecret::from_seed([1; 32])),
            Kgc::new(MasterSecret::from_seed([2; 32])),
        )
    })
}

fn user(n: u8) -> UserIdentity {
    UserIdentity::from_seed([n; 32]).unwrap()
}

/// Registers `who` at `kgc`, returning the user's secret key.
fn register(kgc: &Kgc, registry: &mut Registry, who: &UserIdentity) -> Result<UserSecretKey> {
    let descriptor = kgc.descriptor([9; 32], NOW);
    let (pending, request) = who.register(&descriptor, NOW, &mut rng(5))?;
    let registered = kgc.register(registry, &request, NOW + 1, &mut rng(6))?;
    assert_eq!(registered.user, who.pseudonym());
    pending.finish(&registered.response)
}

// ---------------------------------------------------------------- agreement

#[test]
fn agreement_is_equal_on_both_sides() {
    let (a, _) = servers();
    let alice = user(10).pseudonym();
    let secret = a.extract(alice);
    secret.verify(&a.master_public_key()).unwrap();
    let user_side = secret.agree();
    let server_side = a.agree(alice);
    assert_eq!(user_side, server_side);
    assert_eq!(*user_side.to_bytes(), *server_side.to_bytes());
    assert_eq!(user_side.user(), alice);
    assert_eq!(user_side.server(), a.server());
}

#[test]
fn other_server_or_user_gives_other_key() {
    let (a, b) = servers();
    let alice = user(10).pseudonym();
    let bob = user(11).pseudonym();
    let alice_a = a.agree(alice);
    assert_ne!(*alice_a.to_bytes(), *b.agree(alice).to_bytes());
    assert_ne!(*alice_a.to_bytes(), *a.agree(bob).to_bytes());
    // A key extracted by server B does not agree with server A.
    assert_ne!(*b.extract(alice).agree().to_bytes(), *alice_a.to_bytes());
    // And it does not verify against A's master public key.
    assert!(matches!(
        UserSecretKey::from_bytes(&b.extract(alice).to_bytes()[..])
            .unwrap()
            .verify(&a.master_public_key()),
        Err(KgcError::InvalidUserKey)
    ));
}

#[test]
fn user_secret_key_round_trips_and_validates() {
    let (a, _) = servers();
    let secret = a.extract(user(10).pseudonym());
    let back = UserSecretKey::from_bytes(&secret.to_bytes()[..]).unwrap();
    assert_eq!(back.user(), secret.user());
    assert_eq!(*back.agree().to_bytes(), *secret.agree().to_bytes());
    let mut bad = *secret.to_bytes();
    bad[20] ^= 1;
    assert!(UserSecretKey::from_bytes(&bad).is_err());
    assert!(UserSecretKey::from_bytes(&bad[..63]).is_err());
}

// ---------------------------------------------------------------- envelopes

fn link() -> (LongTermKey, LongTermKey) {
    let (a, _) = servers();
    let alice = user(10).pseudonym();
    (a.extract(alice).agree(), a.agree(alice))
}

#[test]
fn envelopes_open_both_ways() {
    let (user_key, server_key) = link();
    let share: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let up = user_key
        .seal(3, Direction::UserToServer, &share, &mut rng(1))
        .unwrap();
    assert_eq!(up.share_len(), share.len());
    assert_eq!(up.as_bytes().len(), share.len() + ENVELOPE_OVERHEAD);
    let wire = Envelope::from_bytes(up.as_bytes()).unwrap();
    assert_eq!(
        server_key.open(3, Direction::UserToServer, &wire).unwrap(),
        share
    );
    let down = server_key
        .seal(3, Direction::ServerToUser, b"out", &mut rng(2))
        .unwrap();
    assert_eq!(
        user_key.open(3, Direction::ServerToUser, &down).unwrap(),
        b"out"
    );
    // Empty shares are fine too.
    let empty = user_key
        .seal(4, Direction::UserToServer, &[], &mut rng(3))
        .unwrap();
    assert!(server_key
        .open(4, Direction::UserToServer, &empty)
        .unwrap()
        .is_empty());
}

#[test]
fn tampered_envelopes_are_rejected() {
    let (user_key, server_key) = link();
    let env = user_key
        .seal(
            3,
            Direction::UserToServer,
            b"a share of a block",
            &mut rng(1),
        )
        .unwrap();
    let bytes = env.as_bytes().to_vec();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        match Envelope::from_bytes(&bad) {
            Err(KgcError::Malformed { .. }) => {
                assert_eq!(i, 0, "only the version byte is checked on decode")
            }
            Err(e) => panic!("unexpected {e}"),
            Ok(e) => assert!(
                matches!(
                    server_key.open(3, Direction::UserToServer, &e),
                    Err(KgcError::OpenFailed(_))
                ),
                "flip at byte {i} accepted"
            ),
        }
    }
    let truncated = Envelope::from_bytes(&bytes[..bytes.len() - 1]).unwrap();
    assert!(server_key
        .open(3, Direction::UserToServer, &truncated)
        .is_err());
}

#[test]
fn replayed_misrouted_and_reflected_envelopes_are_rejected() {
    let (a, b) = servers();
    let (user_key, server_key) = link();
    let env = user_key
        .seal(3, Direction::UserToServer, b"share", &mut rng(1))
        .unwrap();
    // Replayed in a later round.
    assert!(matches!(
        server_key.open(4, Direction::UserToServer, &env),
        Err(KgcError::OpenFailed(_))
    ));
    // Reflected: the wrong direction.
    assert!(matches!(
        server_key.open(3, Direction::ServerToUser, &env),
        Err(KgcError::OpenFailed(_))
    ));
    assert!(user_key.open(3, Direction::ServerToUser, &env).is_err());
    // Misrouted to another server.
    let alice = user(10).pseudonym();
    assert!(b
        .agree(alice)
        .open(3, Direction::UserToServer, &env)
        .is_err());
    // Opened as if from another user.
    assert!(a
        .agree(user(11).pseudonym())
        .open(3, Direction::UserToServer, &env)
        .is_err());
    // Same key bytes presented under another user's name: the associated data differs.
    let renamed = LongTermKey::from_bytes(user(11).pseudonym(), a.server(), *server_key.to_bytes());
    assert!(renamed.open(3, Direction::UserToServer, &env).is_err());
}

#[test]
fn envelope_tags_are_per_round_and_direction() {
    let (user_key, server_key) = link();
    let t = user_key.round_tag(3, Direction::UserToServer);
    assert_eq!(t, server_key.round_tag(3, Direction::UserToServer));
    assert_ne!(t, user_key.round_tag(4, Direction::UserToServer));
    assert_ne!(t, user_key.round_tag(3, Direction::ServerToUser));
    let env = user_key
        .seal(3, Direction::UserToServer, b"x", &mut rng(1))
        .unwrap();
    assert_eq!(env.tag(), t);
    // Sealing twice gives different bytes (random nonce), same tag.
    let again = user_key
        .seal(3, Direction::UserToServer, b"x", &mut rng(2))
        .unwrap();
    assert_ne!(env.as_bytes(), again.as_bytes());
    assert_eq!(again.tag(), t);
}

#[test]
fn envelope_lengths_are_capped() {
    let (user_key, _) = link();
    assert!(matches!(
        user_key.seal(
            1,
            Direction::UserToServer,
            &vec![0; MAX_SHARE_BYTES + 1],
            &mut rng(1)
        ),
        Err(KgcError::TooLarge { .. })
    ));
    assert!(matches!(
        Envelope::from_bytes(&vec![1; MAX_SHARE_BYTES + ENVELOPE_OVERHEAD + 1]),
        Err(KgcError::TooLarge { .. })
    ));
    assert!(Envelope::from_bytes(&[1; ENVELOPE_OVERHEAD - 1]).is_err());
    assert!(Envelope::from_bytes(&[]).is_err());
    let mut v2 = vec![1; ENVELOPE_OVERHEAD];
    v2[0] = 2;
    assert!(matches!(
        Envelope::from_bytes(&v2),
        Err(KgcError::Malformed { .. })
    ));
}

// ---------------------------------------------------------------- registration

#[test]
fn registration_delivers_a_working_key() {
    let (a, _) = servers();
    let alice = user(20);
    let mut registry = Registry::new(a.server());
    let secret = register(a, &mut registry, &alice).unwrap();
    assert_eq!(secret.user(), alice.pseudonym());
    assert_eq!(secret.server(), a.server());
    let entry = registry.get(alice.pseudonym()).unwrap();
    assert_eq!(entry.public_key(), alice.public_key().as_bytes());
    assert_eq!(entry.registered_at(), NOW + 1);
    // The key the server cached is the key the user derives.
    let user_key = secret.agree();
    assert_eq!(
        &user_key,
        registry.long_term_key(alice.pseudonym()).unwrap()
    );
    let env = user_key
        .seal(1, Direction::UserToServer, b"hi", &mut rng(1))
        .unwrap();
    let index = registry.tag_index(1, Direction::UserToServer);
    let who = index.lookup(&env.tag()).unwrap();
    assert_eq!(who, alice.pseudonym());
    assert_eq!(
        registry
            .long_term_key(who)
            .unwrap()
            .open(1, Direction::UserToServer, &env)
            .unwrap(),
        b"hi"
    );
    assert_eq!(
        index.lookup(&user_key.round_tag(2, Direction::UserToServer)),
        None
    );
}

#[test]
fn relays_see_neither_pseudonym_nor_keys() {
    let (a, _) = servers();
    let alice = user(21);
    let descriptor = a.descriptor([9; 32], NOW);
    let (pending, request) = alice.register(&descriptor, NOW, &mut rng(5)).unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(request.as_bytes(), &alice.pseudonym().to_bytes()));
    assert!(!contains(request.as_bytes(), alice.public_key().as_bytes()));
    let mut registry = Registry::new(a.server());
    let registered = a
        .register(&mut registry, &request, NOW, &mut rng(6))
        .unwrap();
    let secret = a.extract(alice.pseudonym()).to_bytes();
    assert!(!contains(registered.response.as_bytes(), &secret[16..]));
    assert!(!contains(
        registered.response.as_bytes(),
        &alice.pseudonym().to_bytes()
    ));
    pending.finish(&registered.response).unwrap();
}

#[test]
fn repeat_registration_under_the_same_key_is_idempotent() {
    let (a, _) = servers();
    let alice = user(22);
    let mut registry = Registry::new(a.server());
    let first = register(a, &mut registry, &alice).unwrap();
    let descriptor = a.descriptor([9; 32], NOW);
    let (pending, request) = alice.register(&descriptor, NOW + 50, &mut rng(7)).unwrap();
    let again = a
        .register(&mut registry, &request, NOW + 60, &mut rng(8))
        .unwrap();
    assert_eq!(again.inserted, Inserted::AlreadyRegistered);
    assert_eq!(
        registry.get(alice.pseudonym()).unwrap().registered_at(),
        NOW + 1
    );
    let second = pending.finish(&again.response).unwrap();
    assert_eq!(*first.to_bytes(), *second.to_bytes());
    assert_eq!(registry.len(), 1);
}

#[test]
fn taken_pseudonym_is_refused() {
    let (a, _) = servers();
    let alice = user(23);
    let mallory = user(24);
    // Mallory's key already holds Alice's pseudonym (as if she had found a 64-bit
    // collision): Alice's registration must not take it over, nor change the registry.
    let mut registry = Registry::new(a.server());
    let squatter = RegistryEntry::new(&mallory.public_key(), NOW - 100, a.agree(alice.pseudonym()));
    assert_eq!(registry.insert(squatter.clone()).unwrap(), Inserted::New);
    let before = registry.to_bytes();
    assert!(matches!(
        register(a, &mut registry, &alice),
        Err(KgcError::PseudonymTaken(p)) if p == alice.pseudonym()
    ));
    assert_eq!(*registry.to_bytes(), *before);
    // Same at the registry level.
    let honest = RegistryEntry::new(&alice.public_key(), NOW, a.agree(alice.pseudonym()));
    assert!(matches!(
        registry.insert(honest),
        Err(KgcError::PseudonymTaken(_))
    ));
    assert_eq!(
        registry.insert(squatter).unwrap(),
        Inserted::AlreadyRegistered
    );
}

/// Two identities whose pseudonyms differ but share an address (found by a birthday
/// search over seeds: `db2ba4db074acfa9` and `5d650ddd074acfa9`).
fn address_twins() -> (UserIdentity, UserIdentity) {
    let seed = |i: u32| {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&i.to_le_bytes());
        s[8] = 0xad;
        UserIdentity::from_seed(s).unwrap()
    };
    (seed(40_541), seed(74_045))
}

#[test]
fn taken_address_is_refused() {
    let (a, _) = servers();
    let (first, second) = address_twins();
    assert_ne!(first.pseudonym(), second.pseudonym());
    assert_eq!(first.pseudonym().address(), second.pseudonym().address());
    let mut registry = Registry::new(a.server());
    register(a, &mut registry, &first).unwrap();
    let before = registry.to_bytes();
    assert!(matches!(
        register(a, &mut registry, &second),
        Err(KgcError::AddressTaken { user, holder })
            if user == second.pseudonym() && holder == first.pseudonym()
    ));
    assert_eq!(*registry.to_bytes(), *before);
    assert_eq!(
        registry.address_holder(first.pseudonym().address()),
        Some(first.pseudonym())
    );
    // Same at the registry level; the holder itself may register again.
    let entry = RegistryEntry::new(&second.public_key(), NOW, a.agree(second.pseudonym()));
    assert!(matches!(
        registry.insert(entry.clone()),
        Err(KgcError::AddressTaken { .. })
    ));
    register(a, &mut registry, &first).unwrap();
    // Once the holder is gone, the address is free in this registry (the exchange
    // server keeps retired users' addresses reserved on its own: `acs-transport`).
    registry.remove(first.pseudonym()).unwrap();
    assert_eq!(registry.insert(entry).unwrap(), Inserted::New);
    // Address 0 is reserved.
    let zero = UserPseudonym::from_u64(7 << 32).unwrap();
    assert_eq!(zero.address(), 0);
    assert!(matches!(
        registry.check_address(zero),
        Err(KgcError::Malformed { .. })
    ));
}

#[test]
fn stale_and_future_requests_are_refused() {
    let (a, _) = servers();
    let alice = user(25);
    let descriptor = a.descriptor([9; 32], NOW);
    let mut registry = Registry::new(a.server());
    let (_, old) = alice
        .register(&descriptor, NOW - REGISTRATION_WINDOW_SECS - 1, &mut rng(1))
        .unwrap();
    assert!(matches!(
        a.register(&mut registry, &old, NOW, &mut rng(2)),
        Err(KgcError::StaleRequest { .. })
    ));
    let (_, future) = alice
        .register(&descriptor, NOW + REGISTRATION_WINDOW_SECS + 1, &mut rng(3))
        .unwrap();
    assert!(matches!(
        a.register(&mut registry, &future, NOW, &mut rng(4)),
        Err(KgcError::StaleRequest { .. })
    ));
    // At the edge of the window it is accepted.
    let (_, edge) = alice
        .register(&descriptor, NOW - REGISTRATION_WINDOW_SECS, &mut rng(5))
        .unwrap();
    a.register(&mut registry, &edge, NOW, &mut rng(6)).unwrap();
    // A replay after the window has passed is refused.
    assert!(matches!(
        a.register(&mut registry, &edge, NOW + 1, &mut rng(7)),
        Err(KgcError::StaleRequest { .. })
    ));
}

#[test]
fn misrouted_or_tampered_requests_are_refused() {
    let (a, b) = servers();
    let alice = user(26);
    let descriptor = a.descriptor([9; 32], NOW);
    let (_, request) = alice.register(&descriptor, NOW, &mut rng(1)).unwrap();
    let mut registry_b = Registry::new(b.server());
    assert!(matches!(
        b.register(&mut registry_b, &request, NOW, &mut rng(2)),
        Err(KgcError::WrongServer { .. })
    ));
    // Readdressed to B by a relay: B cannot decrypt it.
    let mut bytes = request.as_bytes().to_vec();
    bytes[8..16].copy_from_slice(&b.server().to_bytes());
    let readdressed = RegistrationRequest::from_bytes(&bytes).unwrap();
    assert!(matches!(
        b.register(&mut registry_b, &readdressed, NOW, &mut rng(3)),
        Err(KgcError::OpenFailed(_))
    ));
    // A registry of another server is refused.
    assert!(matches!(
        a.register(&mut registry_b, &request, NOW, &mut rng(3)),
        Err(KgcError::WrongServer { .. })
    ));
    let mut registry = Registry::new(a.server());
    for i in 16..acs_kgc::REQUEST_BYTES {
        let mut bad = request.as_bytes().to_vec();
        bad[i] ^= 1;
        let bad = RegistrationRequest::from_bytes(&bad).unwrap();
        assert!(
            a.register(&mut registry, &bad, NOW, &mut rng(4)).is_err(),
            "flip at {i}"
        );
    }
    assert!(registry.is_empty());
    assert!(RegistrationRequest::from_bytes(&request.as_bytes()[1..]).is_err());
    assert!(RegistrationRequest::from_bytes(&[0; acs_kgc::REQUEST_BYTES]).is_err());
}

#[test]
fn responses_open_only_for_their_request() {
    let (a, b) = servers();
    let alice = user(27);
    let descriptor = a.descriptor([9; 32], NOW);
    let mut registry = Registry::new(a.server());
    let (pending1, request1) = alice.register(&descriptor, NOW, &mut rng(1)).unwrap();
    let (pending2, _request2) = alice.register(&descriptor, NOW, &mut rng(2)).unwrap();
    let response1 = a
        .register(&mut registry, &request1, NOW, &mut rng(3))
        .unwrap()
        .response;
    // Another pending request (other ephemeral key) cannot open it.
    assert!(matches!(
        pending2.finish(&response1),
        Err(KgcError::OpenFailed(_))
    ));
    // Tampering is detected.
    for i in 8..acs_kgc::RESPONSE_BYTES {
        let (pending, request) = alice.register(&descriptor, NOW, &mut rng(10)).unwrap();
        let response = a
            .register(&mut registry, &request, NOW, &mut rng(11))
            .unwrap()
            .response;
        let mut bad = *response.as_bytes();
        bad[i] ^= 1;
        assert!(
            pending
                .finish(&RegistrationResponse::from_bytes(&bad).unwrap())
                .is_err(),
            "flip at {i}"
        );
    }
    // A response made by another server for the same user does not open either.
    let b_descriptor = b.descriptor([9; 32], NOW);
    let (_, request_b) = alice.register(&b_descriptor, NOW, &mut rng(4)).unwrap();
    let mut registry_b = Registry::new(b.server());
    let response_b = b
        .register(&mut registry_b, &request_b, NOW, &mut rng(5))
        .unwrap()
        .response;
    assert!(pending1.finish(&response_b).is_err());
    assert!(RegistrationResponse::from_bytes(&response_b.as_bytes()[..50]).is_err());
}

// ---------------------------------------------------------------- descriptors

#[test]
fn descriptors_verify_and_pin() {
    let (a, b) = servers();
    let signed = a.descriptor([7; 32], NOW);
    let bytes = signed.to_bytes();
    assert_eq!(bytes.len(), DESCRIPTOR_BYTES);
    let back = SignedDescriptor::from_bytes(&bytes).unwrap();
    assert_eq!(back, signed);
    let d = back.descriptor();
    assert_eq!(d.server, a.server());
    assert_eq!(d.tls_cert_sha256, [7; 32]);
    assert_eq!(d.issued_at, NOW);
    assert_eq!(d.master_public, a.master_public_key());
    let pin = *d.identity_key.as_bytes();
    SignedDescriptor::from_bytes_pinned(&bytes, &pin).unwrap();
    let other_pin = *b
        .descriptor([7; 32], NOW)
        .descriptor()
        .identity_key
        .as_bytes();
    assert!(SignedDescriptor::from_bytes_pinned(&bytes, &other_pin).is_err());
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 1;
        assert!(SignedDescriptor::from_bytes(&bad).is_err(), "flip at {i}");
    }
    assert!(SignedDescriptor::from_bytes(&bytes[..DESCRIPTOR_BYTES - 1]).is_err());
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(SignedDescriptor::from_bytes(&longer).is_err());
}

// ---------------------------------------------------------------- registry

fn sample_registry(n: u8) -> Registry {
    let (a, _) = servers();
    let mut registry = Registry::new(a.server());
    for i in 0..n {
        let who = user(100 + i);
        let key = LongTermKey::from_bytes(who.pseudonym(), a.server(), [i; 32]);
        registry
            .insert(RegistryEntry::new(
                &who.public_key(),
                NOW + u64::from(i),
                key,
            ))
            .unwrap();
    }
    registry
}

#[test]
fn registry_round_trips() {
    let registry = sample_registry(5);
    let bytes = registry.to_bytes();
    assert_eq!(bytes.len(), 20 + 5 * ENTRY_BYTES);
    let back = Registry::from_bytes(&bytes).unwrap();
    assert_eq!(back, registry);
    assert_eq!(*back.to_bytes(), *bytes);
    for entry in registry.iter() {
        let one = RegistryEntry::from_bytes(registry.server(), &entry.to_bytes()[..]).unwrap();
        assert_eq!(&one, entry);
    }
    let empty = Registry::new(registry.server());
    assert_eq!(Registry::from_bytes(&empty.to_bytes()).unwrap(), empty);
}

#[test]
fn registry_decoder_rejects_two_entries_with_one_address() {
    let (a, _) = servers();
    let (first, second) = address_twins();
    let entry =
        |who: &UserIdentity| RegistryEntry::new(&who.public_key(), NOW, a.agree(who.pseudonym()));
    // Entries go in pseudonym order: the smaller one in the registry, the larger appended.
    let (low, high) = if first.pseudonym() < second.pseudonym() {
        (first, second)
    } else {
        (second, first)
    };
    let mut registry = Registry::new(a.server());
    registry.insert(entry(&low)).unwrap();
    let mut bytes = registry.to_bytes().to_vec();
    bytes.extend_from_slice(&entry(&high).to_bytes()[..]);
    bytes[16..20].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        Registry::from_bytes(&bytes),
        Err(KgcError::Malformed { .. })
    ));
}

#[test]
fn registry_decoder_rejects_bad_input() {
    let registry = sample_registry(3);
    let bytes = registry.to_bytes().to_vec();
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(Registry::from_bytes(&trailing).is_err());
    assert!(Registry::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(Registry::from_bytes(&bytes[..19]).is_err());
    let mut magic = bytes.clone();
    magic[7] = 2;
    assert!(Registry::from_bytes(&magic).is_err());
    // A huge count is refused before anything is allocated for it.
    let mut huge = bytes[..20].to_vec();
    huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Registry::from_bytes(&huge),
        Err(KgcError::TooLarge { .. })
    ));
    // Count says 2 but 3 entries follow.
    let mut count = bytes.clone();
    count[16..20].copy_from_slice(&2u32.to_be_bytes());
    assert!(Registry::from_bytes(&count).is_err());
    // Entries out of order or duplicated.
    let (e0, e1) = (20..20 + ENTRY_BYTES, 20 + ENTRY_BYTES..20 + 2 * ENTRY_BYTES);
    let mut swapped = bytes.clone();
    swapped[e0.clone()].copy_from_slice(&bytes[e1.clone()]);
    swapped[e1.clone()].copy_from_slice(&bytes[e0.clone()]);
    assert!(Registry::from_bytes(&swapped).is_err());
    let mut dup = bytes.clone();
    dup[e1.clone()].copy_from_slice(&bytes[e0.clone()]);
    assert!(Registry::from_bytes(&dup).is_err());
    // A pseudonym not derived from its key.
    let mut forged = bytes.clone();
    forged[20 + 8] ^= 1;
    assert!(Registry::from_bytes(&forged).is_err());
    // Zero server pseudonym.
    let mut zero = bytes.clone();
    zero[8..16].fill(0);
    assert!(Registry::from_bytes(&zero).is_err());
    // Arbitrary garbage never panics.
    let mut r = rng(9);
    for len in [0usize, 1, 19, 20, 21, 99, 100, 101, 500] {
        let mut junk = vec![0u8; len];
        rand::RngCore::fill_bytes(&mut r, &mut junk);
        let _ = Registry::from_bytes(&junk);
        if len >= 8 {
            junk[..8].copy_from_slice(b"ACS-REG\x01");
            let _ = Registry::from_bytes(&junk);
        }
    }
}

#[test]
fn registry_lookups() {
    let registry = sample_registry(3);
    let first = registry.iter().next().unwrap().user();
    assert!(registry.long_term_key(first).is_ok());
    let stranger = user(99).pseudonym();
    assert!(matches!(
        registry.long_term_key(stranger),
        Err(KgcError::UnknownPseudonym(_))
    ));
    let mut registry = registry;
    assert!(registry.remove(first).is_some());
    assert_eq!(registry.len(), 2);
    // An entry keyed for another server is refused.
    let (_, b) = servers();
    let who = user(98);
    let foreign = RegistryEntry::new(&who.public_key(), NOW, b.agree(who.pseudonym()));
    assert!(matches!(
        registry.insert(foreign),
        Err(KgcError::WrongServer { .. })
    ));
}

// ---------------------------------------------------------------- master secret file

#[cfg(unix)]
#[test]
fn master_secret_file_round_trips_with_owner_only_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let master = MasterSecret::generate(&mut rng(1));
    master.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        MASTER_FILE_BYTES
    );
    let loaded = MasterSecret::load(&path).unwrap();
    let (k1, k2) = (Kgc::new(master), Kgc::new(loaded));
    assert_eq!(k1.server(), k2.server());
    assert_eq!(k1.master_public_key(), k2.master_public_key());
    // Never overwritten.
    assert!(matches!(
        MasterSecret::generate(&mut rng(2)).save(&path),
        Err(KgcError::Io { .. })
    ));
}

#[cfg(unix)]
#[test]
fn master_secret_file_refuses_group_or_world_access() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    MasterSecret::generate(&mut rng(1)).save(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        assert!(
            matches!(MasterSecret::load(&path), Err(KgcError::InsecurePermissions { mode: m, .. }) if m == mode),
            "mode {mode:o} accepted"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    MasterSecret::load(&path).unwrap();
}

#[cfg(unix)]
#[test]
fn master_secret_file_rejects_corruption() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(bytes).unwrap();
        path
    };
    let good_path = dir.path().join("good");
    MasterSecret::from_seed([3; 32]).save(&good_path).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    let mut flipped = good.clone();
    flipped[20] ^= 1;
    let mut longer = good.clone();
    longer.push(0);
    let mut magic = good.clone();
    magic[0] = b'X';
    for (name, bytes) in [
        ("flipped", &flipped[..]),
        ("short", &good[..MASTER_FILE_BYTES - 1]),
        ("long", &longer[..]),
        ("magic", &magic[..]),
        ("empty", &[][..]),
    ] {
        let path = write(name, bytes);
        assert!(
            matches!(MasterSecret::load(&path), Err(KgcError::Malformed { .. })),
            "{name}"
        );
    }
    assert!(matches!(
        MasterSecret::load(&dir.path().join("missing")),
        Err(KgcError::Io { .. })
    ));
}

// ---------------------------------------------------------------- Debug hygiene

/// Forms in which a secret's bytes could show up in `Debug` output.
fn leaks(debug: &str, secret: &[u8]) -> bool {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let list = format!("{:?}", &secret[..4]);
    let list = &list[..list.len() - 1]; // "[a, b, c, d" prefix of a longer array
    debug.contains(&hex[..16]) || debug.contains(list)
}

#[test]
fn debug_output_shows_no_secrets() {
    let seed = [0x5au8; 32];
    let master = MasterSecret::from_seed(seed);
    let master_debug = format!("{master:?}");
    assert!(!leaks(&master_debug, &seed), "{master_debug}");
    let kgc = Kgc::new(master);
    let kgc_debug = format!("{kgc:?}");
    assert!(!leaks(&kgc_debug, &seed), "{kgc_debug}");

    let alice = UserIdentity::from_seed([0x3cu8; 32]).unwrap();
    let identity_debug = format!("{alice:?}");
    assert!(!leaks(&identity_debug, &[0x3cu8; 32]), "{identity_debug}");

    let secret = kgc.extract(alice.pseudonym());
    let secret_bytes = secret.to_bytes();
    let secret_debug = format!("{secret:?}");
    assert!(!leaks(&secret_debug, &secret_bytes[16..]), "{secret_debug}");

    let key = secret.agree();
    let key_bytes = key.to_bytes();
    for debug in [format!("{key:?}"), format!("{:#?}", key)] {
        assert!(!leaks(&debug, &key_bytes[..]), "{debug}");
    }

    let mut registry = Registry::new(kgc.server());
    registry
        .insert(RegistryEntry::new(&alice.public_key(), NOW, key.clone()))
        .unwrap();
    let entry_debug = format!(
        "{:?} {:?}",
        registry,
        registry.get(alice.pseudonym()).unwrap()
    );
    assert!(!leaks(&entry_debug, &key_bytes[..]), "{entry_debug}");

    let descriptor = kgc.descriptor([1; 32], NOW);
    let (pending, request) = alice.register(&descriptor, NOW, &mut rng(1)).unwrap();
    let pending_debug = format!("{pending:?} {request:?}");
    assert!(!leaks(&pending_debug, &seed) && !leaks(&pending_debug, &[0x3cu8; 32]));
    assert!(!pending_debug.contains("ephemeral"), "{pending_debug}");

    // And the pseudonyms, which are not secret, do show, so the output is useful.
    assert!(secret_debug.contains(&alice.pseudonym().to_string()));
}

// ---------------------------------------------------------------- decoders on garbage

#[test]
fn decoders_never_panic_on_garbage() {
    use rand::RngCore;
    let mut r = rng(77);
    let (a, _) = servers();
    let descriptor = a.descriptor([1; 32], NOW).to_bytes();
    for round in 0..200 {
        let len = (r.next_u32() % 400) as usize;
        let mut junk = vec![0u8; len];
        r.fill_bytes(&mut junk);
        // Half the time keep a valid prefix, so decoders get past their magic checks.
        if round % 2 == 0 {
            let keep = len.min(descriptor.len()).min((r.next_u32() % 64) as usize);
            junk[..keep].copy_from_slice(&descriptor[..keep]);
        }
        let _ = SignedDescriptor::from_bytes(&junk);
        let _ = UserSecretKey::from_bytes(&junk);
        let _ = RegistrationRequest::from_bytes(&junk);
        let _ = RegistrationResponse::from_bytes(&junk);
        let _ = Registry::from_bytes(&junk);
        let _ = RegistryEntry::from_bytes(a.server(), &junk);
        if let Ok(envelope) = Envelope::from_bytes(&junk) {
            assert!(link()
                .1
                .open(1, Direction::UserToServer, &envelope)
                .is_err());
        }
    }
    // Right lengths, random contents.
    for _ in 0..50 {
        let mut d = [0u8; DESCRIPTOR_BYTES];
        r.fill_bytes(&mut d);
        d[..8].copy_from_slice(&descriptor[..8]);
        assert!(SignedDescriptor::from_bytes(&d).is_err());
        let mut k = [0u8; USER_SECRET_KEY_BYTES];
        r.fill_bytes(&mut k);
        let _ = UserSecretKey::from_bytes(&k);
        let mut e = [0u8; ENTRY_BYTES];
        r.fill_bytes(&mut e);
        assert!(RegistryEntry::from_bytes(a.server(), &e).is_err());
    }
}

// ---------------------------------------------------------------- a whole round

/// Two users register at three servers, then run one round: each user seals one share per
/// server, each server finds the sender by tag, opens, and answers; each user opens the
/// answers. Envelopes for one server are useless at the others.
#[test]
fn three_servers_one_round() {
    let servers: Vec<Kgc> = (0..3u8)
        .map(|l| Kgc::new(MasterSecret::from_seed([40 + l; 32])))
        .collect();
    let mut registries: Vec<Registry> = servers.iter().map(|k| Registry::new(k.server())).collect();
    let users = [user(50), user(51)];
    // keys[u][l]: user u's cached long-term key with server l.
    let keys: Vec<Vec<LongTermKey>> = users
        .iter()
        .map(|who| {
            servers
                .iter()
                .zip(registries.iter_mut())
                .map(|(kgc, registry)| register(kgc, registry, who).unwrap().agree())
                .collect()
        })
        .collect();
    let round = 9;
    let mut r = rng(3);
    for (l, (kgc, registry)) in servers.iter().zip(&registries).enumerate() {
        let index = registry.tag_index(round, Direction::UserToServer);
        for (u, who) in users.iter().enumerate() {
            let share = [u as u8, l as u8, 0xee];
            let envelope = keys[u][l]
                .seal(round, Direction::UserToServer, &share, &mut r)
                .unwrap();
            let sender = index.lookup(&envelope.tag()).unwrap();
            assert_eq!(sender, who.pseudonym());
            let key = registry.long_term_key(sender).unwrap();
            assert_eq!(
                key.open(round, Direction::UserToServer, &envelope).unwrap(),
                share
            );
            let answer = key
                .seal(round, Direction::ServerToUser, &[l as u8], &mut r)
                .unwrap();
            assert_eq!(
                keys[u][l]
                    .open(round, Direction::ServerToUser, &answer)
                    .unwrap(),
                [l as u8]
            );
            // The same envelope means nothing to the other servers.
            for (m, other) in registries.iter().enumerate().filter(|(m, _)| *m != l) {
                let other_index = other.tag_index(round, Direction::UserToServer);
                assert_eq!(other_index.lookup(&envelope.tag()), None, "server {m}");
                let other_key = other.long_term_key(who.pseudonym()).unwrap();
                assert!(other_key
                    .open(round, Direction::UserToServer, &envelope)
                    .is_err());
            }
            assert_eq!(registry.server(), kgc.server());
        }
    }
}

// ---------------------------------------------------------------- epochs (rotation)

/// Server A's master secret again, and its epoch-1 secret.
fn a_epoch_one() -> (Kgc, Kgc) {
    let master = MasterSecret::from_seed([1; 32]);
    let secret = EpochSecret::from_seed(1, [21; 32]).unwrap();
    (Kgc::epoch_zero(&master), Kgc::for_epoch(&master, &secret))
}

#[test]
fn a_new_epoch_keeps_the_identity_and_changes_every_user_key() {
    let (zero, one) = a_epoch_one();
    assert_eq!((zero.epoch(), one.epoch()), (0, 1));
    // Same server pseudonym, same identity key (the clients' pin), same X25519 key.
    assert_eq!(zero.server(), one.server());
    let (d0, d1) = (
        zero.descriptor([9; 32], NOW),
        one.descriptor([9; 32], NOW + 60),
    );
    assert_eq!(d0.descriptor().identity_key, d1.descriptor().identity_key);
    assert_eq!(d0.descriptor().x25519_public, d1.descriptor().x25519_public);
    assert_ne!(d0.descriptor().master_public, d1.descriptor().master_public);
    // The epoch is in the signed bytes: version 1 (280 bytes) for 0, version 2 for 1.
    assert_eq!(d0.to_bytes().len(), DESCRIPTOR_BYTES);
    let bytes = d1.to_bytes();
    assert_eq!(bytes.len(), DESCRIPTOR_BYTES_EPOCH);
    let pin = *d0.descriptor().identity_key.as_bytes();
    let back = SignedDescriptor::from_bytes_pinned(&bytes, &pin).unwrap();
    assert_eq!(back.descriptor().epoch, 1);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 1;
        assert!(SignedDescriptor::from_bytes(&bad).is_err(), "flip at {i}");
    }
    // Another epoch number under the same signature does not verify.
    let mut renumbered = bytes.clone();
    renumbered[DESCRIPTOR_BYTES - 64 + 3] = 2;
    assert!(SignedDescriptor::from_bytes(&renumbered).is_err());
    // The user's pseudonym is its own (derived from its key): the same in every epoch;
    // its keys are not.
    let alice = user(30);
    assert_ne!(zero.agree(alice.pseudonym()), one.agree(alice.pseudonym()));
    assert_eq!(one.agree(alice.pseudonym()).epoch(), 1);
}

#[test]
fn registration_under_a_new_epoch_gives_a_key_of_that_epoch_only() {
    let (zero, one) = a_epoch_one();
    let alice = user(31);
    let d1 = one.descriptor([9; 32], NOW);
    let (pending, request) = alice.register(&d1, NOW, &mut rng(1)).unwrap();
    assert_eq!(request.as_bytes().len(), REQUEST_BYTES_EPOCH);
    assert_eq!(request.epoch(), 1);
    assert_eq!(pending.epoch(), 1);
    // The epoch-0 key centre refuses it by name, before decrypting anything.
    let mut registry0 = Registry::new(zero.server());
    assert!(matches!(
        zero.register(&mut registry0, &request, NOW, &mut rng(2)),
        Err(KgcError::WrongEpoch {
            expected: 0,
            got: 1
        })
    ));
    // Nobody can move a request to another epoch: the epoch is authenticated.
    let mut moved = request.as_bytes().to_vec();
    moved[19] = 2;
    let moved = RegistrationRequest::from_bytes(&moved).unwrap();
    let two = Kgc::for_epoch(
        &MasterSecret::from_seed([1; 32]),
        &EpochSecret::from_seed(2, [22; 32]).unwrap(),
    );
    let mut registry2 = Registry::new(two.server());
    assert!(two
        .register(&mut registry2, &moved, NOW, &mut rng(3))
        .is_err());
    // Version 2 naming epoch 0 has no meaning.
    let mut zeroed = request.as_bytes().to_vec();
    zeroed[16..20].copy_from_slice(&[0; 4]);
    assert!(RegistrationRequest::from_bytes(&zeroed).is_err());

    let mut registry1 = Registry::new(one.server());
    let registered = one
        .register(&mut registry1, &request, NOW, &mut rng(4))
        .unwrap();
    let key = pending
        .finish(&registered.response)
        .unwrap()
        .agree()
        .in_epoch(1);
    assert_eq!(key, *registry1.long_term_key(alice.pseudonym()).unwrap());

    // Its envelopes say epoch 1 and open only under epoch 1's key.
    let env = key
        .seal(5, Direction::UserToServer, b"share", &mut rng(5))
        .unwrap();
    assert_eq!(env.epoch(), 1);
    assert_eq!(env.as_bytes().len(), 5 + ENVELOPE_OVERHEAD_EPOCH);
    assert_eq!(env.share_len(), 5);
    let wire = Envelope::from_bytes(env.as_bytes()).unwrap();
    let index = registry1.tag_index(5, Direction::UserToServer);
    assert_eq!(index.lookup(&wire.tag()), Some(alice.pseudonym()));
    assert_eq!(
        registry1
            .long_term_key(alice.pseudonym())
            .unwrap()
            .open(5, Direction::UserToServer, &wire)
            .unwrap(),
        b"share"
    );
    let old = zero.agree(alice.pseudonym());
    assert!(old.open(5, Direction::UserToServer, &wire).is_err());
    // The same key bytes labelled epoch 0 do not open it either (version and epoch are
    // in the associated data), nor does the envelope relabelled as version 1.
    let relabelled = LongTermKey::from_bytes(alice.pseudonym(), one.server(), *key.to_bytes());
    assert!(relabelled.open(5, Direction::UserToServer, &wire).is_err());
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&env.as_bytes()[5..]);
    let v1 = Envelope::from_bytes(&v1).unwrap();
    assert!(relabelled.open(5, Direction::UserToServer, &v1).is_err());
    for i in 0..env.as_bytes().len() {
        let mut bad = env.as_bytes().to_vec();
        bad[i] ^= 1;
        if let Ok(bad) = Envelope::from_bytes(&bad) {
            assert!(
                key.open(5, Direction::UserToServer, &bad).is_err(),
                "flip at {i}"
            );
        }
    }
    // Epoch 0 still seals version 1, byte for byte as before epochs existed.
    assert_eq!(
        old.seal(5, Direction::UserToServer, b"share", &mut rng(5))
            .unwrap()
            .as_bytes()[0],
        1
    );
}

#[test]
fn epoch_secret_file_round_trips_and_refuses_bad_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e1.key");
    let secret = EpochSecret::generate(1, &mut rng(7)).unwrap();
    secret.save(&path).unwrap();
    assert!(secret.save(&path).is_err(), "never overwrites");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let master = MasterSecret::from_seed([1; 32]);
    let loaded = EpochSecret::load(&path).unwrap();
    assert_eq!(loaded.epoch(), 1);
    assert_eq!(
        Kgc::for_epoch(&master, &loaded).master_public_key(),
        Kgc::for_epoch(&master, &secret).master_public_key()
    );
    assert!(format!("{loaded:?}").starts_with("EpochSecret"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), EPOCH_FILE_BYTES);
    // A renumbered or corrupted file fails its checksum.
    for at in [11, 20, EPOCH_FILE_BYTES - 1] {
        let bad = dir.path().join(format!("bad{at}"));
        let mut b = bytes.clone();
        b[at] ^= 1;
        std::fs::write(&bad, &b).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(EpochSecret::load(&bad).is_err(), "flip at {at}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        EpochSecret::load(&path),
        Err(KgcError::InsecurePermissions { .. })
    ));
    assert!(EpochSecret::from_seed(0, [1; 32]).is_err());
}

use super::*;
use crate::exchange::clock;
use crate::mpc::Mesh;
use crate::testkit::mesh3;

fn effects(round: u64, fill: u8) -> RoundEffects {
    RoundEffects {
        round,
        store: Some(vec![fill; 12]),
        record: vec![fill],
        outputs: vec![fill; 2],
    }
}

struct Server {
    db: Arc<Db>,
    mesh: Mesh,
    _dir: tempfile::TempDir,
}

async fn servers() -> Vec<Server> {
    let meshes = mesh3([RoundStatus::default(); 3]).await;
    meshes
        .into_iter()
        .map(|mesh| {
            let dir = tempfile::tempdir().unwrap();
            let db = Arc::new(Db::open(&dir.path().join("x.redb")).unwrap());
            Server {
                db,
                mesh,
                _dir: dir,
            }
        })
        .collect()
}

/// Runs one vote at all three servers; `plan[i]` is (votes commit, transcript hash).
async fn vote(
    s: &mut Server,
    r: u64,
    (ok, h): (bool, u8),
    t: Duration,
) -> Result<Decision, CommitError> {
    let eff = ok.then(|| effects(r, h));
    vote_and_commit(&mut s.mesh.control, &s.db, r, eff, [h; 32], None, t).await
}

async fn round(servers: &mut [Server], r: u64, plan: [(bool, u8); 3]) -> Vec<Decision> {
    let t = Duration::from_secs(5);
    let [a, b, c] = servers else {
        panic!("three servers")
    };
    let (x, y, z) = tokio::join!(
        vote(a, r, plan[0], t),
        vote(b, r, plan[1], t),
        vote(c, r, plan[2], t)
    );
    vec![x.unwrap(), y.unwrap(), z.unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_commit_only_when_all_three_agree() {
    let mut s = servers().await;
    // Round 1: everyone commits with the same transcript.
    let d = round(&mut s, 1, [(true, 7), (true, 7), (true, 7)]).await;
    assert!(d.iter().all(|d| *d == Decision::Committed));
    for srv in &s {
        assert_eq!(srv.db.committed_round().unwrap(), Some(1));
        assert_eq!(srv.db.store().unwrap(), effects(1, 7).store);
    }
    // Round 2: server 2 failed its computation.
    let d = round(&mut s, 2, [(true, 8), (true, 8), (false, 8)]).await;
    assert!(d.iter().all(|d| matches!(d, Decision::Aborted(_))), "{d:?}");
    // Round 3: server 1 opened different values (a tampering server is detected).
    let d = round(&mut s, 3, [(true, 9), (true, 66), (true, 9)]).await;
    assert!(d.iter().all(|d| matches!(d, Decision::Aborted(_))), "{d:?}");
    for srv in &s {
        assert_eq!(srv.db.committed_round().unwrap(), Some(1));
        assert_eq!(srv.db.prepared_round().unwrap(), None);
        assert_eq!(srv.db.store().unwrap(), effects(1, 7).store);
    }
    // The clock on the same links: server 0 announces, 1 and 2 follow.
    let a = clock::announce(&s[0].mesh.control, 4, Duration::from_secs(2)).unwrap();
    for srv in s.iter_mut().skip(1) {
        let got = clock::await_announce(&mut srv.mesh.control, Some(3), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, a);
    }
    assert!(clock::announce(&s[1].mesh.control, 5, Duration::from_secs(1)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_vote_leaves_the_round_prepared() {
    let mut s = servers().await;
    let (first, rest) = s.split_at_mut(1);
    let srv = &mut first[0];
    // Peers never vote: undecided, still prepared, nothing committed.
    let err = vote_and_commit(
        &mut srv.mesh.control,
        &srv.db,
        1,
        Some(effects(1, 1)),
        [1; 32],
        None,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CommitError::Undecided { round: 1, .. }),
        "{err}"
    );
    assert_eq!(srv.db.prepared_round().unwrap(), Some(1));
    assert_eq!(srv.db.committed_round().unwrap(), None);
    let _ = rest;
}

fn st(committed: Option<u64>, prepared: Option<u64>) -> RoundStatus {
    RoundStatus {
        committed,
        prepared,
    }
}

#[test]
fn recovery_commits_iff_a_peer_committed() {
    // A peer committed round 5: we voted commit for it, so commit.
    assert_eq!(
        recovery(
            st(Some(4), Some(5)),
            [st(Some(5), None), st(Some(4), Some(5))]
        )
        .unwrap(),
        Recovery::Commit(5)
    );
    // Nobody committed 5: abort (nobody released outputs).
    assert_eq!(
        recovery(
            st(Some(4), Some(5)),
            [st(Some(4), Some(5)), st(Some(4), None)]
        )
        .unwrap(),
        Recovery::Abort(5)
    );
    assert_eq!(
        recovery(st(Some(4), None), [st(Some(4), None), st(Some(4), Some(5))]).unwrap(),
        Recovery::Nothing
    );
    // A peer is ahead of anything we know: refuse to guess.
    assert!(recovery(st(Some(3), None), [st(Some(5), None), st(Some(5), None)]).is_err());
    assert_eq!(
        recovery(st(None, None), [st(None, None), st(None, None)]).unwrap(),
        Recovery::Nothing
    );
}

#[test]
fn recover_applies_the_decision_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("x.redb")).unwrap();
    db.commit_round(&effects(1, 1)).unwrap();
    db.prepare(&effects(2, 2)).unwrap();
    let r = recover(&db, [st(Some(2), None), st(Some(1), Some(2))]).unwrap();
    assert_eq!(r, Recovery::Commit(2));
    assert_eq!(status(&db).unwrap(), st(Some(2), None));
    assert_eq!(db.store().unwrap(), effects(2, 2).store);

    db.prepare(&effects(3, 3)).unwrap();
    let r = recover(&db, [st(Some(2), Some(3)), st(Some(2), None)]).unwrap();
    assert_eq!(r, Recovery::Abort(3));
    assert_eq!(status(&db).unwrap(), st(Some(2), None));
    assert_eq!(db.store().unwrap(), effects(2, 2).store);
}

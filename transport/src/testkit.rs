//! Shared test fixtures: a development PKI and a three-party mesh over TLS on 127.0.0.1.

use crate::certs::{self, DevPki};
use crate::listener::Limits;
use crate::mpc::{establish, Mesh, MeshConfig};
use crate::tls::{self, Identity, Role};
use crate::wire::RoundStatus;
use acs_engine::channel::PartyId;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

pub fn pki() -> DevPki {
    certs::generate(&certs::deployment_roles(3, 1)).unwrap()
}

pub fn identity(pki: &DevPki, role: Role) -> Identity {
    let c = pki.leaf(role).unwrap();
    Identity::from_pem(&c.cert_pem, &c.key_pem).unwrap()
}

/// A signed descriptor for `identity` under a fresh random kgc master secret.
pub fn descriptor(identity: &Identity) -> Vec<u8> {
    let kgc = acs_kgc::Kgc::new(acs_kgc::MasterSecret::generate(&mut rand_core::OsRng));
    crate::mpc::descriptor_for(&kgc, identity)
}

pub fn mesh_config(
    pki: &DevPki,
    party: usize,
    next_addr: SocketAddr,
    status: RoundStatus,
) -> MeshConfig {
    let identity = identity(pki, Role::Exchange(party as u8));
    MeshConfig {
        party: PartyId::new(party).unwrap(),
        deployment: "test".into(),
        next_addr,
        descriptor: descriptor(&identity),
        identity,
        roots: tls::roots_from_pem(&pki.ca.cert_pem).unwrap(),
        establish_timeout: Duration::from_secs(10),
        limits: Limits::default(),
        status,
        config_digest: [0; 32],
    }
}

pub async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Three parties, connected, each having told the others `status[i]`.
pub async fn mesh3(status: [RoundStatus; 3]) -> [Mesh; 3] {
    let pki = pki();
    let (l0, a0) = bind().await;
    let (l1, a1) = bind().await;
    let (l2, a2) = bind().await;
    let c0 = mesh_config(&pki, 0, a1, status[0]);
    let c1 = mesh_config(&pki, 1, a2, status[1]);
    let c2 = mesh_config(&pki, 2, a0, status[2]);
    let (m0, m1, m2) = tokio::join!(establish(&c0, l0), establish(&c1, l1), establish(&c2, l2));
    [m0.unwrap(), m1.unwrap(), m2.unwrap()]
}

//! The secure two-party engine: additive secret sharing over Z_2^64 in fixed point, a dealer of
//! correlated randomness, a network layer that simulates LAN and WAN, and the protocol library.
//!
//! Layers: [`ring`] and [`fixed`] (local maths), [`correlation`] (what the parties ask the dealer
//! for), [`dealer`] (derives it from seeds), [`dealer_handle`] (a party's access to the dealer,
//! a thread or a process), [`dealer_wire`] (the dealer's frames on a link), [`net`] (moves bytes,
//! counts rounds and time), [`party`] (one party's context), [`protocols`] (one file per
//! protocol), [`seeded_mask`] (a weight mask share kept as a key), [`sim`] (runs both parties
//! as threads), [`remote`] (the dealer's side of a session with two party processes).

pub mod correlation;
pub mod dcf;
pub mod dealer;
pub mod dealer_handle;
pub mod dealer_wire;
pub mod error;
pub mod fixed;
pub mod matmul;
pub mod net;
pub mod party;
pub mod protocols;
pub mod remote;
pub mod ring;
pub mod seeded_mask;
pub mod sim;

pub use error::MpcError;
pub use fixed::FixedPoint;
pub use net::{Counters, LinkModel};
pub use party::{ApproxConfig, Party, CLIENT, SERVER};
pub use ring::RingTensor;
pub use sim::{make_parties, run_two_party, EngineConfig, TransportKind};

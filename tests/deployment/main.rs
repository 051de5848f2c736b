//! The deployment as an operator runs it: `post keygen`, `post dealer`, `post serve` and `post
//! verify --connect` as real processes on 127.0.0.1, and attackers against them: a relay that
//! flips bits or records every link, untrusted keys, idle and hostile connections, hostile steps
//! and dealer requests from a client that holds a trusted key.

#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;

mod hostile;
mod links;
mod startup;

//! The relay's toolbox, apart from the server: an OTLP client ([`client`]), the load generator
//! ([`load`]), the demo ([`demo`]) and the synthetic traffic they send ([`traffic`]). The
//! binary's `load` and `demo` subcommands, the tests and the benches use them; the server's
//! modules never do.

pub mod client;
pub mod demo;
pub mod load;
pub mod traffic;

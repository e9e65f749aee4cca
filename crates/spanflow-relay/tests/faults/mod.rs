//! The fault suite's harness: the sink process, the relay process, the load client, the
//! books check and the process plumbing they share.

pub(crate) mod books;
pub(crate) mod client;
pub(crate) mod proc;
pub(crate) mod relay;
pub(crate) mod sink;

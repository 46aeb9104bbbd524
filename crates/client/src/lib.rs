//! Talking to one Redis node: addresses, credentials, an async pipelined
//! connection, and the classification of error replies into retry decisions.
//!
//! Both sides use it: the replica link to a source node and the writer's
//! connections to target nodes. Errors name the side and the flag to check.

// Tests may unwrap, panic and index (the workspace denies it in library code).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod connection;
mod credentials;
mod endpoint;
mod error;
mod reply;
mod seeds;
mod server_version;
pub mod throttle;
mod tls;

pub use connection::{
    info_field, keyspace, parse_info, ConnectOptions, Connection, FrameReader, FrameWriter,
    ScanPage,
};
pub use credentials::{read_secret_file, Credentials, SecretFileError};
pub use endpoint::{Endpoint, EndpointError};
pub use error::{ClientError, Side};
pub use reply::{Retry, ServerError};
pub use seeds::Seeds;
pub use server_version::{Family, ServerVersion};
pub use tls::{TlsFiles, TlsProblem, TlsSettings, TlsSetupError};

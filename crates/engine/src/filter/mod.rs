//! What is kept and what is dropped between the sources and the writer.
//! Pure: no I/O, so every rule is tested next to its code.

mod prefixes;

pub use prefixes::KeyPrefixes;

//! The system's protoc, where `protobuf-src` would build its own.

use std::path::PathBuf;

/// The protobuf compiler: `protoc` on PATH (Debian's protobuf-compiler).
pub fn protoc() -> PathBuf {
    PathBuf::from("protoc")
}

/// The well-known `.proto` files that come with it.
pub fn include() -> PathBuf {
    PathBuf::from("/usr/include")
}

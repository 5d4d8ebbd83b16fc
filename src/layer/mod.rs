//! What a vfile reads when it is not the blob's own bytes: a layer
//! decompressed, or the whole image flattened into one tar.
//!
//! - `image`: `Source`, the blob, decompressed layer or flattened image
//!   behind one vfile;
//! - `decompress`: which compression a layer uses, and its decoder;
//! - `gzran`: gzip checkpoints (the SOCI / erofs-utils zinfo) and
//!   inflating one span from the middle of a stream;
//! - `seekable`: a compressed layer's uncompressed bytes with random
//!   access, through those checkpoints;
//! - `flatten`: the layers merged into one tar of the root filesystem;
//! - `stream`: a derived byte stream produced on a worker thread and read
//!   as a file.

pub mod decompress;
pub mod flatten;
pub mod gzran;
pub mod image;
pub mod seekable;
pub mod stream;

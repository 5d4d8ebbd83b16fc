//! What a vfile reads when it is not the blob's own bytes: a layer
//! decompressed, or the whole image flattened into one tar.
//!
//! - `image`: `Source`, the blob, decompressed layer or flattened image
//!   behind one vfile;
//! - `decompress`: which compression a layer uses, and its decoder;
//! - `flatten`: the layers merged into one tar of the root filesystem;
//! - `stream`: a derived byte stream produced on a worker thread and read
//!   as a file.

pub mod decompress;
pub mod flatten;
pub mod image;
pub mod stream;

//! Local outputs of a [`Recording`](crate::profile::Recording): a gzipped pprof file, Brendan
//! Gregg's folded stacks, a flame graph SVG and a top-functions table.
//!
//! Frames are named the same way everywhere (see [`folded`]): the function name for symbolized
//! frames, `file+0xOFFSET` for unsymbolized ones, and a `_[k]` suffix on kernel frames.

mod file;
mod flamegraph;
mod folded;
mod top;

use std::io;
use std::path::PathBuf;

pub use file::{write_atomic, write_pprof};
pub use flamegraph::{empty_flamegraph_svg, flamegraph_svg};
pub use folded::folded;
pub use top::{render_top, top, TopRow};

/// Why an output could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output path names no file (e.g. `/` or `..`).
    #[error("{path} is not a file path; give a path such as ./profile.pb.gz")]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The temporary file next to the output could not be created.
    #[error("cannot create a temporary file in {dir}: {source}; check that the directory exists and is writable")]
    CreateTemp {
        /// The output's directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing or syncing the temporary file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Moving the finished temporary file over the output failed.
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The output path.
        to: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A flame graph of a recording without samples was asked for.
    #[error(
        "no samples to draw a flame graph from; record longer or check that the target is running"
    )]
    NoSamples,
    /// inferno could not render the flame graph.
    #[error("cannot render the flame graph: {0}")]
    FlameGraph(#[source] io::Error),
}

/// Result of an output operation.
pub type Result<T, E = OutputError> = std::result::Result<T, E>;

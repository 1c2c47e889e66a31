//! Turns addresses into function names, source files and lines.
//!
//! Sources:
//! - Go binaries through their `.gopclntab` ([`gopclntab`]), which survives stripping;
//! - native ELF files through `.symtab`/`.dynsym` (with Rust and C++ demangling) ([`elf`]);
//! - the Linux kernel through `/proc/kallsyms` ([`kernel`]).
//!
//! A [`Symbolizer`] owns the parsed files, cached by file identity, and bounds their DWARF.
//! [`Symbolizer::symbolize`] answers for a [`Source`]: a [`Process`] (its mappings and files
//! pinned at first sight, and the vDSO) or the kernel, given absolute addresses ([`Input`]).
//!
//! [`unwind`] builds x86_64 unwind tables (CFA and rbp rules per address) from the same files.
//!
//! A miss is a normal outcome ([`Symbolized::Unknown`] with a [`Reason`]), never an error: one bad
//! address never fails a batch. Errors are reserved for files that cannot be opened or parsed at
//! all. Binaries read from containers are untrusted input: every parser is bounded and never panics.

pub mod elf;
pub mod gopclntab;
pub mod kernel;
pub mod process;
pub mod unwind;

mod cache;
mod parallel;
mod source;

pub use cache::{own_vdso_image, FileIdentity, MemoryUse, Symbolizer};
pub use elf::{separate_debug_file, ElfResolver, DEFAULT_DEBUG_ROOT};
pub use kernel::KernelResolver;
pub use process::Process;
pub use source::{lookup_addresses, Input, Source};

/// One source-level frame. For an address inside inlined code there are several frames for
/// one address: the innermost (inlined) first, the physical function last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled function name (Go names are already readable, e.g. `main.(*T).Run`).
    pub function: String,
    /// Source file, when the source knows it.
    pub file: Option<String>,
    /// Source line (1-based), when known.
    pub line: Option<u32>,
    /// True for a frame that was inlined into the next frame of the same address.
    pub inlined: bool,
    /// Line where the function starts (its `func` keyword in Go), when the source records it:
    /// Go 1.20+ tables, for physical and inlined functions alike.
    pub start_line: Option<u32>,
}

/// The outcome for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbolized {
    /// Frames for the address, innermost first, the physical function last; never empty.
    Sym(Vec<Frame>),
    /// Nothing known about the address, and why.
    Unknown(Reason),
}

impl Symbolized {
    /// The frames, or an empty slice when unknown.
    pub fn frames(&self) -> &[Frame] {
        match self {
            Symbolized::Sym(frames) => frames,
            Symbolized::Unknown(_) => &[],
        }
    }
}

/// Why an address could not be symbolized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The file has no symbol source at all (stripped native binary, no pclntab).
    NoSymbols,
    /// The address falls outside every known function.
    NoFunction,
    /// The address is not in any mapping (process) or not in a loadable segment (file).
    Unmapped,
    /// The symbol source exists but is damaged at this address.
    Malformed,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::NoSymbols => "no symbols",
            Reason::NoFunction => "no function at address",
            Reason::Unmapped => "address not mapped",
            Reason::Malformed => "malformed symbol table",
        })
    }
}

/// Errors opening or parsing a symbol source as a whole.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable ELF file: {reason}")]
    BadElf { path: String, reason: String },
    #[error("bad Go pclntab in {path}: {reason}")]
    BadGoTable { path: String, reason: String },
    #[error("bad kallsyms: {0}")]
    BadKallsyms(String),
    #[error("bad /proc maps line {line}: {reason}")]
    BadMaps { line: usize, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

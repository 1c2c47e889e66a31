//! Host-side stand-in for the eBPF crate: `agent` has a build-dependency on this package so that
//! cargo rebuilds it when the kernel program changes. The programs live in `main.rs` and are
//! built for `bpfel-unknown-none` by `agent/build.rs`.
#![no_std]

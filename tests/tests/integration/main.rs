//! Bellows' integration tests: one binary, loading the real programs into this machine's kernel.

mod kube;
mod push;
mod record;
mod sampler;
mod symbolize;

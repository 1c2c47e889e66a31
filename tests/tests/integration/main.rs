//! Bellows' integration tests: one binary, loading the real programs into this machine's kernel.

mod deploy;
mod hosts;
mod kube;
mod push;
mod record;
mod run;
mod sampler;
mod symbolize;
mod unwinding;
